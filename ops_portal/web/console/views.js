// Views: organisation/device tree, device and channel details, live wall.
import { get } from "./api.js";
import { channelsOf, loadTree } from "./data.js";
import { clear, dot, fmtClock, fmtTime, h, message, pageStyle, toast } from "./dom.js";
import { extend, serverText, t } from "./i18n.js";
import { LivePlayer } from "./player.js";
import { canPtz, ptzPanel } from "./ptz.js";
import { loadRegions, regionEl } from "./regions.js";
import { can } from "./session.js";
import { openRepairDialog } from "./tickets.js";

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

// ------------------------------------------------------------------ tree component
export function treePanel(nodes, { onChannel, onDevice, onOrg, selected } = {}) {
  const filter = h("input", { type: "search", placeholder: t("tree.filter"), "aria-label": t("tree.filter"), class: "tree-filter", id: "tree-filter" });
  const onlyOnline = h("input", { type: "checkbox", id: "tree-online" });
  const list = h("div", { class: "tree", role: "tree" });
  const expanded = new Set();
  nodes.forEach((n) => { expanded.add(n.key); n.children.forEach((c) => c.type === "org" && expanded.add(c.key)); });
  if (nodes.length === 1) nodes[0].children.forEach((c) => expanded.add(c.key));

  function matches(n, q, on) {
    const self = (!q || n.name.toLowerCase().includes(q) || String(n.id ?? "").includes(q)) && (!on || n.type !== "channel" || n.online);
    if (n.type === "channel") return self;
    return (q && self && !on) || n.children.some((c) => matches(c, q, on));
  }

  function row(n, depth, q, on) {
    if ((q || on) && !matches(n, q, on)) return null;
    const open = expanded.has(n.key) || !!q;
    const hasKids = n.children.length > 0;
    const caret = h("span", { class: "caret" + (hasKids ? (open ? " open" : "") : " leaf") });
    const label = h("span", { class: "tree-name" }, n.name);
    const counts = n.type !== "channel" && n.total !== undefined
      ? h("span", { class: "tree-count" }, `${n.up}/${n.total}`) : null;
    const attrs = { class: "tree-row " + n.type + (selected && selected === n.key ? " selected" : ""), role: "treeitem",
                    title: n.id ?? "" };
    if (n.type === "channel") attrs["data-channel"] = n.id;
    if (n.type === "device") attrs["data-device"] = n.id;
    if (n.type === "org" && n.id != null) attrs["data-org"] = n.id;
    const r = h("div", attrs, caret, n.type === "org" ? h("span", { class: "folder" }) : dot(n.online), label, counts);
    r.style.paddingLeft = 8 + depth * 16 + "px";
    caret.addEventListener("click", (e) => {
      e.stopPropagation();
      if (expanded.has(n.key)) expanded.delete(n.key); else expanded.add(n.key);
      draw();
    });
    r.addEventListener("click", () => {
      if (n.type === "channel" && onChannel) onChannel(n);
      else if (n.type === "device" && onDevice) onDevice(n);
      else if (n.type === "org" && onOrg) onOrg(n);
      else { if (expanded.has(n.key)) expanded.delete(n.key); else expanded.add(n.key); draw(); }
    });
    const kids = open && hasKids ? n.children.map((c) => row(c, depth + 1, q, on)) : [];
    return [r, ...kids];
  }

  function draw() {
    const q = filter.value.trim().toLowerCase();
    const out = nodes.map((n) => row(n, 0, q, onlyOnline.checked)).flat(Infinity).filter(Boolean);
    clear(list).append(...(out.length ? out : [h("div", { class: "empty" }, t("tree.empty"))]));
  }
  filter.addEventListener("input", draw);
  onlyOnline.addEventListener("change", draw);
  draw();
  const panel = h("aside", { class: "tree-panel card" },
    h("div", { class: "tree-tools" }, filter, h("label", { class: "check" }, onlyOnline, t("tree.only_online"))), list);
  panel.redraw = draw;
  return panel;
}

