// 组织管理 (issue 18): the organisation tree editor.  The tree of /api/org/tree (expand / collapse, arrow keys,
// role="tree"), each node with its kind, civil code in words and its device / channel counts; create a child,
// rename, delete (the API's safeguard said in words, confirmed in a dialog), move a node by drag and drop onto
// another node or by the keyboard-accessible "移动到..." dialog (a move into the node's own subtree is refused
// here, before the API would say org_cycle).  The right-hand panel shows the selected node's devices
// (/api/devices?org_node_id=, assigned to the node itself) and channels (/api/channels?org_node_id=, its
// subtree), assigns devices found by a search (POST /api/org/nodes/{id}/members), and a device row dragged onto
// a tree node is assigned to that node.  Writes need org.manage: without it the page is the same tree, read-only.
import { ApiError, del, get, patch, post } from "./api.js";
import { badge, clear, dot, field, h, message, modal, pageStyle, toast } from "./dom.js";
import { extend, t } from "./i18n.js";
import { loadRegions, regionEl, regionName } from "./regions.js";
import { can } from "./session.js";

extend({
  "org.title": "组织管理",
  "org.tree_label": "组织树",
  "org.refresh": "刷新",
  "org.new_root": "新建根节点",
  "org.new_child": "新建下级节点",
  "org.rename": "重命名",
  "org.move": "移动到...",
  "org.delete": "删除节点",
  "org.assign": "分配设备",
  "org.empty_tree": "还没有组织节点。",
  "org.select_hint": "在左侧选择一个节点，查看它的设备和通道。",
  "org.read_only": "您只有查看权限：修改组织树需要“组织管理”权限。",
  "org.dnd_hint": "可把节点拖到另一个节点上移动它，把设备行拖到节点上分配设备；键盘：方向键移动焦点，回车选中。",
  "org.path_only": "（仅显示路径）",
  "org.kind.business_group": "业务分组",
  "org.kind.virtual_org": "虚拟组织",
  "org.kind.civil": "行政区划",
  "org.kind.manual": "手工创建",
  "org.civil_code": "行政区划编码 {code}",
  "org.code": "编码 {code}",
  "org.counts": "设备 {devices} · 通道 {online}/{channels}",
  "org.counts_title": "含下级：设备 {devices} 台，通道 {channels} 个（在线 {online}）",
  "org.unassigned": "未分配：设备 {devices} 台，通道 {channels} 个",
  "org.node_path": "位置：{path}",
  "org.direct": "本节点：设备 {devices} 台，通道 {channels} 个；含下级：设备 {tdevices} 台，通道 {tchannels} 个（在线 {tonline}）",
  "org.devices": "设备",
  "org.channels": "通道（含下级节点）",
  "org.no_devices": "此节点没有直接分配的设备。",
  "org.no_channels": "此节点及其下级没有通道。",
  "org.col.status": "状态",
  "org.col.device": "设备",
  "org.col.channel": "通道",
  "org.col.channels": "通道数",
  "org.col.node": "所属节点",
  "org.more": "仅显示前 {n} 项，共 {total} 项。",
  "org.drag_device": "拖到左侧节点上可分配到该节点",
  "org.name": "节点名称",
  "org.new_child_of": "在“{name}”下新建节点",
  "org.new_root_title": "新建根节点",
  "org.rename_title": "重命名“{name}”",
  "org.move_title": "移动“{name}”",
  "org.move_target": "移到此节点之下",
  "org.move_root": "（顶层：作为根节点）",
  "org.move_to_self": "不能把节点移到它自己之下。",
  "org.move_cycle": "不能把“{name}”移到它自己的下级“{target}”之下。",
  "org.move_same": "“{name}”已经在“{target}”之下。",
  "org.moved": "已把“{name}”移到“{target}”之下",
  "org.moved_root": "“{name}”已成为根节点",
  "org.created": "已创建节点“{name}”",
  "org.renamed": "已重命名为“{name}”",
  "org.delete_title": "删除节点“{name}”",
  "org.delete_empty": "节点“{name}”没有下级节点、设备和通道，删除后不可恢复。",
  "org.delete_nonempty": "节点“{name}”不是空的：下级节点 {children} 个，设备 {devices} 台，通道 {channels} 个。",
  "org.delete_moves_parent": "删除后它们将移到上级节点“{parent}”之下。",
  "org.delete_moves_root": "它是根节点：删除后下级节点成为根节点，设备和通道变为未分配。",
  "org.delete_roles": "授权了此节点的角色将失去此节点的权限。",
  "org.delete_force": "我已了解，仍然删除",
  "org.delete_force_needed": "请先勾选“我已了解，仍然删除”。",
  "org.deleted": "已删除节点“{name}”",
  "org.assign_title": "把设备分配到“{name}”",
  "org.assign_search": "按设备编码或名称搜索",
  "org.assign_pick": "选择设备",
  "org.assign_none_found": "没有找到设备。",
  "org.assign_none_picked": "请至少勾选一台设备。",
  "org.assign_here": "（已在此节点）",
  "org.assign_elsewhere": "（当前在其他节点）",
  "org.assign_submit": "分配",
  "org.assigned": "已把 {n} 台设备分配到“{name}”",
  "org.dropped_device": "已把设备 {device} 分配到“{name}”",
  "org.load_failed": "加载失败：{error}",
}, {
  "org.title": "Organisation",
  "org.tree_label": "Organisation tree",
  "org.refresh": "Refresh",
  "org.new_root": "New root node",
  "org.new_child": "New child node",
  "org.rename": "Rename",
  "org.move": "Move to...",
  "org.delete": "Delete node",
  "org.assign": "Assign devices",
  "org.empty_tree": "There are no organisation nodes yet.",
  "org.select_hint": "Select a node on the left to see its devices and channels.",
  "org.read_only": "You may only look: changing the tree needs the “manage the organisation tree” permission.",
  "org.dnd_hint": "Drag a node onto another node to move it, drag a device row onto a node to assign the device; keyboard: arrow keys move the focus, Enter selects.",
  "org.path_only": "(shown as the path only)",
  "org.kind.business_group": "Business group",
  "org.kind.virtual_org": "Virtual organisation",
  "org.kind.civil": "Administrative region",
  "org.kind.manual": "Created by hand",
  "org.civil_code": "Civil code {code}",
  "org.code": "Code {code}",
  "org.counts": "devices {devices} · channels {online}/{channels}",
  "org.counts_title": "Including the subtree: {devices} devices, {channels} channels ({online} online)",
  "org.unassigned": "Unassigned: {devices} devices, {channels} channels",
  "org.node_path": "Location: {path}",
  "org.direct": "This node: {devices} devices, {channels} channels; with the subtree: {tdevices} devices, {tchannels} channels ({tonline} online)",
  "org.devices": "Devices",
  "org.channels": "Channels (subtree included)",
  "org.no_devices": "No device is assigned to this node itself.",
  "org.no_channels": "No channels in this node or below it.",
  "org.col.status": "State",
  "org.col.device": "Device",
  "org.col.channel": "Channel",
  "org.col.channels": "Channels",
  "org.col.node": "Node",
  "org.more": "Showing the first {n} of {total}.",
  "org.drag_device": "Drag onto a node on the left to assign it there",
  "org.name": "Node name",
  "org.new_child_of": "New node under “{name}”",
  "org.new_root_title": "New root node",
  "org.rename_title": "Rename “{name}”",
  "org.move_title": "Move “{name}”",
  "org.move_target": "Move under this node",
  "org.move_root": "(top level: as a root node)",
  "org.move_to_self": "A node cannot move under itself.",
  "org.move_cycle": "“{name}” cannot move under “{target}”, which is below it.",
  "org.move_same": "“{name}” is already under “{target}”.",
  "org.moved": "Moved “{name}” under “{target}”",
  "org.moved_root": "“{name}” is now a root node",
  "org.created": "Created the node “{name}”",
  "org.renamed": "Renamed to “{name}”",
  "org.delete_title": "Delete the node “{name}”",
  "org.delete_empty": "The node “{name}” has no child nodes, devices or channels; deleting it cannot be undone.",
  "org.delete_nonempty": "The node “{name}” is not empty: {children} child nodes, {devices} devices, {channels} channels.",
  "org.delete_moves_parent": "Deleting it moves them under its parent “{parent}”.",
  "org.delete_moves_root": "It is a root node: its child nodes become roots, its devices and channels become unassigned.",
  "org.delete_roles": "Roles that were granted this node lose it.",
  "org.delete_force": "I understand: delete it anyway",
  "org.delete_force_needed": "Tick “I understand: delete it anyway” first.",
  "org.deleted": "Deleted the node “{name}”",
  "org.assign_title": "Assign devices to “{name}”",
  "org.assign_search": "Search by device id or name",
  "org.assign_pick": "Devices",
  "org.assign_none_found": "No devices found.",
  "org.assign_none_picked": "Tick at least one device.",
  "org.assign_here": "(already on this node)",
  "org.assign_elsewhere": "(now on another node)",
  "org.assign_submit": "Assign",
  "org.assigned": "Assigned {n} devices to “{name}”",
  "org.dropped_device": "Assigned the device {device} to “{name}”",
  "org.load_failed": "Loading failed: {error}",
});

