// Coordinate datums of the map's tile providers (issue 18).  Channels report WGS-84 (GB/T 28181 catalogs carry GPS
// positions); OpenStreetMap and Tianditu (CGCS2000, within centimetres of WGS-84 at map scale) draw in the same
// datum, while the Chinese commercial providers (AutoNavi / Gaode, Tencent) draw in GCJ-02, the obfuscated datum
// of GB 20263, offset by a few hundred metres inside China.  wgs84ToGcj02 implements the published forward
// transform: the Krasovsky-1940 ellipsoid and the two polynomial-plus-sine series for the latitude and longitude
// offsets, evaluated on the position relative to (105 E, 35 N); positions outside China are not shifted.
// Pure functions, no DOM: the tests run this module with node.

const KRASOVSKY_A = 6378245.0; // semi-major axis (m)
const KRASOVSKY_EE = 0.00669342162296594323; // first eccentricity squared
const DEG = Math.PI / 180;

// The rough rectangle in which the GCJ-02 offset applies (the commonly used bounding box of China).
export function outOfChina(lat, lon) {
  return lon < 72.004 || lon > 137.8347 || lat < 0.8293 || lat > 55.8271;
}

// The sine series shared by both offsets: the same periodic terms on x, then the axis-specific ones.
function waves(x, a, b, c, d, e, f) {
  let s = (20 * Math.sin(6 * x * Math.PI) + 20 * Math.sin(2 * x * Math.PI)) * 2 / 3;
  s += (a * Math.sin(b * Math.PI) + c * Math.sin(b / 3 * Math.PI)) * 2 / 3;
  s += (d * Math.sin(b / 12 * Math.PI) + e * Math.sin(b / f * Math.PI)) * 2 / 3;
  return s;
}

// Latitude offset (before scaling to degrees) of the point (x, y) = (lon - 105, lat - 35).
function latOffset(x, y) {
  const base = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  return base + waves(x, 20, y, 40, 160, 320, 30);
}

// Longitude offset (before scaling to degrees) of the point (x, y).
function lonOffset(x, y) {
  const base = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  return base + waves(x, 20, x, 40, 150, 300, 30);
}

// WGS-84 (lat, lon) in degrees -> GCJ-02 [lat, lon]; unchanged outside China and for non-numbers.
export function wgs84ToGcj02(lat, lon) {
  if (typeof lat !== "number" || typeof lon !== "number" || !isFinite(lat) || !isFinite(lon) || outOfChina(lat, lon)) {
    return [lat, lon];
  }
  const x = lon - 105.0, y = lat - 35.0;
  const rad = lat * DEG;
  const sin = Math.sin(rad);
  const w = 1 - KRASOVSKY_EE * sin * sin; // (1 - e² sin² φ)
  const sw = Math.sqrt(w);
  // meridional radius of curvature M = a(1 - e²) / w^1.5; prime vertical N = a / sqrt(w)
  const dLat = (latOffset(x, y) * 180) / ((KRASOVSKY_A * (1 - KRASOVSKY_EE)) / (w * sw) * Math.PI);
  const dLon = (lonOffset(x, y) * 180) / (KRASOVSKY_A / sw * Math.cos(rad) * Math.PI);
  return [lat + dLat, lon + dLon];
}

// The datums a tile preset can draw in, and the conversion of a WGS-84 position to each.
export const DATUMS = Object.freeze({ wgs84: "wgs84", gcj02: "gcj02" });

export function toDatum(datum, lat, lon) {
  return datum === DATUMS.gcj02 ? wgs84ToGcj02(lat, lon) : [lat, lon];
}

// GCJ-02 -> WGS-84 by fixed-point iteration of the forward transform (the offset changes slowly: five steps reach
// well under a millimetre); used to keep the same ground in view when the map switches datum.
export function gcj02ToWgs84(lat, lon) {
  if (typeof lat !== "number" || typeof lon !== "number" || !isFinite(lat) || !isFinite(lon) || outOfChina(lat, lon)) {
    return [lat, lon];
  }
  let wLat = lat, wLon = lon;
  for (let i = 0; i < 5; i++) {
    const [gLat, gLon] = wgs84ToGcj02(wLat, wLon);
    wLat += lat - gLat;
    wLon += lon - gLon;
  }
  return [wLat, wLon];
}

export function fromDatum(datum, lat, lon) {
  return datum === DATUMS.gcj02 ? gcj02ToWgs84(lat, lon) : [lat, lon];
}
