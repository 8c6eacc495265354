// History video: the playback page (a channel's day on a 24 h timeline of device and platform records,
// click to play, pause / speed / drag to seek, select a range and download it), the download centre (the
// user's jobs) and the recording page of a channel (plan, state, storage).  Every time shown is Beijing time.
import { api, get, post } from "./api.js";
import { channelsOf, loadTree } from "./data.js";
import { clear, field, fmtTime, h, message, pageStyle, toast } from "./dom.js";
import { extend, serverText, t } from "./i18n.js";
import { LivePlayer } from "./player.js";
import { can } from "./session.js";
import { treePanel } from "./views.js";

const DAY_MS = 24 * 3600e3;
const BJ_MS = 8 * 3600e3; // Asia/Shanghai: UTC+8, no daylight saving time
export const SCALES = [0.25, 0.5, 1, 2, 4, 8];

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

// The channel's route prefix: always with the device (a channel id is unique only within its device).
export function channelBase(ch) {
  return ch.deviceId
    ? `/api/devices/${encodeURIComponent(ch.deviceId)}/channels/${encodeURIComponent(ch.id)}`
    : `/api/channels/${encodeURIComponent(ch.id)}`;
}

// "YYYY-MM-DD" of today in Beijing.
export function beijingToday(now = Date.now()) { return new Date(now + BJ_MS).toISOString().slice(0, 10); }
// Midnight (Beijing) of "YYYY-MM-DD", as epoch ms.
export function dayStart(day) { return Date.parse(day + "T00:00:00+08:00"); }
// An instant as the API's input: ISO 8601 with the Beijing offset.
export function isoBeijing(ms) { return new Date(ms + BJ_MS).toISOString().slice(0, 19) + "+08:00"; }
// "HH:MM:SS" in Beijing.
export function clock(ms) { return new Date(ms + BJ_MS).toISOString().slice(11, 19); }

function typeLabel(item) {
  if (item.source === "platform") return t("pb.type.platform");
  const key = "pb.type." + (item.type || "time");
  const text = t(key);
  return text === key ? item.type : text;
}

// ------------------------------------------------------------------ playback player
class PlaybackPlayer extends LivePlayer {
  async playWindow(channel, win, { transport = "udp", player = "auto" } = {}) {
    this.onState("busy", t("live.requesting"));
    const body = { start: isoBeijing(win.start), end: isoBeijing(win.end), source: win.source, transport };
    const url = channelBase(channel) + "/playback";
    this.session = await api("POST", url, { body });
    if (this.closed) { await this.stop(); return; }
    this.onState("busy", t("live.connecting"));
    if (player === "flv") {
      await this.playFlv(this.session);
    } else {
      try {
        await this.playWhep(this.session);
      } catch (err) {
        if (player !== "auto") throw err;
        await this.stopMedia();
        this.session = await api("POST", url, { body });
        await this.playFlv(this.session);
      }
    }
    this.onState("playing", `${t("pb.playing")} · ${this.kind === "whep" ? "WebRTC" : "HTTP-FLV"}`);
  }

  async control(action, extra = {}) {
    if (!this.session) return null;
    return post(`/api/sessions/${encodeURIComponent(this.session.session_id)}/control`, { action, ...extra });
  }

  async state() {
    if (!this.session) return null;
    return get(`/api/sessions/${encodeURIComponent(this.session.session_id)}`);
  }
}

