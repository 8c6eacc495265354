// Alarms: the alarm page (报警) with its filters, a live list fed by the server's event stream (a beep through
// WebAudio and a desktop notification when the user allowed them), acknowledging with a note; and the alarm
// markers of the map.  The feed is Server-Sent Events read with fetch(): EventSource cannot send the bearer
// token, and a token in the URL would end up in logs.
import { ApiError, get, openEventStream, post } from "./api.js";
import { clear, field, fmtTime, fromLocalInput, h, message, modal, toast } from "./dom.js";
import { t } from "./i18n.js";
import { can } from "./session.js";

const PAGE = 100;

export function methodLabel(a) {
  const key = `alarm.method.${a.method}`;
  const m = t(key);
  const typeKey = `alarm.type.${a.method}.${a.type}`;
  const ty = a.type != null ? t(typeKey) : null;
  return [m === key ? String(a.method ?? "—") : m, ty && ty !== typeKey ? ty : a.type != null ? `#${a.type}` : null]
    .filter(Boolean).join(" · ");
}

export function priorityLabel(p) {
  const key = `alarm.priority.${p}`;
  const text = t(key);
  return text === key ? String(p ?? "—") : text;
}

// ------------------------------------------------------------------ the live feed
// onAlarm(alarm) for each alarm event, onState("open" | "closed" | "denied"); returns { close() }.
export function openAlarmFeed(onAlarm, onState = () => {}) {
  return openEventStream("/api/alarms/stream", (event, data) => { if (event === "alarm") onAlarm(data); }, onState);
}

// ------------------------------------------------------------------ sound and notification
let audio = null;
export function beep() {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
    const now = audio.currentTime;
    for (const [at, freq] of [[0, 880], [0.22, 660]]) {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, now + at);
      gain.gain.exponentialRampToValueAtTime(0.2, now + at + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, now + at + 0.2);
      osc.connect(gain).connect(audio.destination);
      osc.start(now + at);
      osc.stop(now + at + 0.21);
    }
  } catch (_) { /* no sound available */ }
}

function notify(a) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  try {
    new Notification(`${t("alarm.notify_title")} · ${priorityLabel(a.priority)}`, {
      body: `${a.description || methodLabel(a)}\n${a.channel_id || a.device_id} · ${fmtTime(a.time)}`,
      tag: "gbops-alarm-" + a.id,
    });
  } catch (_) { /* some browsers only notify from a service worker */ }
}

// ------------------------------------------------------------------ the page
function matches(a, f) {
  if (f.device_id && a.device_id !== f.device_id) return false;
  if (f.channel_id && a.channel_id !== f.channel_id) return false;
  if (f.priority && String(a.priority) !== String(f.priority)) return false;
  const at = Date.parse(a.time || "");
  if (f.start && !(at >= Date.parse(f.start))) return false;
  if (f.end && !(at < Date.parse(f.end))) return false;
  return true;
}