// ------------------------------------------------------------------ tree page
export async function treeView(root) {
  const nodes = await loadTree();
  const detail = h("section", { class: "detail card" }, h("p", { class: "muted" }, t("tree.select_hint")));
  function showOrg(n) {
    const chans = channelsOf([n]);
    clear(detail).append(h("h2", null, n.name),
      h("p", null, `${t("dash.channels")}: ${n.up} / ${n.total}`),
      chanTable(chans));
  }
  const panel = treePanel(nodes, {
    onChannel: (n) => { location.hash = `#/channel/${encodeURIComponent(n.id)}` + (n.deviceId ? `?device=${encodeURIComponent(n.deviceId)}` : ""); },
    onDevice: (n) => { location.hash = `#/device/${encodeURIComponent(n.id)}`; },
    onOrg: showOrg,
  });
  root.append(pageHead(t("tree.title")), h("div", { class: "split" }, panel, detail));
  if (nodes.length === 1) showOrg(nodes[0]);
}

function chanTable(chans) {
  if (!chans.length) return h("p", { class: "muted" }, t("tree.empty"));
  return h("table", { class: "table" },
    h("thead", null, h("tr", null, h("th", null, t("field.status")), h("th", null, t("field.name")),
      h("th", null, t("field.channel_id")), h("th", null, t("common.actions")))),
    h("tbody", null, chans.map((c) => h("tr", null,
      h("td", null, dot(c.online), " ", c.online ? t("common.online") : t("common.offline")),
      h("td", null, c.name), h("td", { class: "mono" }, c.id),
      h("td", null,
        can("live.view") ? h("a", { href: `#/live?channel=${encodeURIComponent(c.id)}` +
          (c.deviceId ? `&device=${encodeURIComponent(c.deviceId)}` : ""), class: "btn small" }, t("tree.play")) : null,
        " ",
        h("a", { href: `#/channel/${encodeURIComponent(c.id)}${c.deviceId ? "?device=" + encodeURIComponent(c.deviceId) : ""}`,
                 class: "btn small ghost" }, t("tree.detail")))))));
}

// ------------------------------------------------------------------ device and channel details
function facts(obj, keys) {
  return h("dl", { class: "facts" }, keys.map((k) => {
    let v = obj[k];
    if (k === "online") v = obj.online ? t("common.online") : t("common.offline");
    else if (/_at$|last_seen/.test(k)) v = fmtTime(v);
    else if (k === "civil_code" && v) v = regionEl(v); // in words, with the code (issue 18)
    return [h("dt", null, t("field." + (k === "online" ? "status" : k))), h("dd", null, v ?? "—")];
  }));
}

// Online/offline bar for the last `hours`: green where online, red where offline, grey before anything known.
export function timeline(events, { hours = 24, now = Date.now() } = {}) {
  const start = now - hours * 3600e3;
  const sorted = [...events].sort((a, b) => new Date(a.at) - new Date(b.at));
  const bar = h("div", { class: "timeline", role: "img" });
  let state = null, from = start;
  for (const e of sorted) {
    const at = new Date(e.at).getTime();
    if (at <= start) { state = e.online; continue; }
    seg(from, Math.min(at, now), state);
    state = e.online;
    from = at;
  }
  seg(from, now, state);
  function seg(a, b, on) {
    if (b <= a) return;
    const s = h("div", { class: "seg " + (on === null ? "unknown" : on ? "on" : "off"),
                         title: `${fmtTime(a)} – ${fmtTime(b)}` });
    s.style.left = ((a - start) / (now - start)) * 100 + "%";
    s.style.width = ((b - a) / (now - start)) * 100 + "%";
    bar.append(s);
  }
  const ticks = h("div", { class: "timeline-ticks" },
    [0, 6, 12, 18, 24].map((hh) => h("span", null, fmtClock(start + hh * 3600e3 * (hours / 24)))));
  return h("div", { class: "timeline-wrap" }, bar, ticks);
}