// ------------------------------------------------------------------ the 24 h timeline
// lanes: device and platform records of one day; click: play at that time; drag: select a range;
// drag the playhead: seek.  onPlay(ms, source), onSelect({start, end, source} | null), onSeek(ms).
export function dayTimeline({ onPlay, onSelect, onSeek }) {
  const lanes = {
    device: h("div", { class: "pb-lane", dataset: { source: "device" } }),
    platform: h("div", { class: "pb-lane", dataset: { source: "platform" } }),
  };
  const selection = h("div", { class: "pb-selection hidden" });
  const playhead = h("div", { class: "pb-playhead hidden", title: t("pb.drag_seek") });
  const hover = h("div", { class: "pb-hover hidden" });
  const area = h("div", { class: "pb-area", id: "pb-timeline" },
    h("div", { class: "pb-lane-label" }, t("pb.source.device")), lanes.device,
    h("div", { class: "pb-lane-label" }, t("pb.source.platform")), lanes.platform,
    selection, playhead, hover);
  const ticks = h("div", { class: "pb-ticks" },
    Array.from({ length: 13 }, (_, k) => h("span", null, String(k * 2).padStart(2, "0") + ":00")));
  const wrap = h("div", { class: "pb-timeline" }, area, ticks);
  let day0 = 0;
  let sel = null;

  const pct = (ms) => Math.max(0, Math.min(100, ((ms - day0) / DAY_MS) * 100));
  const msAt = (clientX) => {
    const lanesBox = lanes.device.getBoundingClientRect();
    const x = Math.max(0, Math.min(lanesBox.width, clientX - lanesBox.left));
    return day0 + Math.round((x / lanesBox.width) * DAY_MS / 1000) * 1000;
  };

  function draw(day, items) {
    day0 = dayStart(day);
    for (const lane of Object.values(lanes)) clear(lane);
    for (const item of items) {
      if (!item.start || !item.end) continue;
      const a = Math.max(Date.parse(item.start), day0), b = Math.min(Date.parse(item.end), day0 + DAY_MS);
      if (b <= a) continue;
      const bar = h("div", { class: `pb-rec ${item.source} type-${item.source === "platform" ? "platform" : (item.type || "time")}`,
                             title: `${typeLabel(item)} ${clock(Date.parse(item.start))} – ${clock(Date.parse(item.end))}`,
                             dataset: { start: item.start, end: item.end, type: item.type || "", source: item.source } });
      bar.style.left = pct(a) + "%";
      bar.style.width = Math.max(0.05, pct(b) - pct(a)) + "%";
      (lanes[item.source] || lanes.device).append(bar);
    }
    setSelection(null);
  }

  function setSelection(range) {
    sel = range;
    selection.classList.toggle("hidden", !range);
    if (range) {
      selection.style.left = pct(range.start) + "%";
      selection.style.width = (pct(range.end) - pct(range.start)) + "%";
      selection.title = `${clock(range.start)} – ${clock(range.end)}`;
    }
    onSelect && onSelect(range);
  }

  function setPlayhead(ms) {
    playhead.classList.toggle("hidden", ms == null);
    if (ms != null) { playhead.style.left = pct(ms) + "%"; playhead.dataset.at = clock(ms); }
  }

  // pointer handling: a click plays, a drag selects, dragging the playhead seeks
  let down = null;
  area.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    const lane = e.target.closest(".pb-lane") || (e.target.closest(".pb-rec") || {}).parentElement;
    down = { x: e.clientX, ms: msAt(e.clientX), seek: e.target === playhead,
             source: (lane && lane.dataset && lane.dataset.source) || sel?.source || "device" };
    area.setPointerCapture && area.setPointerCapture(e.pointerId);
  });
  area.addEventListener("pointermove", (e) => {
    const ms = msAt(e.clientX);
    hover.classList.remove("hidden");
    hover.style.left = pct(ms) + "%";
    hover.textContent = clock(ms);
    if (!down) return;
    if (down.seek) { setPlayhead(ms); return; }
    if (Math.abs(e.clientX - down.x) > 4) {
      const a = Math.min(down.ms, ms), b = Math.max(down.ms, ms);
      sel = { start: a, end: b, source: down.source };
      selection.classList.remove("hidden");
      selection.style.left = pct(a) + "%";
      selection.style.width = (pct(b) - pct(a)) + "%";
    }
  });
  area.addEventListener("pointerleave", () => hover.classList.add("hidden"));
  area.addEventListener("pointerup", (e) => {
    if (!down) return;
    const d = down;
    down = null;
    const ms = msAt(e.clientX);
    if (d.seek) { onSeek && onSeek(ms); return; }
    if (Math.abs(e.clientX - d.x) > 4) { setSelection({ start: Math.min(d.ms, ms), end: Math.max(d.ms, ms), source: d.source }); return; }
    onPlay && onPlay(ms, d.source);
  });

  return { el: wrap, draw, setPlayhead, setSelection, get selection() { return sel; }, get day0() { return day0; } };
}

// ------------------------------------------------------------------ download progress (shared)
function jobState(job) {
  const key = "dl.state." + job.state;
  const text = t(key);
  return text === key ? job.state : text;
}

function progressBar(percent) {
  const fill = h("div", { class: "bar-fill" });
  fill.style.width = Math.max(0, Math.min(100, percent || 0)) + "%";
  return h("div", { class: "bar", role: "progressbar", "aria-valuenow": Math.round(percent || 0) }, fill);
}

