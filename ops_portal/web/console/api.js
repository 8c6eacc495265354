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