function presenceTable(events) {
  if (!events.length) return h("p", { class: "muted" }, t("dev.no_presence"));
  return h("table", { class: "table compact", id: "presence-table" },
    h("thead", null, h("tr", null, h("th", null, t("field.time")), h("th", null, t("field.subject")),
      h("th", null, t("field.status")), h("th", null, t("field.reason")))),
    h("tbody", null, events.map((e) => h("tr", null,
      h("td", null, fmtTime(e.at)), h("td", { class: "mono" }, e.channel_id || e.subject),
      h("td", null, dot(e.online), " ", e.online ? t("common.online") : t("common.offline")),
      h("td", null, serverText(e.reason || "") + (e.detail ? " · " + e.detail : ""))))));
}

export async function deviceView(root, route) {
  const id = route.args[0];
  const [dev, chans, pres] = await Promise.all([
    get(`/api/devices/${encodeURIComponent(id)}`),
    get(`/api/devices/${encodeURIComponent(id)}/channels`),
    get(`/api/devices/${encodeURIComponent(id)}/presence`, { limit: 500 }),
  ]);
  const own = pres.items.filter((e) => !e.channel_id);
  root.append(
    pageHead(`${t("dev.title")}: ${dev.name || dev.device_id}`, h("a", { href: "#/tree", class: "btn ghost" }, "←")),
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", null, dev.name || dev.device_id), facts(dev,
        ["device_id", "online", "manufacturer", "model", "firmware", "device_type", "remote_addr", "transport",
         "registered_at", "last_seen", "keepalive_interval", "channel_count", "catalog_state", "catalog_synced_at"])),
      h("section", { class: "card" }, h("h2", null, t("dev.timeline")), timeline(own.length ? own : pres.items),
        h("h2", null, t("dev.channels")),
        chanTable(chans.items.map((c) => ({ id: c.channel_id, name: c.name || c.channel_id, online: c.online,
                                            deviceId: id }))))),
    h("section", { class: "card" }, h("h2", null, t("dev.presence")), presenceTable(pres.items)));
}

export async function channelView(root, route) {
  const id = route.args[0];
  let deviceId = route.params.get("device");
  let ch = null;
  if (deviceId) {
    ch = (await get(`/api/devices/${encodeURIComponent(deviceId)}/channels`)).items.find((c) => c.channel_id === id);
  } else {
    try {
      const r = await get("/api/channels", { q: id, limit: 10 });
      ch = (r.items || []).find((c) => c.channel_id === id);
      deviceId = ch && ch.device_id;
    } catch (_) { /* no channel list route */ }
  }
  if (!ch) { root.append(message(t("common.unavailable"), "error")); return; }
  await loadRegions();
  let pres = { items: [] };
  if (deviceId) {
    try { pres = await get(`/api/devices/${encodeURIComponent(deviceId)}/presence`, { limit: 500 }); } catch (_) { /* none */ }
  }
  const own = pres.items.filter((e) => e.channel_id === id);
  const video = h("video", { muted: true, autoplay: true, playsinline: true, class: "detail-video" });
  video.muted = true;
  const status = h("div", { class: "pane-status" });
  const player = new LivePlayer(video, (_, text) => { status.textContent = text; });
  const play = can("live.view") ? h("button", { type: "button", class: "primary", onclick: () => {
    player.closed = false;
    player.play({ id, deviceId }).catch((err) => { status.textContent = err.message; });
  } }, t("tree.play")) : null;
  // 报修: a fault ticket for this channel (issue 18), the channel preset
  const repair = can("ticket.write") && deviceId ? h("button", { type: "button", id: "ch-repair", onclick: () => {
    openRepairDialog({ device_id: deviceId, channel_id: id, name: ch.name || id }).catch(() => {});
  } }, t("tk.act.report")) : null;
  root.append(
    pageHead(`${t("ch.title")}: ${ch.name || id}`,
      deviceId ? h("a", { href: `#/device/${encodeURIComponent(deviceId)}`, class: "btn ghost" }, t("dev.title")) : null),
    h("div", { class: "grid2" },
      h("section", { class: "card" }, h("h2", null, ch.name || id), facts({ ...ch, device_id: deviceId },
        ["channel_id", "device_id", "online", "manufacturer", "model", "address", "civil_code", "longitude", "latitude",
         "ptz_type"])),
      h("section", { class: "card" }, h("div", { class: "pane solo" }, video, status), h("div", { class: "tools" }, play, repair),
        h("h2", null, t("dev.timeline")), timeline(own))),
    h("section", { class: "card" }, h("h2", null, t("dev.presence")), presenceTable(own)));
  return () => player.stop();
}