// ------------------------------------------------------------------ the playback page
export async function playbackView(root, route) {
  const nodes = await loadTree();
  const dayInput = h("input", { type: "date", id: "pb-day", value: route.params.get("day") || beijingToday() });
  const playerSel = h("select", { id: "pb-player" },
    h("option", { value: "auto" }, t("live.auto")), h("option", { value: "whep" }, "WebRTC"),
    h("option", { value: "flv" }, "HTTP-FLV"));
  const title = h("h2", { id: "pb-channel" }, t("pb.pick"));
  const status = h("div", { class: "pane-status", id: "pb-status" });
  const video = h("video", { muted: true, autoplay: true, playsinline: true, class: "detail-video", id: "pb-video" });
  video.muted = true;
  const pauseBtn = h("button", { type: "button", id: "pb-pause", disabled: true }, t("pb.pause"));
  const speedSel = h("select", { id: "pb-speed", disabled: true },
    SCALES.map((s) => h("option", { value: String(s), selected: s === 1 }, `${s}×`)));
  const position = h("span", { class: "mono", id: "pb-position" }, "");
  const stopBtn = h("button", { type: "button", id: "pb-stop", disabled: true }, t("live.close"));
  const recordsNote = h("div", { id: "pb-records-note", class: "muted" });
  const legend = h("div", { class: "pb-legend" },
    ["time", "alarm", "manual", "platform"].map((k) => h("span", null, h("i", { class: "pb-rec type-" + k }), t("pb.type." + k))));
  const selInfo = h("span", { id: "pb-selection-info", class: "muted" }, t("pb.select_hint"));
  const dlSource = h("select", { id: "pb-dl-source", "aria-label": t("pb.dl_source") },
    h("option", { value: "device" }, t("pb.source.device")), h("option", { value: "platform" }, t("pb.source.platform")));
  const dlPurpose = h("input", { id: "pb-dl-purpose", maxlength: 200, size: 18, autocomplete: "off",
                                 placeholder: t("dl.purpose_hint"), "aria-label": t("dl.purpose") });
  const dlBtn = h("button", { type: "button", class: "primary", id: "pb-download", disabled: true }, t("pb.download"));
  const dlProgress = h("div", { id: "pb-dl-progress" });
  let channel = null, player = null, win = null, poll = null, dlTimer = null, paused = false;

  const timeline = dayTimeline({
    onPlay: (ms, source) => playAt(ms, source),
    onSeek: (ms) => seekTo(ms),
    onSelect: (range) => {
      dlBtn.disabled = !range || !channel || !can("download.create");
      if (range) {
        dlSource.value = range.source;
        selInfo.textContent = `${clock(range.start)} – ${clock(range.end)}`;
      } else {
        selInfo.textContent = t("pb.select_hint");
      }
    },
  });

  async function loadRecords() {
    if (!channel) return;
    const day = dayInput.value || beijingToday();
    const a = dayStart(day);
    recordsNote.textContent = t("common.loading");
    try {
      const r = await get(channelBase(channel) + "/records", { start: isoBeijing(a), end: isoBeijing(a + DAY_MS), source: "all" });
      timeline.draw(day, r.items);
      const notes = [t("pb.count", { device: r.items.filter((i) => i.source === "device").length,
                                     platform: r.items.filter((i) => i.source === "platform").length })];
      if (!r.complete) notes.push(t("pb.incomplete"));
      for (const e of r.errors || []) notes.push(`${t("pb.source." + e.source)}: ${serverText(e.message)}`);
      recordsNote.textContent = notes.join(" · ");
    } catch (err) {
      timeline.draw(day, []);
      recordsNote.textContent = err.message;
    }
  }

  async function stopPlayback() {
    clearInterval(poll);
    poll = null;
    const p = player;
    player = null;
    win = null;
    timeline.setPlayhead(null);
    for (const el of [pauseBtn, speedSel, stopBtn]) el.disabled = true;
    position.textContent = "";
    if (p) await p.stop();
  }

  async function playAt(ms, source) {
    if (!channel) return;
    await stopPlayback();
    const end = Math.min(ms + 3600e3, timeline.day0 + DAY_MS, Date.now());
    if (end <= ms) { status.textContent = t("pb.future"); return; }
    win = { start: ms, end, source };
    paused = false;
    pauseBtn.textContent = t("pb.pause");
    speedSel.value = "1";
    const p = new PlaybackPlayer(video, (_, text) => { if (player === p) status.textContent = text; });
    player = p;
    timeline.setPlayhead(ms);
    try {
      await p.playWindow(channel, win, { player: playerSel.value });
      for (const el of [pauseBtn, speedSel, stopBtn]) el.disabled = false;
      poll = setInterval(refreshState, 1000);
    } catch (err) {
      if (player === p) { status.textContent = err.message; stopBtn.disabled = false; }
    }
  }

  async function refreshState() {
    if (!player || !win) return;
    try {
      const s = await player.state();
      if (!s) return;
      if (s.position != null) {
        const at = win.start + s.position * 1000;
        timeline.setPlayhead(at);
        position.textContent = `${clock(at)} · ${s.scale}×${s.paused ? " · " + t("pb.paused") : ""}`;
      }
    } catch (err) {
      if (err.status === 404) { status.textContent = t("pb.ended"); await stopPlayback(); }
    }
  }

  async function seekTo(ms) {
    if (!player || !win) return playAt(ms, timeline.selection?.source || "device");
    if (ms < win.start || ms >= win.end) return playAt(ms, win.source);
    try {
      await player.control("seek", { position: (ms - win.start) / 1000 });
      refreshState();
    } catch (err) { toast(err.message, "error"); }
  }

  pauseBtn.addEventListener("click", async () => {
    try {
      await player.control(paused ? "resume" : "pause");
      paused = !paused;
      pauseBtn.textContent = paused ? t("pb.resume") : t("pb.pause");
      refreshState();
    } catch (err) { toast(err.message, "error"); }
  });
  speedSel.addEventListener("change", async () => {
    try { await player.control("speed", { scale: Number(speedSel.value) }); refreshState(); }
    catch (err) { toast(err.message, "error"); }
  });
  stopBtn.addEventListener("click", () => stopPlayback());
  dayInput.addEventListener("change", () => { stopPlayback(); loadRecords(); });

  dlBtn.addEventListener("click", async () => {
    const range = timeline.selection;
    if (!range || !channel) return;
    dlBtn.disabled = true;
    try {
      const job = await post(channelBase(channel) + "/downloads",
        { start: isoBeijing(range.start), end: isoBeijing(range.end), source: dlSource.value,
          ...(dlPurpose.value.trim() ? { purpose: dlPurpose.value.trim() } : {}) });
      trackJob(job);
      toast(t("pb.download_started"), "ok");
    } catch (err) {
      toast(err.message, "error");
    } finally {
      dlBtn.disabled = !timeline.selection;
    }
  });

  function trackJob(job) {
    const row = h("div", { class: "pb-job", dataset: { job: job.job_id } });
    dlProgress.prepend(row);
    const draw = (j) => {
      clear(row).append(...[
        h("span", { class: "mono" }, `${clock(Date.parse(j.start))} – ${clock(Date.parse(j.end))}`),
        progressBar(j.percent), h("span", { class: "pb-job-state" }, `${jobState(j)} ${Math.round(j.percent || 0)}%`),
        h("a", { href: "#/downloads", class: "btn small ghost" }, t("nav.downloads")),
        j.reason ? h("span", { class: "msg error" }, serverText(j.reason)) : null].filter(Boolean));
      row.dataset.state = j.state;
    };
    draw(job);
    const timer = setInterval(async () => {
      try {
        const j = await get(`/api/downloads/${encodeURIComponent(job.job_id)}`);
        draw(j);
        if (j.state === "done" || j.state === "failed") clearInterval(timer);
      } catch (_) { clearInterval(timer); }
    }, 1000);
    dlTimer = dlTimer || [];
    dlTimer.push(timer);
  }

  function pick(n) {
    stopPlayback();
    channel = n;
    title.textContent = `${n.name}${n.deviceId ? " · " + n.deviceId : ""}`;
    title.dataset.channel = n.id;
    for (const r of root.querySelectorAll(".tree-row.channel")) r.classList.toggle("selected", r.dataset.channel === n.id);
    recLink.classList.remove("hidden");
    recLink.href = `#/recording/${encodeURIComponent(n.id)}${n.deviceId ? "?device=" + encodeURIComponent(n.deviceId) : ""}`;
    loadRecords();
  }

  const recLink = h("a", { class: "btn ghost hidden", id: "pb-recording-link" }, t("nav.recording"));
  const panel = treePanel(nodes, { onChannel: pick });
  root.append(
    pageHead(t("nav.playback"), h("label", null, t("pb.day"), " ", dayInput),
      h("label", null, t("live.player"), " ", playerSel), recLink),
    h("div", { class: "split live" }, panel,
      h("section", { class: "card pb-main" }, title,
        h("div", { class: "pane solo" }, video, status),
        h("div", { class: "tools pb-controls" }, pauseBtn, h("label", null, t("pb.speed"), " ", speedSel), stopBtn, position),
        legend, timeline.el, recordsNote,
        can("download.create") ? h("div", { class: "tools pb-download" }, selInfo, dlSource, dlPurpose, dlBtn) : null,
        dlProgress)));
  const wanted = route.params.get("channel");
  if (wanted) {
    const device = route.params.get("device");
    const ch = channelsOf(nodes).find((c) => c.id === wanted && (!device || c.deviceId === device))
      || { id: wanted, name: wanted, deviceId: device };
    pick(ch);
  }
  return async () => { (dlTimer || []).forEach(clearInterval); await stopPlayback(); };
}

