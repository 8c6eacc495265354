// 行政区划 (issue 18): GB/T 2260 civil codes in words.  loadRegions() fetches GET /api/regions once per page
// load (the browser revalidates it with its ETag); regionName / regionText / regionEl then name a civil code of
// 2, 4, 6 or 8 digits, or a GB/T 28181 id by its first 8 digits, as gbcore/regions.py does: the table's key is
// the code padded with zeros to 6 digits (2, 4) or its first 6 digits (8, 20).  A place name is a proper noun:
// the English console shows it as it is, with the code, in an element marked data-place.
import { get } from "./api.js";
import { h } from "./dom.js";
import { extend, t } from "./i18n.js";

extend({
  "region.text": "{name}（{code}）",
}, {
  "region.text": "{name} ({code})",
});

let table = null; // code -> full name, once loaded
let pending = null;

// The table, fetched once; a failure (no login yet, the network) leaves the codes as digits and the next
// call tries again.
export function loadRegions() {
  if (table) return Promise.resolve(table);
  if (!pending) {
    pending = get("/api/regions")
      .then((r) => { table = (r && r.items) || {}; return table; })
      .catch(() => ({}))
      .finally(() => { pending = null; });
  }
  return pending;
}

// The 6-digit table key of a code, or null when it is no civil code.
export function regionKey(code) {
  const s = code == null ? "" : String(code);
  if (!/^\d+$/.test(s)) return null;
  if (s.length === 2 || s.length === 4) return s.padEnd(6, "0");
  if (s.length === 6 || s.length === 8 || s.length === 20) return s.slice(0, 6);
  return null;
}

// The full name ("陕西省西安市雁塔区"), or null when the code is unknown or the table is not loaded.
export function regionName(code) {
  const key = regionKey(code);
  if (!key || !table) return null;
  return Object.prototype.hasOwnProperty.call(table, key) ? table[key] : null;
}

// The name with the code ("陕西省西安市雁塔区（610113）"); the code alone when it has no name.
export function regionText(code) {
  const name = regionName(code);
  const s = code == null ? "" : String(code);
  return name ? t("region.text", { name, code: s }) : s;
}

// regionText in a <span data-place="code">; attrs are added to it (class, id, dataset...).
export function regionEl(code, attrs = {}) {
  const s = code == null ? "" : String(code);
  const name = regionName(s);
  const dataset = { ...(attrs.dataset || {}), place: s };
  return h("span", { ...attrs, dataset, class: [attrs.class, name ? null : "mono"].filter(Boolean).join(" ") || null },
    regionText(s));
}
