// Small DOM helpers: elements are built with h(), never from HTML strings, so data cannot inject markup.
import { getLang, t } from "./i18n.js";

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "value") el.value = v;
      else if (k === "checked") el.checked = !!v;
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }

// Every time a person reads is Beijing time, whatever the browser's or the host's zone (storage is UTC).
export const TIME_ZONE = "Asia/Shanghai";
const TZ_OFFSET = "+08:00"; // Asia/Shanghai has no daylight saving time

export function fmtTime(value) {
  if (!value) return "—";
  const d = value instanceof Date ? value : new Date(value);
  if (isNaN(d)) return String(value);
  return d.toLocaleString(getLang() === "en" ? "en-GB" : "zh-CN", { hour12: false, timeZone: TIME_ZONE });
}

// "HH:MM" of an instant in Beijing time.
export function fmtClock(value) {
  const d = value instanceof Date ? value : new Date(value);
  return d.toLocaleTimeString("en-GB", { hour12: false, timeZone: TIME_ZONE, hour: "2-digit", minute: "2-digit" });
}

export function fmtPercent(x) {
  if (x === null || x === undefined || isNaN(x)) return "—";
  return (x * 100).toFixed(x >= 0.9995 || x === 0 ? 0 : 1) + "%";
}

export function dot(online) {
  return h("span", { class: "dot " + (online ? "on" : "off"), title: online ? t("common.online") : t("common.offline") });
}

export function badge(text, kind = "") { return h("span", { class: "badge " + kind }, text); }

export function message(text, kind = "info") { return h("div", { class: "msg " + kind, role: kind === "error" ? "alert" : "status" }, text); }

let toastTimer = null;
export function toast(text, kind = "info") {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = "toast show " + kind;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = "toast"; }, kind === "error" ? 6000 : 3000);
}

// A modal dialog: build(body) fills the body; onSave(form) returns true/undefined to close, false to stay.
export function modal(title, build, onSave, { saveLabel } = {}) {
  const dlg = h("dialog", { class: "modal" });
  const error = h("div", { class: "msg error hidden", role: "alert" });
  const form = h("form", { method: "dialog" });
  const body = h("div", { class: "modal-body" });
  build(body, form);
  const save = h("button", { type: "submit", class: "primary" }, saveLabel || t("common.save"));
  const cancel = h("button", { type: "button", onclick: () => dlg.close() }, t("common.cancel"));
  form.append(h("h2", null, title), body, error, h("div", { class: "modal-actions" }, cancel, onSave ? save : null));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.classList.add("hidden");
    save.disabled = true;
    try {
      const keep = await onSave(form);
      if (keep !== false) dlg.close();
    } catch (err) {
      error.textContent = err.message || String(err);
      error.classList.remove("hidden");
    } finally {
      save.disabled = false;
    }
  });
  dlg.append(form);
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

export function field(label, input, hint) {
  return h("label", { class: "field" }, h("span", { class: "label" }, label), input, hint ? h("small", null, hint) : null);
}

// datetime-local <-> RFC 3339
export function toLocalInput(value) {
  if (!value) return "";
  const d = new Date(value);
  if (isNaN(d)) return "";
  // the wall time in Beijing, as a datetime-local input shows it
  const b = new Date(d.getTime() + 8 * 3600e3);
  return b.toISOString().slice(0, 16);
}
// a datetime-local value is Beijing wall time
export function fromLocalInput(value) { return value ? new Date(value + TZ_OFFSET).toISOString() : null; }

// A page's own style sheet, added once: a constructed sheet is allowed under the console's CSP ("style-src 'self'"),
// where an inline <style> is not. Returns the function a page calls when it mounts.
export function pageStyle(css) {
  let added = false;
  return () => {
    if (added) return;
    added = true;
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(css);
      document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    } catch (_) { /* an old browser: the page works unstyled */ }
  };
}