export async function alarmsView(root) {
  const deviceIn = h("input", { id: "alarm-device", placeholder: t("field.device_id"), "aria-label": t("field.device_id"), maxlength: 32, size: 22 });
  const channelIn = h("input", { id: "alarm-channel", placeholder: t("field.channel_id"), "aria-label": t("field.channel_id"), maxlength: 32, size: 22 });
  const startIn = h("input", { id: "alarm-start", type: "datetime-local" });
  const endIn = h("input", { id: "alarm-end", type: "datetime-local" });
  const prioSel = h("select", { id: "alarm-priority", "aria-label": t("alarm.priority") }, h("option", { value: "" }, t("alarm.all_priorities")),
    [1, 2, 3, 4].map((p) => h("option", { value: p }, priorityLabel(p))));
  const soundBox = h("input", { type: "checkbox", id: "alarm-sound", checked: localStorage.getItem("gbops.alarm.sound") !== "off" });
  soundBox.addEventListener("change", () => {
    localStorage.setItem("gbops.alarm.sound", soundBox.checked ? "on" : "off");
    if (soundBox.checked) beep();
  });
  const notifyBtn = "Notification" in window && Notification.permission === "default"
    ? h("button", { type: "button", class: "small", id: "alarm-notify", onclick: async () => {
      await Notification.requestPermission();
      notifyBtn.remove();
    } }, t("alarm.allow_notify")) : null;
  const live = h("span", { class: "badge", id: "alarm-live" }, t("alarm.connecting"));
  const body = h("tbody");
  const info = h("div", { class: "muted", id: "alarm-count" });
  const filters = () => ({ device_id: deviceIn.value.trim() || null, channel_id: channelIn.value.trim() || null,
                           start: fromLocalInput(startIn.value), end: fromLocalInput(endIn.value),
                           priority: prioSel.value || null });
  let offset = 0;
  let total = 0;
  let shown = 0;
  const count = () => {
    info.textContent = t("common.page", { from: shown ? offset + 1 : 0, to: offset + shown, total });
  };

  function row(a, fresh = false) {
    const status = a.acknowledged
      ? h("span", { class: "badge on", title: a.note || "" }, t("alarm.acked_by", { name: a.acknowledged_by || "—" }),
          a.note ? ` · ${a.note}` : "")
      : h("button", { type: "button", class: "small primary", dataset: { ack: a.id }, onclick: () => ackDialog(a) },
          t("alarm.ack"));
    return h("tr", { class: "alarm-row p" + (a.priority || 0) + (fresh ? " fresh" : "") + (a.acknowledged ? "" : " open"),
                     dataset: { alarm: a.id } },
      h("td", null, fmtTime(a.time)),
      h("td", null, h("span", { class: "badge prio p" + (a.priority || 0) }, priorityLabel(a.priority))),
      h("td", null, methodLabel(a)),
      h("td", null, a.description || "—"),
      h("td", { class: "mono" }, a.channel_id || a.device_id, a.channel_id ? h("div", { class: "muted" }, a.device_id) : null),
      h("td", null, can("alarm.ack") || a.acknowledged ? status : "—"));
  }

  function ackDialog(a) {
    const note = h("textarea", { name: "note", maxlength: 500, rows: 3, id: "alarm-note" });
    modal(t("alarm.ack_title"), (b) => b.append(
      h("p", null, `${priorityLabel(a.priority)} · ${methodLabel(a)} · ${fmtTime(a.time)}`),
      field(t("alarm.note"), note)),
    async () => {
      const done = await post(`/api/alarms/${a.id}/ack`, { note: note.value });
      const tr = body.querySelector(`tr[data-alarm="${CSS.escape(String(a.id))}"]`);
      if (tr) tr.replaceWith(row(done));
      toast(t("alarm.acked"), "ok");
    }, { saveLabel: t("alarm.ack") });
  }

  async function load() {
    const f = filters();
    const page = await get("/api/alarms", { ...f, offset, limit: PAGE });
    clear(body).append(...(page.items.length ? page.items.map((a) => row(a))
      : [h("tr", null, h("td", { colspan: 6, class: "empty muted" }, t("alarm.none")))]));
    total = page.total;
    shown = page.items.length;
    count();
    prev.disabled = offset === 0;
    next.disabled = offset + page.items.length >= page.total;
  }
  const prev = h("button", { type: "button", class: "small", onclick: () => { offset = Math.max(0, offset - PAGE); load(); } }, t("common.prev"));
  const next = h("button", { type: "button", class: "small", onclick: () => { offset += PAGE; load(); } }, t("common.next"));
  const search = h("button", { type: "button", class: "primary", id: "alarm-search", onclick: () => {
    offset = 0;
    load().catch((err) => toast(err.message, "error"));
  } }, t("common.search"));

  root.append(
    h("div", { class: "page-head" }, h("h1", null, t("nav.alarms")),
      h("div", { class: "tools" }, live, h("label", { class: "check" }, soundBox, t("alarm.sound")), notifyBtn)),
    h("section", { class: "card filters" }, deviceIn, channelIn,
      h("label", null, t("alarm.from"), " ", startIn), h("label", null, t("alarm.to"), " ", endIn), prioSel, search),
    h("section", { class: "card" },
      h("table", { class: "table", id: "alarm-table" },
        h("thead", null, h("tr", null, h("th", null, t("field.time")), h("th", null, t("alarm.priority")),
          h("th", null, t("alarm.kind")), h("th", null, t("alarm.description")), h("th", null, t("alarm.source")),
          h("th", null, t("alarm.status")))),
        body),
      h("div", { class: "tools pager" }, info, prev, next)));
  try {
    await load();
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) throw err;
    root.append(message(err.message, "error"));
  }

  const feed = openAlarmFeed((a) => {
    if (offset !== 0 || !matches(a, filters())) return;
    const empty = body.querySelector("td.empty");
    if (empty) empty.parentElement.remove();
    body.prepend(row(a, true));
    total += 1;
    shown += 1;
    count();
    if (soundBox.checked) beep();
    notify(a);
  }, (st) => {
    live.textContent = t("alarm.live." + st);
    live.className = "badge " + (st === "open" ? "on" : "off");
  });
  return () => feed.close();
}

// ------------------------------------------------------------------ the map
// Unacknowledged alarms as markers (their own position, else their channel's), new ones as they come.
export async function alarmLayer(L, map, channels) {
  if (!can("alarm.read")) return () => {};
  const where = new Map(channels.map((c) => [`${c.device_id}/${c.channel_id}`, c]));
  const layer = L.layerGroup().addTo(map);
  function place(a) {
    let lat = a.latitude, lon = a.longitude;
    if (typeof lat !== "number" || typeof lon !== "number" || (lat === 0 && lon === 0)) {
      const c = where.get(`${a.device_id}/${a.channel_id}`);
      if (!c) return;
      lat = c.latitude; lon = c.longitude;
    }
    const marker = L.marker([lat, lon], {
      title: a.description || methodLabel(a), zIndexOffset: 1000,
      icon: L.divIcon({ className: "gb-alarm p" + (a.priority || 0), iconSize: [22, 22] }),
    }).bindPopup(() => h("div", { class: "map-popup" }, h("strong", null, priorityLabel(a.priority), " · ", methodLabel(a)),
      h("div", null, a.description || ""), h("div", { class: "mono" }, a.channel_id || a.device_id),
      h("div", { class: "muted" }, fmtTime(a.time)), h("a", { class: "btn small", href: "#/alarms" }, t("nav.alarms"))));
    marker.addTo(layer);
    const el = marker.getElement();
    if (el) el.dataset.alarm = a.id;
  }
  try {
    const page = await get("/api/alarms", { limit: 200 });
    page.items.filter((a) => !a.acknowledged).forEach(place);
  } catch (_) { /* the map still shows the channels */ }
  const feed = openAlarmFeed(place);
  return () => feed.close();
}
