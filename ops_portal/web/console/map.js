// Channel map (issue 18): Leaflet served by the platform (/static/leaflet, fetched from npm by `make run`).
// Base maps are presets chosen in a select and remembered in this browser: the platform's own tile URL
// (GBOPS_MAP_TILE_URL, the default when set), none (a plain background: nothing fetched from the internet, the
// default otherwise), OpenStreetMap, Tianditu vector/satellite (CGCS2000 = WGS-84 at map scale; the user's key is
// kept in localStorage and only ever sent to Tianditu inside its tile URLs) and the GCJ-02 providers AutoNavi and
// Tencent, for which every WGS-84 position (channels, alarms) is converted by geo.js before it is placed; switching
// datum keeps the same ground in view.  Thousands of channels are clustered here: a grid of CELL-pixel squares in
// the projected plane of the current zoom, recomputed on every moveend (zooms end with one too), a cluster shows
// its count and its online share as a two-colour ring and zooms in when clicked; from zoom CLUSTER_MAX_ZOOM + 1
// on every channel is its own marker, coloured by its online state.  A side list (search, online filter) shows
// the same channels: clicking one centres the map on it and opens its popup; under 700 px it collapses above
// the map.  The page's own CSS is a constructed style sheet (the console's CSP allows no inline <style>).
import { alarmLayer } from "./alarms.js";
import { loadChannels } from "./data.js";
import { clear, dot, field, h, message, pageStyle } from "./dom.js";
import { DATUMS, fromDatum, toDatum } from "./geo.js";
import { extend, t } from "./i18n.js";
import { can } from "./session.js";

extend({
  "mapv.preset": "底图",
  "mapv.preset.platform": "平台配置的底图",
  "mapv.preset.none": "无底图（仅坐标）",
  "mapv.preset.osm": "OpenStreetMap（WGS-84）",
  "mapv.preset.tdt_vec": "天地图 矢量（CGCS2000）",
  "mapv.preset.tdt_img": "天地图 影像（CGCS2000）",
  "mapv.preset.amap_vec": "高德地图 矢量（GCJ-02）",
  "mapv.preset.amap_img": "高德地图 卫星（GCJ-02）",
  "mapv.preset.tencent": "腾讯地图（GCJ-02）",
  "mapv.tdt_key": "天地图密钥",
  "mapv.tdt_key_hint": "只保存在本浏览器，仅随瓦片请求发送给天地图",
  "mapv.need_key": "天地图需要密钥：在上方输入密钥后显示底图。",
  "mapv.plain": "未选择底图，仅显示坐标位置。",
  "mapv.gcj": "该底图使用 GCJ-02 坐标系：通道位置已由 WGS-84 换算后标注。",
  "mapv.tile_error": "部分底图瓦片加载失败（网络不通、密钥无效或访问受限）。",
  "mapv.list": "通道列表",
  "mapv.search": "搜索名称、编码或地址",
  "mapv.filter": "在线状态",
  "mapv.filter.all": "全部",
  "mapv.filter.online": "在线",
  "mapv.filter.offline": "离线",
  "mapv.shown": "{n} 个",
  "mapv.more": "仅列出前 {n} 个，共 {total} 个：请搜索缩小范围",
  "mapv.empty": "没有匹配的通道",
  "mapv.cluster": "{n} 个通道：在线 {on}，离线 {off}。点击放大",
  "mapv.attr.osm": "© OpenStreetMap 贡献者",
  "mapv.attr.tdt": "© 天地图",
  "mapv.attr.amap": "© 高德地图",
  "mapv.attr.tencent": "© 腾讯地图",
  "mapv.zoom_in": "放大",
  "mapv.zoom_out": "缩小",
}, {
  "mapv.preset": "Base map",
  "mapv.preset.platform": "Platform's base map",
  "mapv.preset.none": "None (positions only)",
  "mapv.preset.osm": "OpenStreetMap (WGS-84)",
  "mapv.preset.tdt_vec": "Tianditu vector (CGCS2000)",
  "mapv.preset.tdt_img": "Tianditu satellite (CGCS2000)",
  "mapv.preset.amap_vec": "AutoNavi vector (GCJ-02)",
  "mapv.preset.amap_img": "AutoNavi satellite (GCJ-02)",
  "mapv.preset.tencent": "Tencent Maps (GCJ-02)",
  "mapv.tdt_key": "Tianditu key",
  "mapv.tdt_key_hint": "Kept in this browser only, sent to Tianditu with its tile requests",
  "mapv.need_key": "Tianditu needs a key: enter it above to show the base map.",
  "mapv.plain": "No base map selected: positions only.",
  "mapv.gcj": "This base map uses GCJ-02: channel positions are converted from WGS-84.",
  "mapv.tile_error": "Some map tiles failed to load (no network, an invalid key or access refused).",
  "mapv.list": "Channels",
  "mapv.search": "Search name, id or address",
  "mapv.filter": "Status",
  "mapv.filter.all": "All",
  "mapv.filter.online": "Online",
  "mapv.filter.offline": "Offline",
  "mapv.shown": "{n}",
  "mapv.more": "Showing the first {n} of {total}: search to narrow the list",
  "mapv.empty": "No channel matches",
  "mapv.cluster": "{n} channels: {on} online, {off} offline. Click to zoom in",
  "mapv.attr.osm": "© OpenStreetMap contributors",
  "mapv.attr.tdt": "© Tianditu",
  "mapv.attr.amap": "© AutoNavi",
  "mapv.attr.tencent": "© Tencent Maps",
  "mapv.zoom_in": "Zoom in",
  "mapv.zoom_out": "Zoom out",
});

