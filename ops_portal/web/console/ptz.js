// PTZ on a live pane: the pad (8 directions, zoom, focus, iris, speed; press = move, release = stop; the
// arrow keys while the pane has the focus), presets (call, set with a name, delete), preset tours (made of
// presets with dwell times; start / stop), the home (restore) setting, and the lock line ("云台被 张三（级别 5）
// 控制中，剩余 18 秒"), counted down locally and refreshed from the server.
import { ApiError, api, del, get, post, put } from "./api.js";
import { clear, field, h, modal, toast } from "./dom.js";
import { t } from "./i18n.js";
import { state } from "./session.js";

const DIRECTIONS = [
  ["up_left", "↖"], ["up", "↑"], ["up_right", "↗"],
  ["left", "←"], ["stop", "■"], ["right", "→"],
  ["down_left", "↙"], ["down", "↓"], ["down_right", "↘"],
];
const LENS = [["zoom_in", "zoom_out"], ["focus_near", "focus_far"], ["iris_open", "iris_close"]];
const KEYS = { ArrowUp: "up", ArrowDown: "down", ArrowLeft: "left", ArrowRight: "right", PageUp: "zoom_in",
               PageDown: "zoom_out" };
const REFRESH_MS = 3000;

// A channel's route prefix, always with the device (a channel id is unique only within its device).
export function channelBase(ch) {
  return ch.deviceId
    ? `/api/devices/${encodeURIComponent(ch.deviceId)}/channels/${encodeURIComponent(ch.id)}`
    : `/api/channels/${encodeURIComponent(ch.id)}`;
}

// The lock line's words for a lock ({holder, seconds_left, mine}) or a 423 body ({holder, seconds_left}).
export function lockText(lock) {
  if (!lock || !lock.holder || !(lock.seconds_left > 0)) return t("ptz.free");
  const s = Math.max(0, Math.ceil(lock.seconds_left));
  if (lock.mine) return t("ptz.mine", { seconds: s });
  const hd = lock.holder;
  return t("ptz.locked", { name: hd.display_name || hd.username, level: hd.level, seconds: s });
}