// The page's own rules, scoped under .org-page (style.css is shared); injected once.
const CSS = `
.org-page .org-split { display: grid; grid-template-columns: minmax(260px, 360px) minmax(0, 1fr); gap: 16px; align-items: start; }
.org-page .org-tree-card { padding: 0; display: flex; flex-direction: column; max-height: calc(100vh - 150px); min-width: 0; }
.org-page .org-tree-head { padding: 10px 12px; border-bottom: 1px solid var(--line); font-size: 12.5px; }
.org-page .org-tree { list-style: none; margin: 0; padding: 6px 0; overflow: auto; }
.org-page .org-tree ul { list-style: none; margin: 0; padding: 0; }
.org-page .org-item:focus { outline: none; }
.org-page .org-item:focus > .org-row { outline: 2px solid var(--accent, #2a6ee6); outline-offset: -2px; }
.org-page .org-row { display: flex; align-items: center; gap: 6px; padding: 5px 10px; cursor: pointer; min-width: 0; }
.org-page .org-row:hover { background: #f2f5f9; }
.org-page .org-item[aria-selected="true"] > .org-row { background: var(--accent-soft, #e6efff); }
.org-page .org-row.drop-ok { background: #dff3e6; box-shadow: inset 0 0 0 2px #2f8f57; }
.org-page .org-row.drop-no { background: #fbe3e3; box-shadow: inset 0 0 0 2px #b42318; }
.org-page .org-twist { width: 18px; flex: none; border: 0; background: none; padding: 0; color: #4a5568; font-size: 11px; }
.org-page .org-text { flex: 1; min-width: 0; display: flex; flex-direction: column; }
.org-page .org-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 500; }
.org-page .org-sub { font-size: 12px; color: #5b6675; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.org-page .org-item.path-only > .org-row .org-name { color: #5b6675; font-weight: 400; }
.org-page .org-panel { min-width: 0; }
.org-page .org-panel h2 { overflow-wrap: anywhere; }
.org-page .org-actions { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0 12px; }
.org-page .org-facts { font-size: 13px; color: #3d4756; margin: 4px 0; overflow-wrap: anywhere; }
.org-page .org-table { width: 100%; border-collapse: collapse; table-layout: fixed; }
.org-page .org-table th { text-align: left; font-weight: 500; color: #5b6675; font-size: 12.5px; padding: 6px; border-bottom: 1px solid var(--line); }
.org-page .org-table td { padding: 6px; border-bottom: 1px solid #f0f2f5; overflow-wrap: anywhere; vertical-align: top; }
.org-page .org-table .mono { font-size: 12px; }
.org-page .org-table th.narrow { width: 72px; }
.org-page tr.org-device[draggable="true"] { cursor: grab; }
.org-page .org-msg:empty { display: none; }
.org-assign-list { max-height: 300px; overflow: auto; border: 1px solid #e3e7ee; border-radius: 6px; padding: 4px 8px; margin-top: 6px; }
.org-assign-list label { display: flex; gap: 8px; align-items: flex-start; padding: 4px 0; overflow-wrap: anywhere; }
@media (max-width: 900px) {
  .org-page .org-split { grid-template-columns: minmax(0, 1fr); }
  .org-page .org-tree-card { max-height: 50vh; }
}
@media (max-width: 600px) {
  .org-page .org-sub { white-space: normal; }
  .org-page .org-table thead { display: none; }
  .org-page .org-table tr { display: block; padding: 6px 0; border-bottom: 1px solid #f0f2f5; }
  .org-page .org-table td { display: inline-block; border: 0; padding: 2px 6px; max-width: 100%; }
}
`;

