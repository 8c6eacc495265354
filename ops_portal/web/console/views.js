// Views: organisation/device tree, device and channel details, live wall.
import { get } from "./api.js";
import { channelsOf, loadTree } from "./data.js";
import { clear, dot, fmtClock, fmtTime, h, message } from "./dom.js";
import { serverText, t } from "./i18n.js";
import { LivePlayer } from "./player.js";
import { canPtz, ptzPanel } from "./ptz.js";
import { can } from "./session.js";
import { openRepairDialog } from "./tickets.js";

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

// ------------------------------------------------------------------ tree component
export function treePanel(nodes, { onChannel, onDevice, onOrg, selected } = {}) {
  const filter = h("input", { type: "search", placeholder: t("tree.filter"), class: "tree-filter", id: "tree-filter" });
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
export async function liveView(root, route) {
  const nodes = await loadTree();
  const panes = [];
  let layout = Number(sessionStorage.getItem("gbops.layout")) || 4;
  let selected = 0;
  const grid = h("div", { class: "wall", id: "wall" });
  const transport = h("select", { id: "live-transport" },
    h("option", { value: "udp" }, "UDP"), h("option", { value: "tcp-passive" }, "TCP 被动 / passive"),
    h("option", { value: "tcp-active" }, "TCP 主动 / active"));
  const playerSel = h("select", { id: "live-player" },
    h("option", { value: "auto" }, t("live.auto")), h("option", { value: "whep" }, "WebRTC (WHEP)"),
    h("option", { value: "flv" }, "HTTP-FLV"));
  const layoutBtns = [1, 4, 9].map((n) => h("button", { type: "button", class: "seg-btn", dataset: { layout: n },
    onclick: () => setLayout(n) }, String(n)));

  function makePane(i) {
    const video = h("video", { muted: true, autoplay: true, playsinline: true });
    video.muted = true;
    const title = h("span", { class: "pane-title" }, "");
    const status = h("span", { class: "pane-status" }, i === 0 ? t("live.pick") : "");
    const close = h("button", { type: "button", class: "icon", title: t("live.close"), "aria-label": t("live.close"),
                                onclick: (e) => { e.stopPropagation(); stopPane(pane); } }, "✕");
    const full = h("button", { type: "button", class: "icon", title: t("live.fullscreen"), "aria-label": t("live.fullscreen"),
                               onclick: (e) => { e.stopPropagation(); el.requestFullscreen && el.requestFullscreen(); } },
                   h("span", { class: "fs" }));
    // PTZ: a pad over the picture, opened with the pane's 云台 button; the arrow keys while the pane is focused
    const ptz = canPtz() ? ptzPanel(() => pane.channel) : null;
    const ptzBtn = ptz ? h("button", { type: "button", class: "icon ptz-toggle", title: t("ptz.title"),
                                       "aria-label": t("ptz.title"), onclick: (e) => {
      e.stopPropagation();
      if (!pane.channel) return;
      if (ptz.open) ptz.hide(); else ptz.show();
    } }, t("ptz.button")) : null;
    const el = h("div", { class: "pane", dataset: { pane: i }, tabindex: 0 }, video,
      h("div", { class: "pane-bar" }, title, h("span", { class: "pane-buttons" }, ptzBtn, full, close)), status,
      ptz ? ptz.el : null);
    const pane = { i, el, video, title, status, player: null, channel: null, ptz };
    el.addEventListener("click", () => { selected = pane.i; mark(); });
    if (ptz) {
      el.addEventListener("keydown", (e) => { if (e.target === el && ptz.key(e, true)) e.stopPropagation(); });
      el.addEventListener("keyup", (e) => { if (e.target === el) ptz.key(e, false); });
      el.addEventListener("blur", () => ptz.release());
    }
    return pane;
  }

  async function stopPane(pane) {
    const p = pane.player;
    pane.player = null;
    pane.channel = null;
    pane.el.dataset.channel = "";
    pane.el.dataset.device = "";
    pane.el.classList.remove("playing", "failed");
    pane.title.textContent = "";
    if (pane.ptz) pane.ptz.hide();
    if (p) await p.stop();
  }

  async function playIn(pane, channel) {
    await stopPane(pane);
    pane.channel = channel;
    pane.el.dataset.channel = channel.id;
    pane.el.dataset.device = channel.deviceId || "";
    pane.title.textContent = channel.name;
    const player = new LivePlayer(pane.video, (st, text) => {
      if (pane.player !== player) return;
      pane.status.textContent = text;
      pane.el.classList.toggle("playing", st === "playing");
      pane.el.classList.toggle("failed", st === "error");
    });
    player.onVideo = (fresh) => { pane.video = fresh; };  // the session moved to another media node (FLV)
    pane.player = player;
    try {
      await player.play(channel, { transport: transport.value, player: playerSel.value });
    } catch (err) {
      if (pane.player === player) {
        pane.status.textContent = err.message;
        pane.el.classList.add("failed");
      }
    }
  }

  function mark() { panes.forEach((p) => p.el.classList.toggle("selected", p.i === selected)); }

  function setLayout(n) {
    layout = n;
    sessionStorage.setItem("gbops.layout", String(n));
    while (panes.length < n) panes.push(makePane(panes.length));
    for (const p of panes.slice(n)) stopPane(p);
    panes.length = n;
    if (selected >= n) selected = 0;
    grid.className = "wall n" + n;
    clear(grid).append(...panes.map((p) => p.el));
    layoutBtns.forEach((b) => b.classList.toggle("active", Number(b.dataset.layout) === n));
    mark();
  }

  function play(channel) {
    const pane = panes[selected];
    playIn(pane, channel);
    const free = panes.findIndex((p, k) => k > selected && !p.channel);
    selected = free >= 0 ? free : (selected + 1) % panes.length;
    mark();
  }

  const panel = treePanel(nodes, { onChannel: play, onDevice: null });
  const closeAll = h("button", { type: "button", onclick: () => panes.forEach(stopPane) }, t("live.close_all"));
  root.append(pageHead(t("nav.live"),
      h("span", { class: "seg-group", role: "group", "aria-label": t("live.layout") }, t("live.layout"), layoutBtns),
      h("label", null, t("live.transport"), " ", transport), h("label", null, t("live.player"), " ", playerSel), closeAll),
    h("div", { class: "split live" }, panel, grid));
  setLayout(layout);
  const wanted = route.params.get("channel");
  const wantedDevice = route.params.get("device");
  if (wanted) {
    const ch = channelsOf(nodes).find((c) => c.id === wanted && (!wantedDevice || c.deviceId === wantedDevice))
      || { id: wanted, name: wanted, deviceId: wantedDevice };
    play(ch);
  }
  return () => Promise.all(panes.map(stopPane));
}


