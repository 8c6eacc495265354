// Views: organisation/device tree, device and channel details, live wall.
import { get, token } from "./api.js";
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
  "wall.capacity_sub": "本节点的水印编码器已全部占用，子码流仍可观看",
  "wall.use_sub": "改用子码流",
  "wall.retry_main": "重试主码流",
  "wall.stream.main": "主码流",
  "wall.stream.sub": "子码流",
  "wall.stream.platform": "平台默认",
  "wall.stream_default": "新画面码流",
  "wall.to_sub": "改看子码流（分辨率较低，占用资源较少）",
  "wall.to_main": "改看主码流",
  "wall.no_sub": "该设备未设置子码流标识方式，只能观看主码流（可在设备管理中设置）",
  "wall.all_sub": "全部改用子码流",
  "wall.all_sub_done": "{n} 个画面已改用子码流",
  "wall.all_sub_none": "没有可改用子码流的画面",
  "wall.repair": "报修",
  "wall.repair_title": "报修（附当前画面）",
  "wall.repair_shot": "当前画面将作为现场图片附在工单上",
  "wall.repair_no_shot": "还没有画面，工单将不附图片",
  "wall.repair_attached": "工单 {id} 已附上现场画面",
  "wall.repair_failed": "工单 {id} 已创建，但画面未能附上：{reason}",
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
  "wall.capacity_sub": "All watermark encoders of this node are busy; the sub-stream still fits",
  "wall.use_sub": "Watch the sub-stream",
  "wall.retry_main": "Try the main stream again",
  "wall.stream.main": "Main",
  "wall.stream.sub": "Sub",
  "wall.stream.platform": "Platform default",
  "wall.stream_default": "New panes",
  "wall.to_sub": "Switch to the sub-stream (lower resolution, fewer resources)",
  "wall.to_main": "Switch to the main stream",
  "wall.no_sub": "This device has no sub-stream identification set: main stream only (set it in device management)",
  "wall.all_sub": "All panes to sub-stream",
  "wall.all_sub_done": "{n} panes moved to the sub-stream",
  "wall.all_sub_none": "No pane can move to the sub-stream",
  "wall.repair": "Report",
  "wall.repair_title": "Report a fault (with the current picture)",
  "wall.repair_shot": "The current picture will be attached to the ticket as its snapshot",
  "wall.repair_no_shot": "No picture yet: the ticket will have no snapshot",
  "wall.repair_attached": "The picture is attached to ticket {id}",
  "wall.repair_failed": "Ticket {id} was created, but the picture could not be attached: {reason}",
});