// The PTZ panel of one pane. getChannel() -> {id, deviceId} | null (the pane's channel now).
export function ptzPanel(getChannel) {
  let lock = null;
  let lockAt = 0;
  let moving = null;
  let timer = null;
  let presets = [];
  const line = h("div", { class: "ptz-lock", role: "status", "aria-live": "polite" }, t("ptz.free"));
  const speed = h("input", { type: "range", min: 1, max: 255, value: 128, class: "ptz-speed", "aria-label": t("ptz.speed") });
  const speedOut = h("span", { class: "ptz-speed-value" }, "128");
  speed.addEventListener("input", () => { speedOut.textContent = speed.value; });

  function showLock(l) {
    lock = l;
    lockAt = Date.now();
    draw();
  }
  function draw() {
    if (!lock) { line.textContent = t("ptz.free"); line.className = "ptz-lock"; return; }
    const left = Math.max(0, (lock.seconds_left || 0) - (Date.now() - lockAt) / 1000);
    const now = { ...lock, seconds_left: left };
    line.textContent = lockText(now);
    line.className = "ptz-lock" + (now.holder && left > 0 ? (now.mine ? " mine" : " held") : "");
  }

  const base = () => { const ch = getChannel(); return ch ? channelBase(ch) : null; };

  async function send(action) {
    const url = base();
    if (!url) return;
    try {
      const r = await api("POST", url + "/ptz", { body: { action, speed: Number(speed.value) } });
      showLock(r.lock);
    } catch (err) {
      moving = null;
      if (err instanceof ApiError && err.status === 423 && err.body) {
        showLock({ holder: err.body.holder, seconds_left: err.body.seconds_left, mine: false });
      } else {
        toast(err.message, "error");
      }
    }
  }
  function press(action) {
    if (action === "stop") { moving = null; send("stop"); return; }
    moving = action;
    send(action);
  }
  function release() {
    if (!moving) return;
    moving = null;
    send("stop");
  }
  function padButton(action, label, cls = "") {
    const b = h("button", { type: "button", class: "ptz-btn " + cls, dataset: { action }, title: t("ptz." + action),
                            "aria-label": t("ptz." + action) }, label);
    b.addEventListener("pointerdown", (e) => {
      e.preventDefault();
      e.stopPropagation();
      try { b.setPointerCapture(e.pointerId); } catch (_) { /* synthetic events */ }
      press(action);
    });
    for (const ev of ["pointerup", "pointerleave", "pointercancel"]) b.addEventListener(ev, (e) => { e.stopPropagation(); release(); });
    b.addEventListener("click", (e) => e.stopPropagation());
    return b;
  }

  const pad = h("div", { class: "ptz-pad" }, DIRECTIONS.map(([a, l]) => padButton(a, l, a === "stop" ? "stop" : "")));
  const lens = h("div", { class: "ptz-lens" }, LENS.map(([a, b]) =>
    h("div", { class: "ptz-lens-row" }, padButton(a, "+"), h("span", null, t("ptz.lens." + a.split("_")[0])), padButton(b, "−"))));

  // presets
  const presetSel = h("select", { class: "ptz-presets", "aria-label": t("ptz.presets") });
  function drawPresets() {
    clear(presetSel).append(...(presets.length ? presets.map((p) =>
      h("option", { value: p.preset }, `${p.preset}${p.name ? " · " + p.name : ""}`)) : [h("option", { value: "" }, t("ptz.no_presets"))]));
  }
  async function loadPresets() {
    const url = base();
    if (!url) return;
    try { presets = (await get(url + "/presets")).items || []; } catch (err) { presets = []; toast(err.message, "error"); }
    drawPresets();
  }
  async function presetAction(action, preset, name) {
    const url = base();
    if (!url || !preset) return;
    try {
      const r = await post(url + "/presets", { action, preset: Number(preset), ...(name ? { name } : {}) });
      showLock(r.lock);
      toast(t("ptz.preset_done." + action, { n: preset }), "ok");
      if (action !== "call") await loadPresets();
    } catch (err) {
      if (err instanceof ApiError && err.status === 423 && err.body) showLock({ ...err.body, mine: false });
      else toast(err.message, "error");
    }
  }
  function setPresetDialog() {
    const num = h("input", { type: "number", min: 1, max: 255, required: true, name: "preset",
                             value: presetSel.value || (presets.length ? Math.max(...presets.map((p) => p.preset)) + 1 : 1) });
    const name = h("input", { name: "name", maxlength: 32, placeholder: t("ptz.preset_name_hint") });
    modal(t("ptz.set_preset"), (body) => body.append(field(t("ptz.preset_no"), num), field(t("ptz.preset_name"), name)),
          async () => { await presetAction("set", num.value, name.value.trim()); });
  }
  const presetBox = h("div", { class: "ptz-section" }, h("h4", null, t("ptz.presets")), presetSel,
    h("div", { class: "ptz-row" },
      h("button", { type: "button", class: "small primary", dataset: { ptz: "call" }, onclick: () => presetAction("call", presetSel.value) }, t("ptz.call")),
      h("button", { type: "button", class: "small", dataset: { ptz: "set" }, onclick: setPresetDialog }, t("ptz.set")),
      h("button", { type: "button", class: "small danger", dataset: { ptz: "delete" }, onclick: () => {
        if (presetSel.value && confirm(t("common.confirm_delete", { name: presetSel.value }))) presetAction("delete", presetSel.value);
      } }, t("common.delete"))));

  // tours
  const tourList = h("div", { class: "ptz-tours" });
  async function loadTours() {
    const url = base();
    if (!url) return;
    let items = [];
    try { items = (await get(url + "/tours")).items || []; } catch (_) { /* shown as none */ }
    clear(tourList).append(...(items.length ? items.map((tour) => h("div", { class: "ptz-tour", dataset: { tour: tour.id } },
      h("span", { class: "ptz-tour-name" }, tour.name, tour.running ? " ▶" : ""),
      h("span", { class: "muted" }, tour.points.map((p) => `${p.preset}(${p.dwell_s}s)`).join(" → ")),
      h("button", { type: "button", class: "small", onclick: () => tourCmd(tour.id, tour.running ? "stop" : "start") },
        tour.running ? t("ptz.tour_stop") : t("ptz.tour_start")),
      h("button", { type: "button", class: "small danger", onclick: () => tourDelete(tour) }, t("common.delete"))))
      : [h("div", { class: "muted" }, t("ptz.no_tours"))]));
  }
  async function tourCmd(id, cmd) {
    try { await post(`${base()}/tours/${id}/${cmd}`); await loadTours(); } catch (err) {
      if (err instanceof ApiError && err.status === 423 && err.body) showLock({ ...err.body, mine: false });
      else toast(err.message, "error");
    }
  }
  async function tourDelete(tour) {
    if (!confirm(t("common.confirm_delete", { name: tour.name }))) return;
    try { await del(`${base()}/tours/${tour.id}`); await loadTours(); } catch (err) { toast(err.message, "error"); }
  }
  function tourDialog() {
    if (!presets.length) { toast(t("ptz.tour_needs_presets"), "error"); return; }
    const name = h("input", { name: "name", required: true, maxlength: 64 });
    const loop = h("input", { type: "checkbox", checked: true });
    const rows = presets.map((p) => ({ p, on: h("input", { type: "checkbox", checked: true }),
                                       dwell: h("input", { type: "number", min: 2, max: 3600, step: "0.5", value: 10, class: "narrow" }) }));
    modal(t("ptz.new_tour"), (body) => body.append(field(t("ptz.tour_name"), name),
      h("div", { class: "ptz-tour-points" }, rows.map((r) => h("label", { class: "check" }, r.on,
        `${r.p.preset}${r.p.name ? " · " + r.p.name : ""}`, " ", t("ptz.dwell"), " ", r.dwell, " s"))),
      h("label", { class: "check" }, loop, t("ptz.loop"))),
    async () => {
      const points = rows.filter((r) => r.on.checked).map((r) => ({ preset: r.p.preset, dwell_s: Number(r.dwell.value) }));
      if (!points.length) throw new Error(t("ptz.tour_needs_presets"));
      await post(base() + "/tours", { name: name.value.trim(), points, loop: loop.checked });
      await loadTours();
    });
  }
  const tourBox = h("div", { class: "ptz-section" }, h("h4", null, t("ptz.tours")), tourList,
    h("button", { type: "button", class: "small", onclick: tourDialog }, t("ptz.new_tour")));

  // home
  const homeLine = h("span", { class: "muted" }, "—");
  let home = null;
  async function loadHome() {
    const url = base();
    if (!url) return;
    try { home = await get(url + "/ptz/home"); } catch (_) { home = null; }
    homeLine.textContent = !home ? "—" : !home.enabled ? t("ptz.home_off")
      : home.preset ? t("ptz.home_preset", { n: home.preset }) : t("ptz.home_device");
  }
  function homeDialog() {
    const num = h("input", { type: "number", min: 1, max: 255, value: home && home.preset ? home.preset : "" });
    const on = h("input", { type: "checkbox", checked: !!(home && home.enabled) });
    modal(t("ptz.home"), (body) => body.append(field(t("ptz.home_preset_field"), num, t("ptz.home_hint")),
      h("label", { class: "check" }, on, t("ptz.home_enabled"))),
    async () => {
      await put(base() + "/ptz/home", { preset: num.value ? Number(num.value) : null, enabled: on.checked });
      await loadHome();
    });
  }
  const homeBox = h("div", { class: "ptz-section ptz-row" }, h("span", null, t("ptz.home") + "："), homeLine,
    h("button", { type: "button", class: "small ghost", onclick: homeDialog }, t("common.edit")));

  const el = h("div", { class: "ptz-panel hidden", role: "group", "aria-label": t("ptz.title") },
    line, h("div", { class: "ptz-controls" }, pad, lens),
    h("label", { class: "ptz-row" }, t("ptz.speed"), speed, speedOut), presetBox, tourBox, homeBox);
  el.addEventListener("click", (e) => e.stopPropagation());

  async function refreshLock() {
    const url = base();
    if (!url) return;
    try { showLock((await get(url + "/ptz")).lock); } catch (_) { /* the next refresh tries again */ }
  }

  return {
    el,
    get open() { return !el.classList.contains("hidden"); },
    async show() {
      el.classList.remove("hidden");
      clearInterval(timer);
      let n = 0;
      timer = setInterval(() => { draw(); if (++n % (REFRESH_MS / 1000) === 0) refreshLock(); }, 1000);
      await Promise.all([refreshLock(), loadPresets(), loadTours(), loadHome()]);
    },
    hide() { release(); el.classList.add("hidden"); clearInterval(timer); timer = null; },
    // keyboard on the focused pane: arrows (pan/tilt), PageUp/PageDown (zoom)
    key(e, down) {
      const action = KEYS[e.key];
      if (!action || !getChannel()) return false;
      e.preventDefault();
      if (down && !e.repeat && moving !== action) press(action);
      else if (!down && moving === action) release();
      return true;
    },
    release,
    stop() { release(); clearInterval(timer); timer = null; },
  };
}

// Whether the console offers PTZ (the server still decides).
export function canPtz() {
  return !state.permissions || state.permissions.has("ptz.control");
}