// ------------------------------------------------------------------ download centre
// My jobs, or (user.manage) everyone's within the caller's data scope: who, when, which channel (name and ids),
// the video period, progress with a measured ETA, size / SHA-256 / watermark id of the copy, the result;
// filters, paging, CSV export; refreshed every 2 s while a job runs.
extend({
  "dlc.mine": "我的下载",
  "dl.purpose": "下载用途",
  "dl.purpose_hint": "用途（如案件编号，可选）",
  "dl.purpose_is": "用途：{text}",
  "dlc.all": "全部用户",
  "dlc.user": "用户",
  "dlc.finished": "完成于 {time}",
  "dlc.eta_s": "约 {n} 秒",
  "dlc.eta_min": "约 {n} 分钟",
  "dlc.eta_h": "约 {h} 小时 {m} 分钟",
  "dlc.eta_left": "剩余 {eta}",
  "dlc.eta_note": "剩余时间按任务开始以来的进度速率估算，仅供参考。",
  "dlc.speed": "{x} 倍速",
  "dlc.size": "大小",
  "dlc.watermark": "水印编号",
  "dlc.f_user": "用户名",
  "dlc.f_device": "设备编号",
  "dlc.f_channel": "通道编号",
  "dlc.f_since": "创建时间从",
  "dlc.f_until": "至",
  "dlc.apply": "查询",
  "dlc.reset": "重置",
  "dlc.export": "导出 CSV",
  "dlc.prev": "上一页",
  "dlc.next": "下一页",
  "dlc.page": "第 {from}–{to} 条，共 {total} 条",
  "dlc.exported": "已导出",
}, {
  "dlc.mine": "My downloads",
  "dl.purpose": "Purpose of the download",
  "dl.purpose_hint": "Purpose (e.g. a case number, optional)",
  "dl.purpose_is": "Purpose: {text}",
  "dlc.all": "All users",
  "dlc.user": "User",
  "dlc.finished": "finished {time}",
  "dlc.eta_s": "about {n} s",
  "dlc.eta_min": "about {n} min",
  "dlc.eta_h": "about {h} h {m} min",
  "dlc.eta_left": "{eta} left",
  "dlc.eta_note": "Time left is estimated from the progress rate since the job started.",
  "dlc.speed": "{x}× speed",
  "dlc.size": "Size",
  "dlc.watermark": "Watermark id",
  "dlc.f_user": "Username",
  "dlc.f_device": "Device id",
  "dlc.f_channel": "Channel id",
  "dlc.f_since": "Created from",
  "dlc.f_until": "to",
  "dlc.apply": "Search",
  "dlc.reset": "Reset",
  "dlc.export": "Export CSV",
  "dlc.prev": "Previous",
  "dlc.next": "Next",
  "dlc.page": "{from}–{to} of {total}",
  "dlc.exported": "Exported",
});