// The wall fills the height left under the page head (set by fitWall); panes then take their share of it. On
// narrow screens (the tree stacked above) the panes keep 16:9 and the page scrolls.
const wallStyle = pageStyle(`
.wall.n16 { grid-template-columns: repeat(4, minmax(0, 1fr)); }
.wall .pane-bar { opacity: 1; background: none; gap: 6px; }
.wall .pane-title { background: rgba(0, 0, 0, .55); padding: 1px 6px; border-radius: 3px; min-width: 0;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.wall .pane-title:empty { display: none; }
.wall .pane-buttons { display: inline-flex; flex-wrap: wrap; justify-content: flex-end; align-items: center; gap: 2px;
  margin-left: auto; min-width: 0; opacity: 0; transition: opacity .15s; background: rgba(0, 0, 0, .45);
  border-radius: 4px; }
.wall .pane:hover .pane-buttons, .wall .pane.selected .pane-buttons, .wall .pane:focus-within .pane-buttons,
.wall .pane:fullscreen .pane-buttons { opacity: 1; }
.wall .pane-buttons .pane-close { order: 9; }
.wall .pane-buttons button.icon { min-width: 26px; font-size: 12px; }
.wall .pane-buttons button.snapshot, .wall .pane-buttons button.audio, .wall .pane-buttons button.stream,
.wall .pane-buttons button.repair { border: 1px solid rgba(255, 255, 255, .4); border-radius: 4px; padding: 1px 5px; }
.wall .pane-buttons button.stream.sub { color: #ffd27a; }
.wall .pane-buttons button:disabled { opacity: .45; cursor: not-allowed; }
.wall .pane-offer { position: absolute; left: 0; right: 0; top: 30%; display: flex; justify-content: center;
  flex-wrap: wrap; gap: 8px; padding: 0 8px; pointer-events: none; }
.wall .pane-offer button { pointer-events: auto; font-size: 12.5px; }
.wall .pane-offer button.use-sub { background: var(--accent); border-color: var(--accent); color: #fff; }
.wall-stream { white-space: nowrap; }
.wall-repair-shot { margin: 0 0 10px; }
.wall-repair-shot img { display: block; max-width: 100%; max-height: 200px; border-radius: 4px; background: #000; }
.wall-repair-shot figcaption { font-size: 12px; color: var(--muted); margin-top: 4px; }
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
const STREAM_KEY = "gbops.live.stream";  // the stream new panes ask for: "main", "sub" or "" (the platform's default)
const SNAPSHOT_TYPE = "image/jpeg";  // a ticket's picture: JPEG keeps a 1080p frame well under the upload limit

// "20261207-153000" in Beijing time, for file names.
function beijingStamp(at = new Date()) {
  const p = Object.fromEntries(new Intl.DateTimeFormat("en-GB", {
    timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23" }).formatToParts(at).map((x) => [x.type, x.value]));
  return `${p.year}${p.month}${p.day}-${p.hour}${p.minute}${p.second}`;
}

// The refusal offers the sub-stream as an action the wall takes (503 watermark_capacity, `actions`).
function offersSub(err) {
  const actions = err && err.code === "watermark_capacity" && err.body && err.body.actions;
  return Array.isArray(actions) && actions.some((a) => a && a.action === "use_sub_stream");
}

// A refused or failed live request in words (no server advice the wall cannot act on, no raw codes).
function refusalText(err) {
  const code = err && err.code;
  if (code === "watermark_capacity") return offersSub(err) ? t("wall.capacity_sub") : t("wall.capacity");
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
  // the stream new panes ask for, remembered; "": none named (the platform's default)
  const streamSel = h("select", { id: "live-stream" },
    h("option", { value: "" }, t("wall.stream.platform")), h("option", { value: "main" }, t("wall.stream.main")),
    h("option", { value: "sub" }, t("wall.stream.sub")));
  streamSel.value = ["main", "sub"].includes(localStorage.getItem(STREAM_KEY)) ? localStorage.getItem(STREAM_KEY) : "";
  streamSel.addEventListener("change", () => localStorage.setItem(STREAM_KEY, streamSel.value));
  // whether a device can be asked for its sub-stream (its stream identification form is set): a device's
  // property, learnt from the live answers (`sub_stream`), a refusal's actions, or the device itself
  const subOf = new Map();

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
    // 主码流 / 子码流: the stream watched; a click reopens the pane on the other one
    const stream = icon("stream hidden", t("wall.to_sub"), () => {
      const now = pane.watching || pane.want;
      if (pane.channel && now) reopen(pane, now === "sub" ? "main" : "sub");
    }, t("wall.stream.main"));
    // 报修 with the current picture attached
    const repair = can("ticket.write") ? icon("repair hidden", t("wall.repair_title"), () => reportFault(pane),
                                              t("wall.repair")) : null;
    // a refusal's action (the sub-stream), taken by a click
    const offer = h("div", { class: "pane-offer hidden" });
    // PTZ: a pad over the picture, opened with the pane's 云台 button; the arrow keys while the pane is focused
    const ptz = canPtz() ? ptzPanel(() => pane.channel) : null;
    const ptzBtn = ptz ? h("button", { type: "button", class: "icon ptz-toggle", title: t("ptz.title"),
                                       "aria-label": t("ptz.title"), onclick: (e) => {
      e.stopPropagation();
      if (!pane.channel) return;
      if (ptz.open) ptz.hide(); else ptz.show();
    } }, t("ptz.button")) : null;
    const el = h("div", { class: "pane", dataset: { pane: i }, tabindex: 0 }, video,
      h("div", { class: "pane-bar" }, title,
        h("span", { class: "pane-buttons" }, close, snap, audio, stream, repair, ptzBtn, full)),
      status, offer, ptz ? ptz.el : null);
    // want: the stream asked for ("main", "sub", null: the platform's default); watching: the answer's `stream`
    const pane = { i, el, video, title, status, audio, stream, repair, offer, player: null, channel: null, ptz,
                   attempt: 0, token: 0, retryTimer: null, want: null, watching: null };
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

  // The pane's current picture as an image Blob (null: no picture yet).
  function grab(pane, type = "image/png", quality = undefined) {
    const v = pane.video;
    if (!pane.channel || !v.videoWidth) return Promise.resolve(null);
    const canvas = document.createElement("canvas");
    canvas.width = v.videoWidth;
    canvas.height = v.videoHeight;
    canvas.getContext("2d").drawImage(v, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve) => canvas.toBlob((blob) => resolve(blob || null), type, quality));
  }

  // The current picture as a PNG named after the channel and the Beijing time.
  function snapshot(pane) {
    if (!pane.channel || !pane.video.videoWidth) { toast(t("wall.no_picture"), "error"); return; }
    const name = `${String(pane.channel.name || pane.channel.id).replace(/[\\/:*?"<>|\s]+/g, "_")}_${beijingStamp()}.png`;
    grab(pane).then((blob) => {
      if (!blob) return;
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: name, class: "hidden" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 5000);
    }).catch(() => toast(t("wall.no_picture"), "error"));
  }

  // 报修 from the pane: the picture of this moment is grabbed first, shown in the repair dialog, and uploaded as
  // the created ticket's snapshot (PUT /api/tickets/{id}/snapshot) once the dialog resolves with the ticket.
  async function reportFault(pane) {
    const ch = pane.channel;
    if (!ch || !ch.deviceId) return;
    let blob = null;
    try { blob = await grab(pane, SNAPSHOT_TYPE, 0.9); } catch (_) { blob = null; }  // no picture: none attached
    const url = blob ? URL.createObjectURL(blob) : null;
    const pending = openRepairDialog({ device_id: ch.deviceId, channel_id: ch.id, name: ch.name || ch.id });
    const body = document.querySelector("#tk-repair-dialog .modal-body");
    if (body) {
      body.prepend(h("figure", { class: "wall-repair-shot", id: "tk-r-shot" },
        url ? h("img", { src: url, alt: t("wall.repair_shot") }) : null,
        h("figcaption", null, url ? t("wall.repair_shot") : t("wall.repair_no_shot"))));
    }
    let created = null;
    try { created = await pending; } finally { if (url) URL.revokeObjectURL(url); }
    if (!created || !blob) return;
    let problem = null;
    try {
      const r = await fetch(`/api/tickets/${encodeURIComponent(created.id)}/snapshot`, { method: "PUT", body: blob,
        headers: { "Content-Type": blob.type || SNAPSHOT_TYPE, Authorization: "Bearer " + (token.get() || "") } });
      if (!r.ok) {
        let data = null;
        try { data = await r.json(); } catch (_) { /* no body */ }
        problem = data && data.message ? serverText(data.message) : "HTTP " + r.status;
      }
    } catch (err) {
      problem = err.message || String(err);
    }
    if (problem) toast(t("wall.repair_failed", { id: created.id, reason: problem }), "error");
    else toast(t("wall.repair_attached", { id: created.id }), "ok");
  }

  // The pane's stream button: the stream watched (or asked for), the other one a click away where the device
  // has a sub-stream; disabled, with the reason in words, where it has none.
  function drawStream(pane) {
    const b = pane.stream;
    const now = pane.watching || pane.want;
    const dev = pane.channel && pane.channel.deviceId;
    b.classList.toggle("hidden", !pane.channel || !now);
    if (pane.repair) pane.repair.classList.toggle("hidden", !pane.channel || !dev);
    if (!pane.channel || !now) return;
    const noSub = subOf.get(dev) === false;
    b.textContent = now === "sub" ? t("wall.stream.sub") : t("wall.stream.main");
    b.classList.toggle("sub", now === "sub");
    b.dataset.stream = now;
    b.disabled = noSub && now !== "sub";
    const label = b.disabled ? t("wall.no_sub") : now === "sub" ? t("wall.to_main") : t("wall.to_sub");
    b.title = label;
    b.setAttribute("aria-label", `${b.textContent}: ${label}`);
  }

  function clearOffer(pane) {
    clear(pane.offer).classList.add("hidden");
    delete pane.el.dataset.offer;
  }

  // A refusal that offers the sub-stream: the action as a button (no retries of the main stream meanwhile),
  // and the main stream once more on request.
  function showOffer(pane, text) {
    clearRetry(pane);
    pane.attempt = 0;
    pane.status.textContent = text;
    pane.el.dataset.offer = "use_sub_stream";
    const button = (cls, label, stream) => h("button", { type: "button", class: cls, onclick: (e) => {
      e.stopPropagation();
      reopen(pane, stream);
    } }, label);
    clear(pane.offer).append(button("use-sub", t("wall.use_sub"), "sub"), button("retry-main", t("wall.retry_main"), "main"));
    pane.offer.classList.remove("hidden");
  }

  // Whether the device has a sub-stream: known from an answer, else asked of the device (null: unknown).
  async function hasSub(dev) {
    if (!dev) return false;
    if (subOf.has(dev)) return subOf.get(dev);
    if (!can("device.read")) return null;  // not asked (a 403): the answer to the live request will tell
    try {
      const d = await get(`/api/devices/${encodeURIComponent(dev)}`);
      const form = d && d.stream_form;
      if (form !== undefined) subOf.set(dev, !!form && form !== "none");
    } catch (_) { /* not readable: unknown */ }
    return subOf.has(dev) ? subOf.get(dev) : null;
  }

  // The pane's channel again on `stream`: its session ends first (its encoder is free for the new one).
  async function reopen(pane, stream) {
    const channel = pane.channel;
    if (!channel) return;
    await playIn(pane, channel, stream);
  }

  // 全部改用子码流: every pane watching (or refused) the main stream of a device with a sub-stream. All their
  // sessions end first, then the sub-streams open: the encoders freed are there for them.
  async function allToSub() {
    const list = panes.filter((p) => p.channel && p.want !== "sub" && p.watching !== "sub");
    const known = await Promise.all(list.map((p) => hasSub(p.channel.deviceId)));
    const move = list.filter((p, k) => known[k] === true && p.channel);
    if (!move.length) { toast(t("wall.all_sub_none")); return; }
    const chans = move.map((p) => p.channel);
    await Promise.all(move.map(stopPane));
    if (left) return;
    move.forEach((p, k) => { if (!p.channel) openIn(p, chans[k], "sub"); });
    toast(t("wall.all_sub_done", { n: move.length }), "ok");
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
    pane.want = null;
    pane.watching = null;
    clearOffer(pane);
    drawStream(pane);
    setMuted(pane, true);
    if (pane.ptz) pane.ptz.hide();
    if (p) await p.stop();  // its polls stop first, then its session ends (see LivePlayer.stopMedia)
  }

  // `stream`: "main" or "sub"; left out: the wall's choice for new panes.
  async function playIn(pane, channel, stream) {
    await stopPane(pane);
    if (left) return;
    openIn(pane, channel, stream);
  }

  function openIn(pane, channel, stream) {
    pane.channel = channel;
    pane.el.dataset.channel = channel.id;
    pane.el.dataset.device = channel.deviceId || "";
    pane.title.textContent = channel.name;
    pane.title.title = channel.name;
    pane.want = stream === undefined ? streamSel.value || null : stream;
    // the wall asks for the sub-stream of a device known to have none: its main stream
    if (pane.want === "sub" && subOf.get(channel.deviceId) === false) pane.want = "main";
    drawStream(pane);
    attempt(pane);
  }

  // One try at playing the pane's channel; a failure schedules the next (1, 2, 4 ... 30 s).
  async function attempt(pane) {
    const dev = pane.channel && pane.channel.deviceId;
    if (pane.want === "sub" && dev && !subOf.has(dev)) {
      // not asked by name of a device without a sub-stream (a 409 answer): its main stream instead
      const mine = pane.token;
      const sub = await hasSub(dev);
      if (pane.token !== mine || left) return;
      if (sub === false) { pane.want = "main"; drawStream(pane); }
    }
    const player = new LivePlayer(pane.video, (st, text) => {
      if (pane.player !== player) return;
      if (st === "error") { failed(pane, player, text, true); return; }
      pane.status.textContent = text;
      pane.el.classList.toggle("playing", st === "playing");
      pane.el.classList.remove("failed");
      if (st === "playing") { pane.attempt = 0; clearRetry(pane); }
    });
    player.onVideo = (fresh) => { pane.video = fresh; };  // the session moved to another media node (FLV)
    player.onSession = (s) => {
      if (pane.player !== player) return;
      if (pane.channel.deviceId) subOf.set(pane.channel.deviceId, !!s.sub_stream);
      pane.watching = s.stream === "sub" ? "sub" : "main";
      drawStream(pane);
    };
    pane.player = player;
    clearOffer(pane);
    try {
      await player.play(pane.channel, { transport: transport.value, player: playerSel.value, stream: pane.want });
    } catch (err) {
      if (pane.player !== player) return;
      if (err && err.code === "no_sub_stream") {
        // the device has no sub-stream after all: its main stream, at once
        if (dev) subOf.set(dev, false);
        pane.player = null;
        player.stop().catch(() => {});
        pane.want = "main";
        drawStream(pane);
        attempt(pane);
        return;
      }
      if (err && err.code === "watermark_capacity" && dev) {
        // a main-stream refusal offers the sub-stream exactly where the device has one
        if (offersSub(err)) subOf.set(dev, true);
        else if (pane.want === "main") subOf.set(dev, false);
      }
      if (offersSub(err)) { failed(pane, player, refusalText(err), false); showOffer(pane, refusalText(err)); return; }
      failed(pane, player, refusalText(err), retryable(err));
    }
  }

  function failed(pane, player, text, retry) {
    pane.player = null;
    pane.watching = null;
    drawStream(pane);
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
  const allSub = h("button", { type: "button", id: "live-all-sub", onclick: () => { allToSub().catch(() => {}); } },
                   t("wall.all_sub"));
  root.append(pageHead(t("nav.live"),
      h("span", { class: "seg-group", role: "group", "aria-label": t("live.layout") }, t("live.layout"), layoutBtns),
      h("label", null, t("live.transport"), " ", transport), h("label", null, t("live.player"), " ", playerSel),
      h("label", { class: "wall-stream" }, t("wall.stream_default"), " ", streamSel), allSub, closeAll),
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