// ------------------------------------------------------------------ live wall
extend({
  "wall.snapshot": "截图",
  "wall.snap_short": "截图",
  "wall.muted_short": "静音",
  "wall.sound_short": "有声",
  "wall.no_picture": "还没有画面，无法截图",
  "wall.unmute": "打开声音",
  "wall.mute": "关闭声音",
  "wall.retrying": "重试中（第 {n} 次，{s} 秒后）",
  "wall.offline": "设备不在线",
  "wall.capacity": "本节点的水印编码器已全部占用，稍后自动重试",
  "wall.unavailable": "视频服务暂不可用",
  "wall.denied": "无权观看该通道",
  "wall.not_found": "通道不存在",
}, {
  "wall.snapshot": "Snapshot",
  "wall.snap_short": "Snap",
  "wall.muted_short": "Muted",
  "wall.sound_short": "Sound",
  "wall.no_picture": "No picture yet to take a snapshot of",
  "wall.unmute": "Turn the sound on",
  "wall.mute": "Turn the sound off",
  "wall.retrying": "Retrying (attempt {n}, in {s} s)",
  "wall.offline": "The device is offline",
  "wall.capacity": "All watermark encoders of this node are busy; retrying automatically",
  "wall.unavailable": "The video service is unavailable for now",
  "wall.denied": "Not allowed to watch this channel",
  "wall.not_found": "No such channel",
});

// The wall fills the height left under the page head (set by fitWall); panes then take their share of it. On
// narrow screens (the tree stacked above) the panes keep 16:9 and the page scrolls.
const wallStyle = pageStyle(`
.wall.n16 { grid-template-columns: repeat(4, minmax(0, 1fr)); }
.wall .pane-bar { opacity: 1; background: none; gap: 6px; }
.wall .pane-title { background: rgba(0, 0, 0, .55); padding: 1px 6px; border-radius: 3px; min-width: 0;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.wall .pane-title:empty { display: none; }
.wall .pane-buttons { display: inline-flex; align-items: center; gap: 2px; margin-left: auto; opacity: 0;
  transition: opacity .15s; background: rgba(0, 0, 0, .45); border-radius: 4px; }
.wall .pane:hover .pane-buttons, .wall .pane.selected .pane-buttons, .wall .pane:focus-within .pane-buttons,
.wall .pane:fullscreen .pane-buttons { opacity: 1; }
.wall .pane-buttons .pane-close { order: 9; }
.wall .pane-buttons button.icon { min-width: 26px; font-size: 12px; }
.wall .pane-buttons button.snapshot, .wall .pane-buttons button.audio { border: 1px solid rgba(255, 255, 255, .4);
  border-radius: 4px; padding: 1px 5px; }
.wall .pane-buttons button.audio.on { color: #7ee0a1; }
.wall .pane-buttons button { white-space: nowrap; flex: none; }
.wall.n16 .pane-status, .wall.n9 .pane-status { font-size: 11px; }
/* a phone's 9 or 16 small panes: only the close button (1 or 4 panes have room for the tools) */
@media (max-width: 600px) {
  .wall.n9 .pane-buttons button:not(.pane-close), .wall.n16 .pane-buttons button:not(.pane-close) { display: none; }
}
@media (min-width: 901px) {
  .wall.fill { align-content: stretch; }
  .wall.fill .pane { aspect-ratio: auto; min-height: 0; }
  .wall.fill.n1 { grid-template-rows: minmax(0, 1fr); }
  .wall.fill.n4 { grid-template-rows: repeat(2, minmax(0, 1fr)); }
  .wall.fill.n9 { grid-template-rows: repeat(3, minmax(0, 1fr)); }
  .wall.fill.n16 { grid-template-rows: repeat(4, minmax(0, 1fr)); }
  .split.live .tree-panel { max-height: var(--wall-h, calc(100vh - 140px)); }
  /* a long menu (an administrator's) scrolls in its own column instead of making the page scroll */
  .layout:has(.split.live) .sidenav { max-height: calc(100vh - 52px); overflow-y: auto; }
}
`);