const DL_CSS = `
.dlc .dlc-filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; margin-bottom: 10px; }
.dlc .dlc-filters .field { margin: 0; min-width: 0; }
.dlc .dlc-filters input { max-width: 100%; box-sizing: border-box; }
.dlc .dlc-pager { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-top: 10px; }
.dlc .dlc-note { margin-top: 8px; }
.dlc .dlc-eta { white-space: nowrap; }
.dlc #downloads-table td { vertical-align: top; }
.dlc #downloads-table .mono { word-break: break-all; }
@media (max-width: 700px) {
  .dlc #downloads-table thead { display: none; }
  .dlc #downloads-table, .dlc #downloads-table tbody, .dlc #downloads-table tr, .dlc #downloads-table td { display: block; width: auto; }
  .dlc #downloads-table tr { border-bottom: 1px solid #dde2ea; padding: 6px 0; }
  .dlc #downloads-table td { border: 0; padding: 2px 0; }
  .dlc #downloads-table .bar { width: 100%; }
  .dlc .dlc-filters .field, .dlc .dlc-filters input { width: 100%; }
}`;
const addDlStyle = pageStyle(DL_CSS);

const RUNNING = new Set(["queued", "capturing", "encoding"]);

// "about 2 min": seconds left as people read them (rounded up to whole minutes from a minute on)
export function etaText(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  if (seconds < 60) return t("dlc.eta_s", { n: Math.max(1, Math.ceil(seconds)) });
  const min = Math.ceil(seconds / 60);
  if (min < 60) return t("dlc.eta_min", { n: min });
  return t("dlc.eta_h", { h: Math.floor(min / 60), m: min % 60 });
}

