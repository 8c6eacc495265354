// Channel map: Leaflet served by the platform (/static/leaflet, fetched from npm by `make run`), tiles only when
// GBOPS_MAP_TILE_URL is set (a plain background otherwise: nothing is fetched from the internet).
import { alarmLayer } from "./alarms.js";
import { loadChannels } from "./data.js";
import { dot, h, message } from "./dom.js";
import { t } from "./i18n.js";
import { can } from "./session.js";

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

export async function mapView(root) {
  const info = h("span", { class: "muted", id: "map-info" }, t("common.loading"));
  const box = h("div", { class: "map", id: "map" });
  const note = h("div");
  root.append(h("div", { class: "page-head" }, h("h1", null, t("map.title")), h("div", { class: "tools" }, info)),
    note, h("section", { class: "card map-card" }, box));
  const [L, channels] = await Promise.all([loadLeaflet(), loadChannels({ has_location: true })]);
  const located = channels.filter((c) => typeof c.longitude === "number" && typeof c.latitude === "number"
    && Math.abs(c.latitude) <= 90 && Math.abs(c.longitude) <= 180 && !(c.latitude === 0 && c.longitude === 0));
  info.textContent = located.length ? t("map.count", { n: located.length }) : t("map.none");
  if (!L) { note.append(message(t("map.missing"), "error")); return; }
  const tiles = tileUrl();
  const map = L.map(box, { attributionControl: !!tiles, zoomControl: true, worldCopyJump: true });
  if (tiles) {
    L.tileLayer(tiles, { maxZoom: 19 }).addTo(map);
  } else {
    box.classList.add("plain");
    note.append(message(t("map.plain"), "info"));
  }
  if (located.length) {  // the view first: Leaflet adds markers to a map only once it has one
    map.fitBounds(L.latLngBounds(located.map((c) => [c.latitude, c.longitude])).pad(0.2), { maxZoom: 17 });
  } else {
    map.setView([34.27, 108.94], 5); // Xi'an
  }
  for (const c of located) {
    const marker = L.marker([c.latitude, c.longitude], {
      title: c.name || c.channel_id,
      icon: L.divIcon({ className: "gb-marker " + (c.online ? "on" : "off"), iconSize: [16, 16] }),
    }).bindPopup(() => popup(c)).addTo(map);
    const el = marker.getElement();
    if (el) el.dataset.channel = c.channel_id;
  }
  const stopAlarms = await alarmLayer(L, map, located);  // unacknowledged alarms, and new ones as they come
  return () => { stopAlarms(); map.remove(); };
}