const PRESET_STORE = "gbops.map.preset";
const TDT_KEY_STORE = "gbops.map.tianditu_key";
const MAX_ZOOM = 18;
const CLUSTER_MAX_ZOOM = 16; // clusters up to this zoom, single markers above it
const CELL = 64; // cluster grid, screen pixels
const LIST_MAX = 300; // side list rows rendered at once
const NARROW = "(max-width: 700px)";

const tdt = (layer) => `https://t{s}.tianditu.gov.cn/${layer}_w/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0` +
  `&LAYER=${layer}&STYLE=default&TILEMATRIXSET=w&FORMAT=tiles&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}&tk={tk}`;
const AMAP = "https://webrd0{s}.is.autonavi.com/appmaptile?lang=zh_cn&size=1&scale=1&style=8&x={x}&y={y}&z={z}";
const AMAP_IMG = "https://webst0{s}.is.autonavi.com/appmaptile?style=6&x={x}&y={y}&z={z}";
const AMAP_ROADS = "https://webst0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}";
const TENCENT = "https://rt{s}.map.gtimg.com/realtimerender?z={z}&x={x}&y={-y}&type=vector&style=0";

// The tile presets: each draws in one datum; `key`: needs the Tianditu key.
const PRESETS = [
  { id: "none", label: "mapv.preset.none", datum: DATUMS.wgs84, layers: [] },
  { id: "osm", label: "mapv.preset.osm", datum: DATUMS.wgs84,
    layers: [{ url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png", attribution: "mapv.attr.osm" }] },
  { id: "tdt_vec", label: "mapv.preset.tdt_vec", datum: DATUMS.wgs84, key: true,
    layers: [{ url: tdt("vec"), subdomains: "01234567", attribution: "mapv.attr.tdt" },
             { url: tdt("cva"), subdomains: "01234567" }] },
  { id: "tdt_img", label: "mapv.preset.tdt_img", datum: DATUMS.wgs84, key: true,
    layers: [{ url: tdt("img"), subdomains: "01234567", attribution: "mapv.attr.tdt" },
             { url: tdt("cia"), subdomains: "01234567" }] },
  { id: "amap_vec", label: "mapv.preset.amap_vec", datum: DATUMS.gcj02,
    layers: [{ url: AMAP, subdomains: "1234", attribution: "mapv.attr.amap" }] },
  { id: "amap_img", label: "mapv.preset.amap_img", datum: DATUMS.gcj02,
    layers: [{ url: AMAP_IMG, subdomains: "1234", attribution: "mapv.attr.amap" },
             { url: AMAP_ROADS, subdomains: "1234" }] },
  { id: "tencent", label: "mapv.preset.tencent", datum: DATUMS.gcj02,
    layers: [{ url: TENCENT, subdomains: "0123", attribution: "mapv.attr.tencent" }] },
];

const CSS = `
.mapv { display: flex; flex-direction: column; height: calc(100vh - 92px); min-height: 480px; }
.mapv .page-head { margin-bottom: 8px; }
.mapv .mapv-bar { gap: 6px 14px; align-items: center; }
.mapv .mapv-bar .field { margin: 0; min-width: 0; flex-direction: row; align-items: center; gap: 6px; }
.mapv .mapv-bar select, .mapv .mapv-bar input { max-width: 100%; min-width: 0; }
.mapv #map-note .msg { margin: 0 0 8px; padding: 6px 10px; }
.mapv .mapv-body { flex: 1; min-height: 0; display: grid; grid-template-columns: 280px minmax(0, 1fr); gap: 12px; }
.mapv .mapv-side { padding: 10px 12px; min-height: 0; overflow: hidden; }
.mapv .mapv-side summary { font-weight: 600; cursor: pointer; margin-bottom: 8px; }
.mapv .mapv-side .field { display: flex; flex-direction: column; gap: 2px; margin-bottom: 6px; }
.mapv .mapv-side input, .mapv .mapv-side select { width: 100%; box-sizing: border-box; }
.mapv .mapv-side[open] { display: flex; flex-direction: column; }
.mapv .mapv-list { list-style: none; margin: 4px 0 0; padding: 0; overflow-y: auto; flex: 1; min-height: 80px; }
.mapv .mapv-item { display: grid; grid-template-columns: auto minmax(0, 1fr); gap: 0 8px; align-items: center;
  width: 100%; text-align: left; background: none; border: 0; border-bottom: 1px solid var(--line);
  padding: 6px 4px; cursor: pointer; color: inherit; font: inherit; }
.mapv .mapv-item:hover, .mapv .mapv-item:focus-visible { background: rgba(40, 110, 230, .08); }
.mapv .mapv-item .mapv-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.mapv .mapv-item .mono { grid-column: 2; font-size: 11px; overflow: hidden; text-overflow: ellipsis; }
.mapv .mapv-more { font-size: 12px; margin-top: 6px; }
.mapv .map-card { min-height: 0; height: 100%; }
.mapv .map { height: 100%; min-height: 0; }
.gb-cluster { --on: 0%; border-radius: 50%; display: flex; align-items: center; justify-content: center;
  background: conic-gradient(var(--ok) 0 var(--on), #8d96a3 var(--on) 100%);
  box-shadow: 0 1px 5px rgba(0, 0, 0, .45); cursor: pointer; }
.gb-cluster span { display: flex; align-items: center; justify-content: center; width: calc(100% - 10px);
  height: calc(100% - 10px); border-radius: 50%; background: #fff; color: #16202e; font-weight: 600; font-size: 12px; }
@media (max-width: 700px) {
  .mapv { height: auto; min-height: 0; }
  .mapv .mapv-bar .field { flex-direction: column; align-items: stretch; }
  .mapv .mapv-body { grid-template-columns: minmax(0, 1fr); }
  .mapv .mapv-list { max-height: 38vh; }
  .mapv .map-card { height: calc(100vh - 330px); min-height: 320px; }
}`;
const addStyle = pageStyle(CSS);

let leafletLoading = null;

function loadLeaflet() {
  if (window.L) return Promise.resolve(window.L);
  if (!leafletLoading) {
    leafletLoading = new Promise((resolve) => {
      if (!document.getElementById("leaflet-css")) {
        document.head.append(h("link", { rel: "stylesheet", href: "/static/leaflet/leaflet.css", id: "leaflet-css" }));
      }
      const s = document.createElement("script");
      s.src = "/static/leaflet/leaflet.js";
      s.onload = () => resolve(window.L || null);
      s.onerror = () => { leafletLoading = null; resolve(null); };
      document.head.append(s);
    });
  }
  return leafletLoading;
}

function tileUrl() {
  const meta = document.querySelector('meta[name="gbops-map-tile-url"]');
  const v = meta ? meta.content.trim() : "";
  return v && !v.includes("{{") ? v : "";
}

function stored(key) {
  try { return localStorage.getItem(key) || ""; } catch (_) { return ""; }
}

function store(key, value) {
  try { if (value) localStorage.setItem(key, value); else localStorage.removeItem(key); } catch (_) { /* private */ }
}

function popup(c) {
  const id = c.channel_id;
  return h("div", { class: "map-popup" },
    h("strong", null, c.name || id), h("div", { class: "mono" }, id),
    h("div", null, dot(c.online), " ", c.online ? t("common.online") : t("common.offline")),
    c.address ? h("div", { class: "muted" }, c.address) : null,
    h("div", { class: "tools" },
      can("live.view") ? h("a", { class: "btn small", href: `#/live?channel=${encodeURIComponent(id)}` +
        (c.device_id ? `&device=${encodeURIComponent(c.device_id)}` : "") }, t("tree.play")) : null,
      h("a", { class: "btn small ghost", href: `#/channel/${encodeURIComponent(id)}` +
               (c.device_id ? `?device=${encodeURIComponent(c.device_id)}` : "") }, t("tree.detail"))));
}

// Leaflet for a module that places WGS-84 markers (the alarm layer): its markers go through `shift` and are
// moved again by reproject() when the datum changes.
function shiftedLeaflet(L, shift) {
  const made = [];
  const SL = Object.create(L);
  SL.marker = (ll, options) => {
    const wgs = L.latLng(ll);
    const m = L.marker(shift(wgs.lat, wgs.lng), options);
    m.gbWgs = wgs;
    made.push(m);
    return m;
  };
  return { L: SL, reproject: () => { for (const m of made) m.setLatLng(shift(m.gbWgs.lat, m.gbWgs.lng)); } };
}

function clusterSize(n) { return n < 10 ? 30 : n < 100 ? 36 : n < 1000 ? 42 : 50; }

export async function mapView(root) {
  addStyle();
  const platformUrl = tileUrl();
  const presets = platformUrl
    ? [{ id: "platform", label: "mapv.preset.platform", datum: DATUMS.wgs84, layers: [{ url: platformUrl }] }, ...PRESETS]
    : PRESETS;
  const info = h("span", { class: "muted", id: "map-info" }, t("common.loading"));
  const box = h("div", { class: "map", id: "map" });
  const note = h("div", { id: "map-note" });
  const select = h("select", { id: "map-preset" },
    presets.map((p) => h("option", { value: p.id }, t(p.label))));
  const keyInput = h("input", { id: "map-tdt-key", type: "password", autocomplete: "off", spellcheck: "false",
                                value: stored(TDT_KEY_STORE), placeholder: t("mapv.tdt_key_hint") });
  const keyField = field(t("mapv.tdt_key"), keyInput);
  keyField.id = "map-tdt-key-field";
  const search = h("input", { id: "map-search", type: "search", placeholder: t("mapv.search") });
  const filter = h("select", { id: "map-filter" },
    ["all", "online", "offline"].map((v) => h("option", { value: v }, t(`mapv.filter.${v}`))));
  const list = h("ul", { class: "mapv-list", id: "map-list" });
  const more = h("div", { class: "mapv-more muted", id: "map-list-more" });
  const shown = h("span", { class: "muted", id: "map-list-count" });
  const wide = () => !window.matchMedia(NARROW).matches;
  const side = h("details", { class: "card mapv-side", id: "map-side", open: wide() },
    h("summary", null, t("mapv.list"), " ", shown),
    field(t("mapv.search"), search), field(t("mapv.filter"), filter), list, more);
  root.append(h("div", { class: "mapv" },
    h("div", { class: "page-head" }, h("h1", null, t("map.title")),
      h("div", { class: "tools mapv-bar" }, info, field(t("mapv.preset"), select), keyField)),
    note,
    h("div", { class: "mapv-body" }, side, h("section", { class: "card map-card" }, box))));

  const [L, channels] = await Promise.all([loadLeaflet(), loadChannels({ has_location: true })]);
  const located = channels.filter((c) => typeof c.longitude === "number" && typeof c.latitude === "number"
    && Math.abs(c.latitude) <= 90 && Math.abs(c.longitude) <= 180 && !(c.latitude === 0 && c.longitude === 0));
  info.textContent = located.length ? t("map.count", { n: located.length }) : t("map.none");
  if (!L) { note.append(message(t("map.missing"), "error")); return; }

  let datum = DATUMS.wgs84;
  const shift = (lat, lon) => toDatum(datum, lat, lon);
  const points = located.map((c) => ({
    c, key: `${c.device_id || ""}/${c.channel_id}`, wgs: [c.latitude, c.longitude], ll: [c.latitude, c.longitude],
    online: !!c.online, text: [c.name, c.channel_id, c.device_id, c.address].filter(Boolean).join(" ").toLowerCase(),
  }));
  let visible = points;

  const map = L.map(box, { zoomControl: false, worldCopyJump: true, maxZoom: MAX_ZOOM });
  L.control.zoom({ zoomInTitle: t("mapv.zoom_in"), zoomOutTitle: t("mapv.zoom_out") }).addTo(map);
  const clusterLayer = L.layerGroup().addTo(map);
  const markerLayer = L.layerGroup().addTo(map);
  const markers = new Map(); // key -> L.Marker, kept while off screen

  function stamp(p, m) {
    const el = m.getElement();
    if (!el) return;
    el.dataset.channel = p.c.channel_id;
    if (p.c.device_id) el.dataset.device = p.c.device_id;
    el.dataset.lat = String(p.ll[0]);
    el.dataset.lon = String(p.ll[1]);
  }

  function markerOf(p) {
    let m = markers.get(p.key);
    if (!m) {
      m = L.marker(p.ll, {
        title: p.c.name || p.c.channel_id, riseOnHover: true,
        icon: L.divIcon({ className: "gb-marker " + (p.online ? "on" : "off"), iconSize: [16, 16] }),
      }).bindPopup(() => popup(p.c));
      m.on("add", () => stamp(p, m));
      markers.set(p.key, m);
    } else {
      const at = m.getLatLng();
      if (at.lat !== p.ll[0] || at.lng !== p.ll[1]) { m.setLatLng(p.ll); stamp(p, m); }
    }
    return m;
  }

  function clusterMarker(cell, z) {
    const n = cell.pts.length;
    const on = cell.on;
    const size = clusterSize(n);
    const centre = map.unproject([cell.x / n, cell.y / n], z);
    const bounds = L.latLngBounds(cell.pts.map((p) => p.ll));
    const label = t("mapv.cluster", { n, on, off: n - on });
    const m = L.marker(centre, {
      title: label, keyboard: true, zIndexOffset: 500,
      icon: L.divIcon({ className: "gb-cluster", iconSize: [size, size], html: h("span", null, String(n)) }),
    });
    m.on("add", () => {
      const el = m.getElement();
      if (!el) return;
      el.style.setProperty("--on", `${(100 * on / n).toFixed(1)}%`);
      el.dataset.count = String(n);
      el.dataset.online = String(on);
      el.dataset.offline = String(n - on);
      el.setAttribute("aria-label", label);
    });
    m.on("click", () => {
      const target = Math.min(Math.max(map.getBoundsZoom(bounds.pad(0.2)), z + 1), MAX_ZOOM);
      map.setView(bounds.getCenter(), target);
    });
    return m;
  }

  let gone = false;  // the page was left: the map is removed

  // The grid clustering of the channels in (a padded) view at the current zoom.
  function render() {
    if (gone) return;
    const z = map.getZoom();
    box.dataset.zoom = String(z);
    const view = map.getBounds().pad(0.25);
    clusterLayer.clearLayers();
    const keep = new Set();
    const single = (p) => {
      keep.add(p.key);
      const m = markerOf(p);
      if (!markerLayer.hasLayer(m)) markerLayer.addLayer(m);
    };
    if (z > CLUSTER_MAX_ZOOM) {
      for (const p of visible) if (view.contains(p.ll)) single(p);
    } else {
      const cells = new Map();
      for (const p of visible) {
        if (!view.contains(p.ll)) continue;
        const pt = map.project(p.ll, z);
        const k = `${Math.floor(pt.x / CELL)}:${Math.floor(pt.y / CELL)}`;
        let cell = cells.get(k);
        if (!cell) { cell = { pts: [], on: 0, x: 0, y: 0 }; cells.set(k, cell); }
        cell.pts.push(p);
        cell.x += pt.x;
        cell.y += pt.y;
        if (p.online) cell.on += 1;
      }
      for (const cell of cells.values()) {
        if (cell.pts.length === 1) single(cell.pts[0]);
        else clusterLayer.addLayer(clusterMarker(cell, z));
      }
    }
    for (const [k, m] of markers) if (!keep.has(k) && markerLayer.hasLayer(m)) markerLayer.removeLayer(m);
  }

  // ---- base map presets
  let tiles = [];
  let tileErrorShown = false;
  const alarms = shiftedLeaflet(L, shift);

  let viewSet = false;
  function setDatum(next) {
    if (next === datum) return;
    if (!viewSet) {  // before the first view: the positions only
      datum = next;
      for (const p of points) p.ll = toDatum(datum, p.wgs[0], p.wgs[1]);
      return;
    }
    const centre = map.getCenter();
    const [wLat, wLon] = fromDatum(datum, centre.lat, centre.lng);
    datum = next;
    for (const p of points) p.ll = toDatum(datum, p.wgs[0], p.wgs[1]);
    alarms.reproject();
    map.setView(toDatum(datum, wLat, wLon), map.getZoom(), { animate: false });  // the same ground stays in view
    render();
  }

  function applyPreset(id) {
    const preset = presets.find((p) => p.id === id) || presets[0];
    select.value = preset.id;
    store(PRESET_STORE, preset.id);
    for (const layer of tiles) map.removeLayer(layer);
    tiles = [];
    tileErrorShown = false;
    clear(note);
    keyField.classList.toggle("hidden", !preset.key);
    const key = keyInput.value.trim();
    if (preset.id === "none") {
      note.append(message(platformUrl ? t("mapv.plain") : t("map.plain"), "info"));
    } else if (preset.key && !key) {
      note.append(message(t("mapv.need_key"), "info"));
    } else {
      tiles = preset.layers.map((spec) => L.tileLayer(spec.url, {
        maxZoom: MAX_ZOOM, subdomains: spec.subdomains || "abc", tk: key,
        attribution: spec.attribution ? t(spec.attribution) : undefined,
      }).on("tileerror", () => {
        if (tileErrorShown) return;
        tileErrorShown = true;
        note.append(message(t("mapv.tile_error"), "error"));
      }).addTo(map));
      for (const layer of tiles) layer.bringToBack();
    }
    box.classList.toggle("plain", !tiles.length);
    box.dataset.preset = preset.id;
    box.dataset.datum = preset.datum;
    if (preset.datum === DATUMS.gcj02) note.append(message(t("mapv.gcj"), "info"));
    setDatum(preset.datum);
  }

  // ---- the side list
  function applyFilter() {
    const q = search.value.trim().toLowerCase();
    const state = filter.value;
    visible = points.filter((p) => (!q || p.text.includes(q))
      && (state === "all" || (state === "online") === p.online));
    clear(list);
    for (const p of visible.slice(0, LIST_MAX)) {
      list.append(h("li", null, h("button", {
        type: "button", class: "mapv-item", dataset: { channel: p.c.channel_id, device: p.c.device_id || "" },
        onclick: () => focus(p),
      }, dot(p.online), h("span", { class: "mapv-name" }, p.c.name || p.c.channel_id),
      h("span", { class: "mono muted" }, p.c.channel_id))));
    }
    shown.textContent = t("mapv.shown", { n: visible.length });
    more.textContent = visible.length > LIST_MAX ? t("mapv.more", { n: LIST_MAX, total: visible.length })
      : visible.length ? "" : t("mapv.empty");
    render();
  }

  function focus(p) {
    if (!wide()) {  // a phone: the map, not the list, is what the user wants to see now
      side.open = false;
      box.scrollIntoView({ block: "nearest" });
    }
    map.invalidateSize();
    map.setView(p.ll, Math.max(map.getZoom(), CLUSTER_MAX_ZOOM + 1), { animate: false });
    render();
    const m = markers.get(p.key);
    if (m) m.openPopup();
  }

  let typing = null;
  search.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(applyFilter, 150); });
  filter.addEventListener("change", applyFilter);
  select.addEventListener("change", () => applyPreset(select.value));
  keyInput.addEventListener("change", () => {
    store(TDT_KEY_STORE, keyInput.value.trim());
    applyPreset(select.value);
  });
  side.addEventListener("toggle", () => { if (!gone) map.invalidateSize(); });

  const remembered = stored(PRESET_STORE);
  applyPreset(presets.some((p) => p.id === remembered) ? remembered : presets[0].id);
  if (points.length) {  // the view first: Leaflet adds markers to a map only once it has one
    map.fitBounds(L.latLngBounds(points.map((p) => p.ll)).pad(0.2), { maxZoom: CLUSTER_MAX_ZOOM + 1 });
  } else {
    map.setView(toDatum(datum, 34.27, 108.94), 5); // Xi'an
  }
  viewSet = true;
  map.on("moveend", render);
  applyFilter();
  const stopAlarms = await alarmLayer(alarms.L, map, located);  // unacknowledged alarms, and new ones as they come
  return () => {
    clearTimeout(typing);
    stopAlarms();
    // Leaflet's resize handling fires "moveend" from a 200 ms timer that remove() does not cancel: the page's own
    // listeners go first, so nothing of this page runs on the removed map (its panes are gone)
    gone = true;
    map.off();
    map.remove();
  };
}