function sizeText(bytes) {
  if (bytes == null) return "";
  return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`;
}

async function saveBlob(url, fallbackName) {
  // the API needs the bearer token: fetch, then hand the browser a blob
  const { token } = await import("./api.js");
  const r = await fetch(url, { headers: { Authorization: "Bearer " + token.get() } });
  if (!r.ok) { toast(`HTTP ${r.status}`, "error"); return false; }
  const m = /filename="?([^";]+)"?/.exec(r.headers.get("content-disposition") || "");
  const href = URL.createObjectURL(await r.blob());
  const a = h("a", { href, download: m ? m[1] : fallbackName });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
  return true;
}

export async function downloadsView(root) {
  addDlStyle();
  const manager = can("user.manage");
  const LIMIT = 20;
  let mode = "mine";
  let offset = 0;
  let timer = null;
  let closed = false;

  const table = h("div", { id: "downloads" }, message(t("common.loading")));
  const refresh = h("button", { type: "button", id: "dl-refresh", onclick: () => fill().catch(report) }, t("common.refresh"));
  const exportBtn = h("button", { type: "button", id: "dl-export", onclick: () => exportCsv().catch(report) }, t("dlc.export"));
  const tabs = manager ? ["mine", "all"].map((k) => h("button", {
    type: "button", class: "seg-btn" + (k === mode ? " active" : ""), id: "dl-tab-" + k, dataset: { tab: k },
    onclick: () => { mode = k; offset = 0; syncTabs(); fill().catch(report); } }, t("dlc." + k))) : [];
  const f = {
    user: h("input", { id: "dl-f-user", type: "text", maxlength: 64, autocomplete: "off" }),
    device: h("input", { id: "dl-f-device", type: "text", maxlength: 32, class: "mono", autocomplete: "off" }),
    channel: h("input", { id: "dl-f-channel", type: "text", maxlength: 32, class: "mono", autocomplete: "off" }),
    since: h("input", { id: "dl-f-since", type: "datetime-local" }),
    until: h("input", { id: "dl-f-until", type: "datetime-local" }),
  };
  const userField = field(t("dlc.f_user"), f.user);
  const filters = h("form", { class: "dlc-filters", id: "dl-filters",
    onsubmit: (e) => { e.preventDefault(); offset = 0; fill().catch(report); } },
    userField, field(t("dlc.f_device"), f.device), field(t("dlc.f_channel"), f.channel),
    field(t("dlc.f_since"), f.since), field(t("dlc.f_until"), f.until),
    h("button", { type: "submit", class: "primary", id: "dl-apply" }, t("dlc.apply")),
    h("button", { type: "button", class: "ghost", id: "dl-reset", onclick: () => {
      for (const el of Object.values(f)) el.value = "";
      offset = 0; fill().catch(report);
    } }, t("dlc.reset")));
  const pageInfo = h("span", { class: "muted", id: "dl-page" });
  const prev = h("button", { type: "button", class: "small", id: "dl-prev", onclick: () => { offset = Math.max(0, offset - LIMIT); fill().catch(report); } }, t("dlc.prev"));
  const next = h("button", { type: "button", class: "small", id: "dl-next", onclick: () => { offset += LIMIT; fill().catch(report); } }, t("dlc.next"));
  const pager = h("div", { class: "dlc-pager" }, prev, next, pageInfo);
  const note = h("p", { class: "muted small dlc-note", id: "dl-eta-note" }, t("dlc.eta_note"));

  function syncTabs() {
    for (const b of tabs) b.classList.toggle("active", b.dataset.tab === mode);
    userField.classList.toggle("hidden", mode !== "all");
  }
  syncTabs();

  function params() {
    const p = {};
    if (mode === "all") p.all = "true";
    if (mode === "all" && f.user.value.trim()) p.user = f.user.value.trim();
    if (f.device.value.trim()) p.device_id = f.device.value.trim();
    if (f.channel.value.trim()) p.channel_id = f.channel.value.trim();
    // datetime-local values are Beijing wall time; the API reads a time without an offset as Beijing time
    if (f.since.value) p.since = f.since.value.length === 16 ? f.since.value + ":00" : f.since.value;
    if (f.until.value) p.until = f.until.value.length === 16 ? f.until.value + ":00" : f.until.value;
    return p;
  }

  function report(err) { toast(err.message || String(err), "error"); }

  function schedule(running) {
    clearTimeout(timer);
    timer = null;
    if (running && !closed) timer = setTimeout(() => fill().catch(() => schedule(true)), 2000);
  }

  function progressCell(j) {
    const running = RUNNING.has(j.state);
    const eta = running && j.eta_seconds != null ? etaText(j.eta_seconds) : "";
    return h("td", { class: "dlc-progress" },
      progressBar(j.percent),
      h("div", null, `${jobState(j)} ${Math.round(j.percent || 0)}%`),
      eta ? h("div", { class: "muted small dlc-eta", title: t("dlc.eta_note") }, t("dlc.eta_left", { eta })) : null,
      running && j.speed != null ? h("div", { class: "muted small" }, t("dlc.speed", { x: j.speed.toFixed(1) })) : null);
  }

  function row(j) {
    const who = j.display_name ? `${j.display_name} (${j.username})` : j.username;
    return h("tr", { dataset: { job: j.job_id, state: j.state, user: j.username } },
      h("td", null, fmtTime(j.created_at),
        j.finished_at ? h("div", { class: "muted small" }, t("dlc.finished", { time: fmtTime(j.finished_at) })) : null),
      mode === "all" ? h("td", { class: "dlc-user" }, who) : null,
      h("td", null, j.channel_name ? h("div", null, j.channel_name) : null,
        h("div", { class: "mono small" }, `${j.device_id} / ${j.channel_id}`)),
      h("td", null, j.start ? `${fmtTime(j.start)} – ${clock(Date.parse(j.end))}` : t("dl.live_clip", { seconds: j.seconds })),
      h("td", null, j.source ? t("pb.source." + j.source) : t("dl.live"),
        j.purpose ? h("div", { class: "dlc-purpose small" }, t("dl.purpose_is", { text: j.purpose })) : null),
      progressCell(j),
      h("td", null,
        j.reason ? h("span", { class: "msg error" }, serverText(j.reason)) : null,
        j.size != null ? h("div", null, `${t("dlc.size")} ${sizeText(j.size)}`) : null,
        j.sha256 ? h("div", { class: "mono small", title: j.sha256 }, "SHA-256 " + j.sha256.slice(0, 16) + "…") : null,
        h("div", { class: "mono small" }, `${t("dlc.watermark")} ${j.watermark_id}`),
        j.file_url ? h("button", { type: "button", class: "btn small dl-save", onclick: () => fetchFile(j) }, t("dl.save")) : null));
  }

  async function fill() {
    const r = await get("/api/downloads", { ...params(), offset, limit: LIMIT });
    if (closed) return;
    if (!r.items.length && offset > 0 && r.total > 0) { offset = Math.max(0, Math.floor((r.total - 1) / LIMIT) * LIMIT); return fill(); }
    const total = r.total ?? r.items.length;
    pageInfo.textContent = total ? t("dlc.page", { from: offset + 1, to: offset + r.items.length, total }) : "";
    prev.disabled = offset <= 0;
    next.disabled = offset + r.items.length >= total;
    if (!r.items.length) clear(table).append(h("p", { class: "muted" }, t("dl.empty")));
    else {
      const heads = ["dl.created", mode === "all" ? "dlc.user" : null, "dl.channel", "dl.window", "dl.source", "dl.state", "dl.result"]
        .filter(Boolean);
      clear(table).append(h("table", { class: "table", id: "downloads-table", dataset: { mode } },
        h("thead", null, h("tr", null, heads.map((k) => h("th", null, t(k))))),
        h("tbody", null, r.items.map(row))));
    }
    schedule(r.items.some((j) => RUNNING.has(j.state)));
  }

  async function fetchFile(j) {
    await saveBlob(j.file_url, `${j.device_id}_${j.channel_id}_${j.watermark_id}.mp4`);
  }

  async function exportCsv() {
    const q = new URLSearchParams(params()).toString();
    if (await saveBlob("/api/downloads.csv" + (q ? "?" + q : ""), "downloads.csv")) toast(t("dlc.exported"), "ok");
  }

  root.append(h("div", { class: "dlc" },
    pageHead(t("nav.downloads"), tabs.length ? h("span", { class: "seg-group", role: "group" }, tabs) : null, exportBtn, refresh),
    h("section", { class: "card" }, filters, table, pager, note)));
  await fill();
  return () => { closed = true; clearTimeout(timer); };
}

// ------------------------------------------------------------------ recording plan of a channel
const WEEKDAYS = [1, 2, 3, 4, 5, 6, 7];

export async function recordingView(root, route) {
  const nodes = await loadTree();
  const detail = h("section", { class: "detail card", id: "rec-detail" }, h("p", { class: "muted" }, t("rec.pick")));
  let current = null;

  async function show(n) {
    current = n;
    for (const r of root.querySelectorAll(".tree-row.channel")) r.classList.toggle("selected", r.dataset.channel === n.id);
    clear(detail).append(message(t("common.loading")));
    let rec;
    try { rec = await get(channelBase(n) + "/recording"); }
    catch (err) { clear(detail).append(h("h2", null, n.name), message(err.message, "error")); return; }
    if (current !== n) return;
    draw(n, rec);
  }

  function draw(n, rec) {
    const mode = h("select", { id: "rec-mode" },
      ["continuous", "schedule", "off"].map((m) => h("option", { value: m, selected: rec.mode === m }, t("rec.mode." + m))));
    const stream = h("select", { id: "rec-stream" },
      ["main", "sub"].map((s) => h("option", { value: s, selected: rec.stream === s }, t("rec.stream." + s))));
    const windows = h("div", { id: "rec-windows" });
    const addWindow = (w = { days: [1, 2, 3, 4, 5], from: "08:00", to: "18:00" }) => {
      const row = h("div", { class: "rec-window" },
        WEEKDAYS.map((d) => h("label", { class: "check" },
          h("input", { type: "checkbox", value: String(d), checked: w.days.includes(d) }), t("rec.day." + d))),
        h("input", { type: "time", class: "rec-from", value: w.from }), "–",
        h("input", { type: "time", class: "rec-to", value: w.to === "24:00" ? "23:59" : w.to }),
        h("button", { type: "button", class: "ghost small", onclick: () => row.remove() }, t("common.delete")));
      windows.append(row);
    };
    (rec.schedule || []).forEach(addWindow);
    const addBtn = h("button", { type: "button", class: "small", id: "rec-add", onclick: () => addWindow() }, t("rec.add_window"));
    const scheduleBox = h("div", { class: "rec-schedule" }, windows, addBtn);
    const syncMode = () => scheduleBox.classList.toggle("hidden", mode.value !== "schedule");
    mode.addEventListener("change", syncMode);
    syncMode();
    const error = h("div", { class: "msg error hidden", role: "alert" });
    const save = h("button", { type: "button", class: "primary", id: "rec-save", disabled: !can("record.manage") }, t("common.save"));
    save.addEventListener("click", async () => {
      error.classList.add("hidden");
      const schedule = [...windows.querySelectorAll(".rec-window")].map((row) => ({
        days: [...row.querySelectorAll("input[type=checkbox]:checked")].map((c) => Number(c.value)),
        from: row.querySelector(".rec-from").value, to: row.querySelector(".rec-to").value }));
      try {
        const saved = await api("PUT", channelBase(n) + "/recording",
          { body: { mode: mode.value, stream: stream.value, schedule: mode.value === "schedule" ? schedule : [] } });
        toast(t("common.saved"), "ok");
        draw(n, saved);
      } catch (err) {
        error.textContent = err.message;
        error.classList.remove("hidden");
      }
    });
    const stateText = t("rec.state." + rec.state) + (rec.reason ? ` · ${serverText(rec.reason)}` : "");
    const hours = (rec.seconds_stored / 3600).toFixed(1);
    clear(detail).append(
      h("h2", null, n.name, " ", h("span", { class: "muted mono" }, `${rec.device_id} / ${rec.channel_id}`)),
      h("dl", { class: "facts", id: "rec-facts" },
        h("dt", null, t("rec.state")), h("dd", { id: "rec-state", dataset: { state: rec.state } }, stateText),
        h("dt", null, t("rec.storage")), h("dd", null, t("rec.storage_value",
          { mb: (rec.bytes_stored / 1048576).toFixed(1), hours, segments: rec.segments })),
        h("dt", null, t("rec.oldest")), h("dd", null, fmtTime(rec.oldest)),
        h("dt", null, t("rec.newest")), h("dd", null, fmtTime(rec.newest_end)),
        h("dt", null, t("rec.retention")), h("dd", null, t("rec.days", { days: rec.retention_days })),
        h("dt", null, t("rec.updated")), h("dd", null, rec.updated_by ? `${rec.updated_by} · ${fmtTime(rec.updated_at)}` : "—")),
      h("h2", null, t("rec.plan")),
      field(t("rec.mode"), mode), field(t("rec.stream"), stream), scheduleBox, error,
      h("div", { class: "tools" }, save,
        h("a", { class: "btn ghost", href: `#/playback?channel=${encodeURIComponent(n.id)}` +
          (n.deviceId ? `&device=${encodeURIComponent(n.deviceId)}` : "") }, t("nav.playback"))));
  }

  const panel = treePanel(nodes, { onChannel: show });
  root.append(pageHead(t("nav.recording")), h("div", { class: "split" }, panel, detail));
  const wanted = route.args[0] || route.params.get("channel");
  if (wanted) {
    const device = route.params.get("device");
    show(channelsOf(nodes).find((c) => c.id === wanted && (!device || c.deviceId === device))
      || { id: wanted, name: wanted, deviceId: device });
  }
}
