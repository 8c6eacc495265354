// The portal API: bearer token kept in sessionStorage (shared with the /live/{id} page), one error shape.
import { serverText } from "./i18n.js";

const TOKEN_KEY = "gbops.token";

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body || null; // the whole error answer (e.g. holder and seconds_left of 423 ptz_locked)
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

function query(params) {
  if (!params) return "";
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x)); else q.append(k, String(v));
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

export async function api(method, path, { body, params, auth = true } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const tok = token.get();
  if (auth && tok) headers["Authorization"] = "Bearer " + tok;
  let r;
  try {
    r = await fetch(path + query(params), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "network", serverText("网络错误 / network error") + ": " + err.message);
  }
  let data = null;
  const type = r.headers.get("content-type") || "";
  if (r.status !== 204) data = type.includes("json") ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const code = data && data.error ? data.error : "http_" + r.status;
    const message = data && data.message ? serverText(data.message) : "HTTP " + r.status;
    const err = new ApiError(r.status, code, message, data && typeof data === "object" ? data : null);
    if (r.status === 401 && auth) onUnauthorized(err);
    throw err;
  }
  return data;
}

export const get = (path, params) => api("GET", path, { params });
export const post = (path, body) => api("POST", path, { body: body ?? {} });
export const patch = (path, body) => api("PATCH", path, { body });
export const del = (path, params) => api("DELETE", path, { params });
export const put = (path, body) => api("PUT", path, { body });

// Fetch every page of a paged list ({total, items}) up to `max` items.
export async function getAll(path, params = {}, max = 5000) {
  const items = [];
  let offset = 0;
  for (;;) {
    const page = await get(path, { ...params, offset, limit: 500 });
    const got = page.items || [];
    items.push(...got);
    offset += got.length;
    if (!got.length || offset >= (page.total ?? offset) || items.length >= max) return items;
  }
}

// ------------------------------------------------------------------ server-sent events
// A live feed read with fetch(): EventSource cannot send the bearer token, and a token in the URL would end up
// in logs.  onEvent(name, data) for each event with JSON data, onState("open" | "closed" | "denied"); the
// feed reconnects after the server's retry delay until close().  Returns { close() }.
export function openEventStream(path, onEvent, onState = () => {}) {
  let stopped = false;
  let ctrl = null;
  let retry = 3000;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function handle(block) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const name = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
      if (name === "event") event = value;
      else if (name === "data") data.push(value);
      else if (name === "retry" && /^\d+$/.test(value)) retry = Number(value);
    }
    if (data.length) {
      try { onEvent(event, JSON.parse(data.join("\n"))); } catch (_) { /* a malformed event is skipped */ }
    }
  }

  (async () => {
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const r = await fetch(path, { headers: { Authorization: "Bearer " + (token.get() || ""),
                                                 Accept: "text/event-stream" }, signal: ctrl.signal });
        if (r.status === 401 || r.status === 403) { onState("denied"); return; }
        if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
        onState("open");
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            handle(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch (_) {
        if (stopped) return;
      }
      if (stopped) return;
      onState("closed");
      await sleep(retry);
    }
  })();
  return { close() { stopped = true; if (ctrl) ctrl.abort(); } };
}