// a constructed sheet: the console's CSP ("style-src 'self'") refuses an inline <style>
const injectStyle = pageStyle(CSS);

const LIST_LIMIT = 500;
const DEVICE_TYPE = "application/x-gbops-device";
const NODE_TYPE = "application/x-gbops-org-node";

function kindName(kind) {
  const key = "org.kind." + kind;
  const word = t(key);
  return word === key ? kind : word;
}

// The node's code: a civil code in words (the GB/T 2260 table of regions.js, in a data-place element with the
// code), else the name the API gives, else the code with its label; other codes with their label.
function codeText(n) {
  if (!n.code) return null;
  if (n.kind === "civil") {
    if (regionName(n.code)) return regionEl(n.code, { class: "org-place" });
    return n.region_name || n.region || t("org.civil_code", { code: n.code });
  }
  return t("org.code", { code: n.code });
}

export async function orgView(root, params) {
  injectStyle();
  const manage = can("org.manage");

  let nodes = new Map(); // id -> node of /api/org/tree
  let unassigned = null;
  const expanded = new Set();
  let selected = null; // node id
  let focused = null; // node id holding tabindex 0
  let dragging = null; // { type: "node", id } | { type: "device", id }
  let first = true;
  let panelSeq = 0;

  const tree = h("ul", { class: "org-tree", role: "tree", id: "org-tree", "aria-label": t("org.tree_label") });
  const treeHead = h("div", { class: "org-tree-head muted", id: "org-unassigned" });
  const panel = h("section", { class: "card org-panel", id: "org-panel", "aria-live": "polite" });
  const status = h("div", { class: "org-msg", id: "org-msg", role: "status" });
  const newRoot = manage ? h("button", { type: "button", id: "org-new-root", onclick: () => createDialog(null) },
    t("org.new_root")) : null;
  const refresh = h("button", { type: "button", id: "org-refresh", onclick: () => reload() }, t("org.refresh"));
  const page = h("div", { class: "org-page" });
  root.append(page);
  page.append(
    h("div", { class: "page-head" }, h("h1", null, t("org.title")), h("div", { class: "tools" }, newRoot, refresh)),
    h("p", { class: "muted", id: "org-hint" }, manage ? t("org.dnd_hint") : t("org.read_only")),
    status,
    h("div", { class: "org-split" },
      h("aside", { class: "card org-tree-card" }, treeHead, tree),
      panel));

  function say(text, kind = "error") {
    clear(status).append(message(text, kind));
    if (kind === "error") toast(text, "error");
  }

  // ------------------------------------------------------------------ tree model
  const parentOf = (id) => {
    const n = nodes.get(id);
    return n && n.parent_id != null && nodes.has(n.parent_id) ? n.parent_id : null;
  };
  const roots = () => [...nodes.values()].filter((n) => parentOf(n.id) === null);
  const kids = (n) => (n.children || []).filter((c) => nodes.has(c)).map((c) => nodes.get(c));
  function isInSubtree(id, top) { // id is top or below it
    for (let cur = id; cur != null; cur = parentOf(cur)) if (cur === top) return true;
    return false;
  }
  function pathOf(id) {
    const names = [];
    for (let cur = id; cur != null; cur = parentOf(cur)) names.unshift(nodes.get(cur).name);
    return names.join(" / ");
  }
  function visibleIds() {
    const out = [];
    const walk = (n) => { out.push(n.id); if (expanded.has(n.id)) kids(n).forEach(walk); };
    roots().forEach(walk);
    return out;
  }

  async function reload() {
    let data;
    try {
      [data] = await Promise.all([get("/api/org/tree"), loadRegions()]);
    } catch (err) {
      if (first) throw err; // the router says why the page cannot be shown
      say(t("org.load_failed", { error: err.message }));
      return;
    }
    const wasFirst = first;
    first = false;
    nodes = new Map(data.nodes.map((n) => [n.id, n]));
    unassigned = data.unassigned;
    if (wasFirst) {
      roots().forEach((n) => expanded.add(n.id));
      const wanted = Number(params && params.params ? params.params.get("node") : NaN);
      if (nodes.has(wanted)) selected = wanted;
      else if (roots().length === 1) selected = roots()[0].id;
      for (let cur = selected != null ? parentOf(selected) : null; cur != null; cur = parentOf(cur)) expanded.add(cur);
    }
    if (selected != null && !nodes.has(selected)) selected = null;
    if (focused == null || !nodes.has(focused)) focused = selected ?? (roots()[0] ? roots()[0].id : null);
    drawTree();
    await drawPanel();
  }

  // ------------------------------------------------------------------ tree drawing
  function item(n, level) {
    const children = kids(n);
    const open = expanded.has(n.id);
    const twist = h("span", { class: "org-twist", "aria-hidden": "true" }, children.length ? (open ? "▼" : "▶") : "");
    const code = codeText(n);
    const counts = t("org.counts", { devices: n.total_devices, channels: n.total_channels,
                                     online: n.total_channels_online });
    const sub = [kindName(n.kind), code, counts].filter(Boolean).flatMap((part, i) => (i ? [" · ", part] : [part]));
    const row = h("div", { class: "org-row", title: t("org.counts_title", { devices: n.total_devices,
      channels: n.total_channels, online: n.total_channels_online }) },
    twist, h("span", { class: "folder", "aria-hidden": "true" }),
    h("span", { class: "org-text" }, h("span", { class: "org-name" }, n.name),
      h("span", { class: "org-sub" }, sub, n.in_scope ? "" : " " + t("org.path_only"))));
    row.style.paddingLeft = 8 + (level - 1) * 16 + "px";
    const li = h("li", {
      class: "org-item" + (n.in_scope ? "" : " path-only"), role: "treeitem", id: "org-node-" + n.id,
      "aria-level": level, "aria-selected": selected === n.id ? "true" : "false",
      "aria-expanded": children.length ? String(open) : null, tabindex: focused === n.id ? 0 : -1,
      draggable: manage && n.in_scope ? "true" : null, dataset: { orgNode: n.id } }, row);
    twist.addEventListener("click", (e) => { e.stopPropagation(); toggle(n.id); });
    row.addEventListener("click", () => { focusNode(n.id); select(n.id); });
    if (manage) wireDrop(row, n);
    if (manage && n.in_scope) {
      li.addEventListener("dragstart", (e) => {
        e.stopPropagation();
        dragging = { type: "node", id: n.id };
        e.dataTransfer.effectAllowed = "move";
        e.dataTransfer.setData(NODE_TYPE, String(n.id));
        e.dataTransfer.setData("text/plain", n.name);
      });
      li.addEventListener("dragend", () => { dragging = null; clearDropMarks(); });
    }
    if (children.length && open) {
      li.append(h("ul", { role: "group" }, children.map((c) => item(c, level + 1))));
    }
    return li;
  }

  function drawTree() {
    const list = roots();
    clear(tree).append(...(list.length ? list.map((n) => item(n, 1))
      : [h("li", { class: "muted org-empty", role: "none" }, t("org.empty_tree"))]));
    treeHead.textContent = unassigned ? t("org.unassigned", { devices: unassigned.devices,
                                                             channels: unassigned.channels }) : "";
  }

  function toggle(id, open) {
    const want = open === undefined ? !expanded.has(id) : open;
    if (want) expanded.add(id); else expanded.delete(id);
    drawTree();
    focusNode(id);
  }

  function focusNode(id) {
    focused = id;
    for (const li of tree.querySelectorAll(".org-item")) {
      li.tabIndex = Number(li.dataset.orgNode) === id ? 0 : -1;
    }
    const el = document.getElementById("org-node-" + id);
    if (el) el.focus();
  }

  async function select(id) {
    selected = id;
    for (const li of tree.querySelectorAll(".org-item")) {
      li.setAttribute("aria-selected", Number(li.dataset.orgNode) === id ? "true" : "false");
    }
    await drawPanel();
  }

  tree.addEventListener("keydown", (e) => {
    if (focused == null) return;
    const vis = visibleIds();
    const i = vis.indexOf(focused);
    const n = nodes.get(focused);
    let handled = true;
    switch (e.key) {
      case "ArrowDown": if (i < vis.length - 1) focusNode(vis[i + 1]); break;
      case "ArrowUp": if (i > 0) focusNode(vis[i - 1]); break;
      case "Home": if (vis.length) focusNode(vis[0]); break;
      case "End": if (vis.length) focusNode(vis[vis.length - 1]); break;
      case "ArrowRight":
        if (kids(n).length && !expanded.has(n.id)) toggle(n.id, true);
        else if (kids(n).length) focusNode(kids(n)[0].id);
        break;
      case "ArrowLeft":
        if (kids(n).length && expanded.has(n.id)) toggle(n.id, false);
        else if (parentOf(n.id) != null) focusNode(parentOf(n.id));
        break;
      case "Enter": case " ": select(n.id); break;
      default: handled = false;
    }
    if (handled) { e.preventDefault(); e.stopPropagation(); }
  });

  // ------------------------------------------------------------------ drag and drop
  function clearDropMarks() {
    for (const r of tree.querySelectorAll(".drop-ok, .drop-no")) r.classList.remove("drop-ok", "drop-no");
  }

  function wireDrop(row, target) {
    row.addEventListener("dragover", (e) => {
      if (!dragging || !target.in_scope) return;
      const bad = dragging.type === "node" && isInSubtree(target.id, dragging.id);
      // a drop is accepted everywhere (the red mark warns): a refused move then says why in words
      e.preventDefault();
      e.dataTransfer.dropEffect = "move";
      row.classList.toggle("drop-ok", !bad);
      row.classList.toggle("drop-no", bad);
    });
    row.addEventListener("dragleave", () => row.classList.remove("drop-ok", "drop-no"));
    row.addEventListener("drop", async (e) => {
      e.preventDefault();
      e.stopPropagation();
      clearDropMarks();
      const what = dragging || fromTransfer(e.dataTransfer);
      dragging = null;
      if (!what || !target.in_scope) return;
      if (what.type === "node") await moveNode(what.id, target.id);
      else await assignDevices(target.id, [what.id], true);
    });
  }

  function fromTransfer(dt) {
    const node = dt.getData(NODE_TYPE);
    if (node) return { type: "node", id: Number(node) };
    const device = dt.getData(DEVICE_TYPE);
    return device ? { type: "device", id: device } : null;
  }

  // ------------------------------------------------------------------ writes
  // Refuses here what the API would refuse as org_cycle; returns the refusal in words or null.
  function moveRefusal(id, targetId) {
    const n = nodes.get(id);
    if (targetId === null) return null;
    const target = nodes.get(targetId);
    if (targetId === id) return t("org.move_to_self");
    if (isInSubtree(targetId, id)) return t("org.move_cycle", { name: n.name, target: target.name });
    if (parentOf(id) === targetId) return t("org.move_same", { name: n.name, target: target.name });
    return null;
  }

  async function moveNode(id, targetId) {
    const n = nodes.get(id);
    const refusal = moveRefusal(id, targetId);
    if (refusal) { say(refusal); return false; }
    try {
      await patch(`/api/org/nodes/${id}`, { parent_id: targetId });
    } catch (err) { say(err.message); return false; }
    clear(status);
    if (targetId != null) expanded.add(targetId);
    toast(targetId == null ? t("org.moved_root", { name: n.name })
      : t("org.moved", { name: n.name, target: nodes.get(targetId).name }), "ok");
    await reload();
    return true;
  }

  async function assignDevices(nodeId, deviceIds, dropped) {
    const name = nodes.get(nodeId).name;
    try {
      await post(`/api/org/nodes/${nodeId}/members`, { device_ids: deviceIds });
    } catch (err) { say(err.message); return false; }
    clear(status);
    toast(dropped ? t("org.dropped_device", { device: deviceIds[0], name })
      : t("org.assigned", { n: deviceIds.length, name }), "ok");
    await reload();
    return true;
  }

  function nameInput(value) {
    return h("input", { id: "org-name-input", required: true, maxlength: 100, value: value || "",
                        autocomplete: "off" });
  }

  function createDialog(parentId) {
    const input = nameInput("");
    const title = parentId == null ? t("org.new_root_title")
      : t("org.new_child_of", { name: nodes.get(parentId).name });
    modal(title, (body) => { body.append(field(t("org.name"), input)); }, async () => {
      const name = input.value.trim();
      if (!name) throw new Error(t("org.name"));
      const node = await post("/api/org/nodes", { name, parent_id: parentId });
      if (parentId != null) expanded.add(parentId);
      selected = node.id;
      focused = node.id;
      toast(t("org.created", { name: node.name }), "ok");
      await reload();
    }, { saveLabel: t("common.create") });
    input.focus();
  }

  function renameDialog(id) {
    const n = nodes.get(id);
    const input = nameInput(n.name);
    modal(t("org.rename_title", { name: n.name }), (body) => { body.append(field(t("org.name"), input)); },
      async () => {
        const name = input.value.trim();
        if (!name) throw new Error(t("org.name"));
        const node = await patch(`/api/org/nodes/${id}`, { name });
        toast(t("org.renamed", { name: node.name }), "ok");
        await reload();
      });
    input.select();
  }

  function moveDialog(id) {
    const n = nodes.get(id);
    const options = [h("option", { value: "" }, t("org.move_root"))];
    const walk = (m, depth) => {
      if (m.in_scope) {
        options.push(h("option", { value: String(m.id), selected: parentOf(id) === m.id }, "　".repeat(depth) + m.name));
      }
      kids(m).forEach((c) => walk(c, depth + 1));
    };
    roots().forEach((r) => walk(r, 0));
    const select = h("select", { id: "org-move-target" }, options);
    if (parentOf(id) === null) select.value = "";
    modal(t("org.move_title", { name: n.name }), (body) => {
      body.append(field(t("org.move_target"), select), h("p", { class: "muted" }, pathOf(id)));
    }, async () => {
      const targetId = select.value === "" ? null : Number(select.value);
      const refusal = moveRefusal(id, targetId);
      if (refusal) throw new Error(refusal);
      await patch(`/api/org/nodes/${id}`, { parent_id: targetId });
      if (targetId != null) expanded.add(targetId);
      toast(targetId == null ? t("org.moved_root", { name: n.name })
        : t("org.moved", { name: n.name, target: nodes.get(targetId).name }), "ok");
      await reload();
    }, { saveLabel: t("common.save") });
    select.focus();
  }

  function deleteDialog(id) {
    const n = nodes.get(id);
    const children = (n.children || []).length;
    const nonEmpty = children > 0 || n.devices > 0 || n.channels > 0;
    const parent = parentOf(id);
    const force = h("input", { type: "checkbox", id: "org-delete-force" });
    const dlg = modal(t("org.delete_title", { name: n.name }), (body) => {
      if (!nonEmpty) {
        body.append(h("p", { id: "org-delete-text" }, t("org.delete_empty", { name: n.name })));
      } else {
        body.append(h("div", { id: "org-delete-text" },
          message(t("org.delete_nonempty", { name: n.name, children, devices: n.devices, channels: n.channels }),
            "warn"),
          h("p", null, parent != null ? t("org.delete_moves_parent", { parent: nodes.get(parent).name })
            : t("org.delete_moves_root")),
          h("p", null, t("org.delete_roles")),
          h("label", { class: "check" }, force, " ", t("org.delete_force"))));
      }
    }, async () => {
      if (nonEmpty && !force.checked) throw new Error(t("org.delete_force_needed"));
      await del(`/api/org/nodes/${id}`, nonEmpty ? { force: true } : undefined);
      toast(t("org.deleted", { name: n.name }), "ok");
      if (selected === id) selected = parent;
      if (focused === id) focused = parent;
      await reload();
    }, { saveLabel: t("common.delete") });
    const save = dlg.querySelector("button[type=submit]");
    if (save) { save.classList.remove("primary"); save.classList.add("danger"); save.id = "org-delete-confirm"; }
  }

  function assignDialog(id) {
    const n = nodes.get(id);
    const q = h("input", { type: "search", id: "org-assign-q", autocomplete: "off" });
    const list = h("div", { class: "org-assign-list", id: "org-assign-list", role: "group",
                            "aria-label": t("org.assign_pick") });
    let seq = 0;
    async function search() {
      const mine = ++seq;
      let page;
      try {
        page = await get("/api/devices", { q: q.value.trim() || undefined, limit: 100 });
      } catch (err) {
        if (mine === seq) clear(list).append(message(err.message, "error"));
        return;
      }
      if (mine !== seq) return;
      const items = page.items || [];
      clear(list).append(...(items.length ? items.map((d) => h("label", null,
        h("input", { type: "checkbox", value: d.device_id, dataset: { device: d.device_id },
                     disabled: d.org_node_id === id }),
        h("span", null, dot(d.online), " ", d.name || d.device_id, " ", h("span", { class: "mono muted" }, d.device_id),
          d.org_node_id === id ? " " + t("org.assign_here")
            : d.org_node_id != null ? " " + t("org.assign_elsewhere") : "")))
      : [h("p", { class: "muted" }, t("org.assign_none_found"))]));
    }
    let timer = null;
    q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 250); });
    q.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); clearTimeout(timer); search(); } });
    const dlg = modal(t("org.assign_title", { name: n.name }), (body) => {
      body.append(field(t("org.assign_search"), q), h("div", { class: "label muted" }, t("org.assign_pick")), list);
    }, async () => {
      const ids = [...list.querySelectorAll("input[type=checkbox]:checked")].map((c) => c.value);
      if (!ids.length) throw new Error(t("org.assign_none_picked"));
      await post(`/api/org/nodes/${id}/members`, { device_ids: ids });
      toast(t("org.assigned", { n: ids.length, name: n.name }), "ok");
      await reload();
    }, { saveLabel: t("org.assign_submit") });
    dlg.classList.add("wide");
    dlg.id = "org-assign-dialog";
    search();
    q.focus();
  }

  // ------------------------------------------------------------------ right-hand panel
  function deviceTable(page, nodeId) {
    const items = page.items || [];
    if (!items.length) return h("p", { class: "muted", id: "org-devices-empty" }, t("org.no_devices"));
    const draggable = manage && nodes.get(nodeId).in_scope;
    return [h("table", { class: "org-table", id: "org-devices" },
      h("thead", null, h("tr", null, h("th", { class: "narrow" }, t("org.col.status")),
        h("th", null, t("org.col.device")), h("th", { class: "narrow" }, t("org.col.channels")))),
      h("tbody", null, items.map((d) => {
        const tr = h("tr", { class: "org-device", dataset: { device: d.device_id }, draggable: draggable ? "true" : null,
                             title: draggable ? t("org.drag_device") : null },
          h("td", null, dot(d.online), " ", d.online ? t("common.online") : t("common.offline")),
          h("td", null, h("a", { href: `#/device/${encodeURIComponent(d.device_id)}` }, d.name || d.device_id),
            h("div", { class: "mono muted" }, d.device_id)),
          h("td", null, d.channels_total ?? d.channel_count ?? "—"));
        if (draggable) {
          tr.addEventListener("dragstart", (e) => {
            dragging = { type: "device", id: d.device_id };
            e.dataTransfer.effectAllowed = "move";
            e.dataTransfer.setData(DEVICE_TYPE, d.device_id);
            e.dataTransfer.setData("text/plain", d.device_id);
          });
          tr.addEventListener("dragend", () => { dragging = null; clearDropMarks(); });
        }
        return tr;
      }))),
    page.total > items.length ? h("p", { class: "muted" }, t("org.more", { n: items.length, total: page.total })) : null];
  }

  function channelTable(page) {
    const items = page.items || [];
    if (!items.length) return h("p", { class: "muted", id: "org-channels-empty" }, t("org.no_channels"));
    return [h("table", { class: "org-table", id: "org-channels" },
      h("thead", null, h("tr", null, h("th", { class: "narrow" }, t("org.col.status")),
        h("th", null, t("org.col.channel")), h("th", null, t("org.col.node")))),
      h("tbody", null, items.map((c) => h("tr", { dataset: { channel: c.channel_id, device: c.device_id } },
        h("td", null, dot(c.online), " ", c.online ? t("common.online") : t("common.offline")),
        h("td", null, h("a", { href: `#/channel/${encodeURIComponent(c.channel_id)}?device=${encodeURIComponent(c.device_id)}` },
          c.name || c.channel_id), h("div", { class: "mono muted" }, c.channel_id)),
        h("td", null, c.org_node_id != null && nodes.has(c.org_node_id) ? nodes.get(c.org_node_id).name : "—"))))),
    page.total > items.length ? h("p", { class: "muted" }, t("org.more", { n: items.length, total: page.total })) : null];
  }

  async function drawPanel() {
    const mine = ++panelSeq;
    if (selected == null || !nodes.has(selected)) {
      clear(panel).append(h("p", { class: "muted" }, t("org.select_hint")));
      return;
    }
    const n = nodes.get(selected);
    const id = n.id;
    // the selection in the address (replaceState: no hashchange, the page stays), so that a language switch
    // or a reload keeps it
    if (location.hash.startsWith("#/org")) history.replaceState(null, "", `#/org?node=${id}`);
    const code = codeText(n);
    const act = (key, elId, fn, kind) => h("button", { type: "button", id: elId, class: kind || null,
                                                     onclick: fn }, t(key));
    const actions = manage && n.in_scope ? h("div", { class: "org-actions", id: "org-actions" },
      act("org.new_child", "org-new-child", () => createDialog(id)),
      act("org.rename", "org-rename", () => renameDialog(id)),
      act("org.move", "org-move", () => moveDialog(id)),
      act("org.assign", "org-assign", () => assignDialog(id)),
      act("org.delete", "org-delete", () => deleteDialog(id), "danger")) : null;
    const devices = h("div", { id: "org-devices-box" }, message(t("common.loading")));
    const channels = h("div", { id: "org-channels-box" }, message(t("common.loading")));
    clear(panel).append(...[
      h("h2", { id: "org-panel-title", dataset: { node: id } }, n.name, " ", badge(kindName(n.kind))),
      h("p", { class: "org-facts", id: "org-panel-path" }, t("org.node_path", { path: pathOf(id) })),
      code ? h("p", { class: "org-facts", id: "org-panel-code" }, code) : null,
      h("p", { class: "org-facts", id: "org-panel-counts" }, t("org.direct", { devices: n.devices,
        channels: n.channels, tdevices: n.total_devices, tchannels: n.total_channels,
        tonline: n.total_channels_online })),
      actions,
      h("h3", null, t("org.devices")), devices,
      h("h3", null, t("org.channels")), channels].filter(Boolean));
    if (!n.in_scope) {
      clear(devices);
      clear(channels);
      return;
    }
    const [dev, ch] = await Promise.all([
      get("/api/devices", { org_node_id: id, limit: LIST_LIMIT }).catch((err) => err),
      get("/api/channels", { org_node_id: id, limit: LIST_LIMIT }).catch((err) => err),
    ]);
    if (mine !== panelSeq) return; // another node was selected meanwhile
    clear(devices).append(...[dev instanceof ApiError || dev instanceof Error
      ? message(t("org.load_failed", { error: dev.message }), "error") : deviceTable(dev, id)].flat().filter(Boolean));
    clear(channels).append(...[ch instanceof ApiError || ch instanceof Error
      ? message(t("org.load_failed", { error: ch.message }), "error") : channelTable(ch)].flat().filter(Boolean));
  }

  await reload();
  if (focused != null) {
    // the tree is where the keyboard starts (without stealing the focus from a field)
    const el = document.getElementById("org-node-" + focused);
    if (el && (!document.activeElement || document.activeElement === document.body)) el.focus();
  }
  return null;
}
