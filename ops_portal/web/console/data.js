// Loading and normalising the organisation/device/channel tree (GET /api/org/tree, scoped by the server;
// without that route: devices and their channels under one root).
import { ApiError, get, getAll } from "./api.js";
import { t } from "./i18n.js";

// node: {key, type: "org"|"device"|"channel", id, name, online, children, total, up, raw}
function channelNode(c, deviceId) {
  const id = c.channel_id ?? c.id;
  const dev = c.device_id ?? deviceId ?? null;
  // a channel id is unique only within its device: the key names both
  return { key: "c:" + (dev ? dev + "/" : "") + id, type: "channel", id, name: c.name || id, online: !!c.online,
           deviceId: dev, children: [], raw: c };
}

function deviceNode(d) {
  const id = d.device_id ?? d.id;
  const chans = (d.channels || []).map((c) => channelNode(c, id));
  return { key: "d:" + id, type: "device", id, name: d.name || id, online: !!d.online, children: chans, raw: d };
}

function orgNode(n) {
  const kids = [];
  for (const c of n.children || n.nodes || []) kids.push(orgNode(c));
  for (const d of n.devices || []) kids.push(deviceNode(d));
  for (const c of n.channels || []) kids.push(channelNode(c));
  return { key: "o:" + (n.id ?? n.code ?? n.name), type: "org", id: n.id, code: n.code, name: n.name || String(n.id),
           kind: n.kind, online: false, children: kids, raw: n };
}

function count(node) {
  if (node.type === "channel") { node.total = 1; node.up = node.online ? 1 : 0; return node; }
  let total = 0, up = 0;
  for (const c of node.children) { count(c); total += c.total; up += c.up; }
  node.total = total; node.up = up;
  if (node.type === "org" && node.raw) {  // trust the server's own counts where it gives them
    const r = node.raw;
    const st = r.total_channels ?? r.channels_total;
    const so = r.total_channels_online ?? r.channels_online;
    if (typeof st === "number" && typeof so === "number" && st >= total) { node.total = st; node.up = so; }
  }
  return node;
}

// GET /api/org/tree?members=true: flat lists; nodes name their parent_id, devices and channels their org_node_id.
function flatTree(data) {
  const byId = new Map();
  for (const n of data.nodes || []) {
    byId.set(n.id, { key: "o:" + n.id, type: "org", id: n.id, code: n.code, name: n.name || String(n.id), kind: n.kind,
                     online: false, children: [], raw: n, inScope: n.in_scope !== false });
  }
  const roots = [];
  for (const n of data.nodes || []) {
    const node = byId.get(n.id);
    if (n.parent_id != null && byId.has(n.parent_id)) byId.get(n.parent_id).children.push(node); else roots.push(node);
  }
  const unassigned = { key: "o:unassigned", type: "org", id: null, name: t("tree.unassigned"), online: false,
                       children: [], raw: null };
  const devices = new Map();
  for (const d of data.devices || []) {
    const node = deviceNode(d);
    devices.set(node.id, node);
    (byId.get(d.org_node_id) || unassigned).children.push(node);
  }
  for (const c of data.channels || []) {
    const node = channelNode(c);
    const dev = devices.get(c.device_id);
    if (dev && (dev.raw.org_node_id ?? null) === (c.org_node_id ?? null)) dev.children.push(node);
    else (byId.get(c.org_node_id) || unassigned).children.push(node);
  }
  for (const n of byId.values()) n.children.sort((a, b) => (a.type === b.type ? 0 : a.type === "org" ? -1 : 1));
  if (unassigned.children.length) roots.push(unassigned);
  return roots;
}

export function normaliseTree(data) {
  if (data && Array.isArray(data.nodes) && (data.unassigned || data.nodes.some((n) => n.parent_id !== undefined))) {
    return flatTree(data).map(count);
  }
  const roots = [];
  const list = Array.isArray(data) ? data : (data.nodes || data.items || data.roots || data.children || []);
  for (const n of list) roots.push(orgNode(n));
  const extra = [];
  for (const d of data.devices || []) extra.push(deviceNode(d));
  for (const c of data.channels || []) extra.push(channelNode(c));
  if (extra.length) {
    roots.push({ key: "o:unassigned", type: "org", id: null, name: t("tree.unassigned"), online: false,
                 children: extra, raw: null });
  }
  return roots.map(count);
}

async function fallbackTree() {
  const devices = await getAll("/api/devices");
  const withChannels = await Promise.all(devices.map(async (d) => {
    try { return { ...d, channels: (await get(`/api/devices/${encodeURIComponent(d.device_id)}/channels`)).items }; }
    catch (_) { return { ...d, channels: [] }; }
  }));
  return [count({ key: "o:all", type: "org", id: null, name: t("common.all"), online: false,
                  children: withChannels.map(deviceNode), raw: null })];
}

export async function loadTree() {
  try {
    return normaliseTree(await get("/api/org/tree", { members: true }));
  } catch (err) {
    if (err instanceof ApiError && (err.status === 404 || err.status === 405)) return fallbackTree();
    throw err;
  }
}

export function walk(nodes, fn, parents = []) {
  for (const n of nodes) {
    fn(n, parents);
    walk(n.children || [], fn, [...parents, n]);
  }
}

export function channelsOf(nodes) {
  const out = new Map();
  walk(nodes, (n, parents) => {
    if (n.type !== "channel") return;
    const dev = [...parents].reverse().find((p) => p.type === "device");
    if (!n.deviceId && dev) n.deviceId = dev.id;
    out.set(n.id, n);
  });
  return [...out.values()];
}

// Channels with their coordinates: GET /api/channels (scoped), or every device's channel list.
export async function loadChannels(params = {}) {
  try {
    return await getAll("/api/channels", params);
  } catch (err) {
    if (!(err instanceof ApiError && (err.status === 404 || err.status === 405))) throw err;
  }
  const devices = await getAll("/api/devices");
  const lists = await Promise.all(devices.map((d) => get(`/api/devices/${encodeURIComponent(d.device_id)}/channels`)
    .then((r) => r.items.map((c) => ({ ...c, device_id: c.device_id ?? d.device_id }))).catch(() => [])));
  return lists.flat();
}

// The organisation tree's nodes (GET /api/org/tree `nodes`) in display order: [node, depth] pairs, parents first,
// a node whose parent is not among them at the top.
export function orderedOrgNodes(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const kids = new Map();
  const roots = [];
  for (const n of nodes) {
    if (n.parent_id != null && byId.has(n.parent_id)) {
      if (!kids.has(n.parent_id)) kids.set(n.parent_id, []);
      kids.get(n.parent_id).push(n);
    } else roots.push(n);
  }
  const out = [];
  const walk = (n, depth) => { out.push([n, depth]); for (const c of kids.get(n.id) || []) walk(c, depth + 1); };
  roots.forEach((n) => walk(n, 0));
  return out;
}