const LAYOUTS = [1, 4, 9, 16];
const LAYOUT_KEY = "gbops.layout";
const RETRY_MAX_S = 30;

// "20261207-153000" in Beijing time, for file names.
function beijingStamp(at = new Date()) {
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23" }).formatToParts(at).map((x) => [x.type, x.value]));
  return `${p.year}${p.month}${p.day}-${p.hour}${p.minute}${p.second}`;
}

// A refused or failed live request in words (no server advice the wall cannot act on, no raw codes).
function refusalText(err) {
  const code = err && err.code;
  if (code === "watermark_capacity") return t("wall.capacity");
  if (code === "device_offline") return t("wall.offline");
  if (err && err.status === 403) return t("wall.denied");
  if (err && err.status === 404) return t("wall.not_found");
  if (err && (err.status === 0 || err.status >= 500) && !err.message) return t("wall.unavailable");
  return (err && err.message) || t("wall.unavailable");
}

// Whether a failed pane tries again: not when the channel is gone or not allowed, nor without the FLV player.
function retryable(err) {
  if (err && [400, 401, 403, 404, 422].includes(err.status)) return false;
  return !(err && err.message === t("live.flv_missing"));
}

export async function liveView(root, route) {
  wallStyle();
  const nodes = await loadTree();
  const panes = [];
  let layout = Number(localStorage.getItem(LAYOUT_KEY) || sessionStorage.getItem(LAYOUT_KEY)) || 4;
  if (!LAYOUTS.includes(layout)) layout = 4;
  let selected = 0;
  let left = false;
  const grid = h("div", { class: "wall fill", id: "wall" });
  const transport = h("select", { id: "live-transport" },
    h("option", { value: "udp" }, "UDP"), h("option", { value: "tcp-passive" }, "TCP 被动 / passive"),
    h("option", { value: "tcp-active" }, "TCP 主动 / active"));
  const playerSel = h("select", { id: "live-player" },
    h("option", { value: "auto" }, t("live.auto")), h("option", { value: "whep" }, "WebRTC (WHEP)"),
    h("option", { value: "flv" }, "HTTP-FLV"));
  const layoutBtns = LAYOUTS.map((n) => h("button", { type: "button", class: "seg-btn", dataset: { layout: n },
    "aria-pressed": "false", onclick: () => setLayout(n) }, String(n)));

  function makePane(i) {
    const video = h("video", { muted: true, autoplay: true, playsinline: true });
    video.muted = true;
    const title = h("span", { class: "pane-title" }, "");
    const status = h("span", { class: "pane-status", role: "status" }, i === 0 ? t("live.pick") : "");
    const icon = (cls, label, onclick, ...kids) => h("button", { type: "button", class: "icon " + cls, title: label,
      "aria-label": label, onclick: (e) => { e.stopPropagation(); onclick(); } }, ...kids);
    // the close button first in the document (tests find it there), shown last (CSS order)
    const close = icon("pane-close", t("live.close"), () => stopPane(pane), "✕");
    const full = icon("pane-full", t("live.fullscreen"), () => el.requestFullscreen && el.requestFullscreen(),
                      h("span", { class: "fs" }));
    const snap = icon("snapshot", t("wall.snapshot"), () => snapshot(pane), t("wall.snap_short"));
    const audio = icon("audio", t("wall.unmute"), () => setMuted(pane, !pane.video.muted),
                       t("wall.muted_short"));
    audio.setAttribute("aria-pressed", "false");
    // PTZ: a pad over the picture, opened with the pane's 云台 button; the arrow keys while the pane is focused
    const ptz = canPtz() ? ptzPanel(() => pane.channel) : null;
    const ptzBtn = ptz ? h("button", { type: "button", class: "icon ptz-toggle", title: t("ptz.title"),
                                       "aria-label": t("ptz.title"), onclick: (e) => {
      e.stopPropagation();
      if (!pane.channel) return;
      if (ptz.open) ptz.hide(); else ptz.show();
    } }, t("ptz.button")) : null;
    const el = h("div", { class: "pane", dataset: { pane: i }, tabindex: 0 }, video,
      h("div", { class: "pane-bar" }, title, h("span", { class: "pane-buttons" }, close, snap, audio, ptzBtn, full)),
      status, ptz ? ptz.el : null);
    const pane = { i, el, video, title, status, audio, player: null, channel: null, ptz, attempt: 0, token: 0,
                   retryTimer: null };
    el.addEventListener("click", () => { selected = pane.i; mark(); });
    if (ptz) {
      el.addEventListener("keydown", (e) => { if (e.target === el && ptz.key(e, true)) e.stopPropagation(); });
      el.addEventListener("keyup", (e) => { if (e.target === el) ptz.key(e, false); });
      el.addEventListener("blur", () => ptz.release());
    }
    return pane;
  }

  function setMuted(pane, muted) {
    pane.video.muted = muted;
    const label = muted ? t("wall.unmute") : t("wall.mute");
    pane.audio.textContent = muted ? t("wall.muted_short") : t("wall.sound_short");
    pane.audio.title = label;
    pane.audio.setAttribute("aria-label", label);
    pane.audio.setAttribute("aria-pressed", String(!muted));
    pane.audio.classList.toggle("on", !muted);
  }

  // The current picture as a PNG named after the channel and the Beijing time.
  function snapshot(pane) {
    const v = pane.video;
    if (!pane.channel || !v.videoWidth) { toast(t("wall.no_picture"), "error"); return; }
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    canvas.getContext("2d").drawImage(v, 0, 0, canvas.width, canvas.height);
    const name = `${String(pane.channel.name || pane.channel.id).replace(/[\\/:*?"<>|\s]+/g, "_")}_${beijingStamp()}.png`;
    canvas.toBlob((blob) => {
      if (!blob) return;
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: name, class: "hidden" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 5000);
    }, "image/png");
  }

  function clearRetry(pane) {
    if (pane.retryTimer) { clearInterval(pane.retryTimer); pane.retryTimer = null; }
    delete pane.el.dataset.retry;
  }

  async function stopPane(pane) {
    const p = pane.player;
    pane.token += 1;  // a pending retry or attempt of this pane's last channel does nothing more
    clearRetry(pane);
    pane.attempt = 0;
    pane.player = null;
    pane.channel = null;
    pane.el.dataset.channel = "";
    pane.el.dataset.device = "";
    pane.el.classList.remove("playing", "failed");
    pane.title.textContent = "";
    pane.status.textContent = "";
    setMuted(pane, true);
    if (pane.ptz) pane.ptz.hide();
    if (p) await p.stop();  // its polls stop first, then its session ends (see LivePlayer.stopMedia)
  }

  async function playIn(pane, channel) {
    await stopPane(pane);
    if (left) return;
    pane.channel = channel;
    pane.el.dataset.channel = channel.id;
    pane.el.dataset.device = channel.deviceId || "";
    pane.title.textContent = channel.name;
    pane.title.title = channel.name;
    attempt(pane);
  }

  // One try at playing the pane's channel; a failure schedules the next (1, 2, 4 ... 30 s).
  async function attempt(pane) {
    const player = new LivePlayer(pane.video, (st, text) => {
      if (pane.player !== player) return;
      if (st === "error") { failed(pane, player, text, true); return; }
      pane.status.textContent = text;
      pane.el.classList.toggle("playing", st === "playing");
      pane.el.classList.remove("failed");
      if (st === "playing") { pane.attempt = 0; clearRetry(pane); }
    });
    player.onVideo = (fresh) => { pane.video = fresh; };  // the session moved to another media node (FLV)
    pane.player = player;
    try {
      await player.play(pane.channel, { transport: transport.value, player: playerSel.value });
    } catch (err) {
      if (pane.player === player) failed(pane, player, refusalText(err), retryable(err));
    }
  }

  function failed(pane, player, text, retry) {
    pane.player = null;
    pane.el.classList.remove("playing");
    pane.el.classList.add("failed");
    player.stop().catch(() => {});  // releases what is left of its session
    if (retry && !left) scheduleRetry(pane, text);
    else pane.status.textContent = text;
  }

  function scheduleRetry(pane, reason) {
    clearRetry(pane);
    pane.attempt += 1;
    const n = pane.attempt;
    const token = pane.token;
    let wait = Math.min(RETRY_MAX_S, 2 ** (n - 1));
    pane.el.dataset.retry = String(n);
    const show = () => { pane.status.textContent = `${reason} · ${t("wall.retrying", { n, s: wait })}`; };
    show();
    pane.retryTimer = setInterval(async () => {
      wait -= 1;
      if (wait > 0) { show(); return; }
      clearInterval(pane.retryTimer);
      pane.retryTimer = null;
      if (pane.token !== token || left) return;
      // an offline device would only refuse the live request: ask the device list first
      const dev = pane.channel && pane.channel.deviceId;
      if (dev) {
        let online = true;
        try { online = !!(await get(`/api/devices/${encodeURIComponent(dev)}`)).online; } catch (_) { /* try anyway */ }
        if (pane.token !== token || left) return;
        if (!online) { scheduleRetry(pane, t("wall.offline")); return; }
      }
      pane.status.textContent = t("live.requesting");
      attempt(pane);
    }, 1000);
  }

  function mark() { panes.forEach((p) => p.el.classList.toggle("selected", p.i === selected)); }

  // The wall takes the height left in the window (no page scroll on a desktop screen).
  function fitWall() {
    if (left || !grid.isConnected) return;
    if (window.innerWidth <= 900) {
      grid.style.height = "";
      grid.style.removeProperty("--wall-h");
      return;
    }
    const top = grid.getBoundingClientRect().top + window.scrollY;
    let height = Math.max(200, Math.floor(window.innerHeight - top - 16));
    grid.style.height = height + "px";
    const over = document.documentElement.scrollHeight - window.innerHeight;
    if (over > 0) { height = Math.max(200, height - over); grid.style.height = height + "px"; }
    grid.parentElement.style.setProperty("--wall-h", height + "px");
  }

  function setLayout(n) {
    layout = n;
    localStorage.setItem(LAYOUT_KEY, String(n));
    while (panes.length < n) panes.push(makePane(panes.length));
    for (const p of panes.slice(n)) stopPane(p);
    panes.length = n;
    if (selected >= n) selected = 0;
    grid.className = "wall fill n" + n;
    clear(grid).append(...panes.map((p) => p.el));
    layoutBtns.forEach((b) => {
      const on = Number(b.dataset.layout) === n;
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", String(on));
    });
    mark();
    fitWall();
  }

  function play(channel) {
    const pane = panes[selected];
    playIn(pane, channel);
    const free = panes.findIndex((p, k) => k > selected && !p.channel);
    selected = free >= 0 ? free : (selected + 1) % panes.length;
    mark();
  }

  const panel = treePanel(nodes, { onChannel: play, onDevice: null });
  const closeAll = h("button", { type: "button", id: "live-close-all", onclick: () => panes.forEach(stopPane) },
                     t("live.close_all"));
  root.append(pageHead(t("nav.live"),
      h("span", { class: "seg-group", role: "group", "aria-label": t("live.layout") }, t("live.layout"), layoutBtns),
      h("label", null, t("live.transport"), " ", transport), h("label", null, t("live.player"), " ", playerSel), closeAll),
    h("div", { class: "split live" }, panel, grid));
  setLayout(layout);
  requestAnimationFrame(fitWall);
  window.addEventListener("resize", fitWall);
  const wanted = route.params.get("channel");
  const wantedDevice = route.params.get("device");
  if (wanted) {
    const ch = channelsOf(nodes).find((c) => c.id === wanted && (!wantedDevice || c.deviceId === wantedDevice))
      || { id: wanted, name: wanted, deviceId: wantedDevice };
    play(ch);
  }
  return () => {
    left = true;
    window.removeEventListener("resize", fitWall);
    return Promise.all(panes.map(stopPane));
  };
}
