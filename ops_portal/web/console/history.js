// History video: the playback page (a channel's day on a 24 h timeline of device and platform records,
// click to play, pause / speed / drag to seek, select a range and download it), the download centre (the
// user's jobs) and the recording page of a channel (plan, state, storage).  Every time shown is Beijing time.
import { api, get, post } from "./api.js";
import { channelsOf, loadTree } from "./data.js";
import { clear, field, fmtTime, h, message, toast } from "./dom.js";
import { serverText, t } from "./i18n.js";
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
  const dlSource = h("select", { id: "pb-dl-source" },
    h("option", { value: "device" }, t("pb.source.device")), h("option", { value: "platform" }, t("pb.source.platform")));
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
        { start: isoBeijing(range.start), end: isoBeijing(range.end), source: dlSource.value });
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
        can("download.create") ? h("div", { class: "tools pb-download" }, selInfo, dlSource, dlBtn) : null,
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
export async function downloadsView(root) {
  const table = h("div", { id: "downloads" }, message(t("common.loading")));
  const refresh = h("button", { type: "button", onclick: () => fill() }, t("common.refresh"));
  root.append(pageHead(t("nav.downloads"), refresh), h("section", { class: "card" }, table));
  async function fill() {
    const r = await get("/api/downloads", { limit: 200 });
    if (!r.items.length) { clear(table).append(h("p", { class: "muted" }, t("dl.empty"))); return; }
    clear(table).append(h("table", { class: "table", id: "downloads-table" },
      h("thead", null, h("tr", null, ["dl.created", "dl.channel", "dl.window", "dl.source", "dl.state", "dl.result"]
        .map((k) => h("th", null, t(k))))),
      h("tbody", null, r.items.map((j) => h("tr", { dataset: { job: j.job_id, state: j.state } },
        h("td", null, fmtTime(j.created_at)),
        h("td", { class: "mono" }, `${j.device_id} / ${j.channel_id}`),
        h("td", null, j.start ? `${fmtTime(j.start)} – ${clock(Date.parse(j.end))}` : t("dl.live_clip", { seconds: j.seconds })),
        h("td", null, j.source ? t("pb.source." + j.source) : t("dl.live")),
        h("td", null, progressBar(j.percent), `${jobState(j)} ${Math.round(j.percent || 0)}%`),
        h("td", null,
          j.reason ? h("span", { class: "msg error" }, serverText(j.reason)) : null,
          j.size != null ? h("div", null, `${(j.size / 1048576).toFixed(1)} MB`) : null,
          j.sha256 ? h("div", { class: "mono small", title: j.sha256 }, "SHA-256 " + j.sha256.slice(0, 16) + "…") : null,
          j.file_url ? h("button", { type: "button", class: "btn small", onclick: () => fetchFile(j) }, t("dl.save")) : null))))));
  }
  async function fetchFile(j) {
    // the file needs the bearer token: fetch it, then hand the browser a blob
    const { token } = await import("./api.js");
    const r = await fetch(j.file_url, { headers: { Authorization: "Bearer " + token.get() } });
    if (!r.ok) { toast(`HTTP ${r.status}`, "error"); return; }
    const url = URL.createObjectURL(await r.blob());
    const a = h("a", { href: url, download: `${j.device_id}_${j.channel_id}_${j.watermark_id}.mp4` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
  await fill();
  const timer = setInterval(() => fill().catch(() => {}), 3000);
  return () => clearInterval(timer);
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
