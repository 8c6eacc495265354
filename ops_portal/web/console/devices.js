// 设备管理 (issue 18): the device list an operations centre works in. Server-side search, presence filter, sorting
// by column and paging (50/100 a page: 10,000 devices are never loaded at once); row check boxes with the batch
// actions move to an organisation node, catalog sync and delete offline devices (per-device results in words);
// the add and edit forms (every field of DeviceCreate / DeviceUpdate, the 20-digit id checked before sending);
// per-row catalog sync with its progress (polled every second), status query, password and delete (an online
// device offers a forced delete that drops its registration); import of a CSV/XLSX file with the failed rows
// listed, export and the import template fetched with the token and saved through a blob URL.
// The page's own CSS is a constructed style sheet (adoptedStyleSheets): the console's CSP allows no inline <style>.
import { ApiError, del, get, patch, post, put, token } from "./api.js";
import { orderedOrgNodes } from "./data.js";
import { badge, clear, field, fmtTime, h, message, modal, pageStyle, toast } from "./dom.js";
import { extend, serverText, t } from "./i18n.js";
import { can } from "./session.js";

extend({
  "devm.title": "设备管理",
  "devm.add": "添加设备",
  "devm.import": "导入",
  "devm.export_csv": "导出 CSV",
  "devm.export_xlsx": "导出 Excel",
  "devm.template_csv": "下载模板（CSV）",
  "devm.template_xlsx": "下载模板（Excel）",
  "devm.search": "搜索设备编码或名称",
  "devm.filter_online": "在线状态",
  "devm.page_size": "每页",
  "devm.page_size_n": "{n} 条",
  "devm.select_all": "选择本页全部设备",
  "devm.select_one": "选择设备 {id}",
  "devm.selected": "已选 {n} 台设备",
  "devm.clear_selection": "取消选择",
  "devm.batch_move": "移动到组织节点",
  "devm.batch_sync": "同步目录",
  "devm.batch_delete": "删除离线设备",
  "devm.batch": "批量操作",
  "devm.batch_results": "批量操作结果",
  "devm.batch_summary": "成功 {ok} 台，失败 {failed} 台",
  "devm.batch_delete_confirm": "删除所选的 {n} 台设备？在线设备不会被删除（结果中说明）。设备的上下线记录、审计日志和报表保留。",
  "devm.move_to": "目标组织节点",
  "devm.col.status": "状态",
  "devm.col.device_id": "设备编码",
  "devm.col.name": "名称",
  "devm.col.maker": "厂商 / 型号",
  "devm.col.addr": "IP:端口",
  "devm.col.transport": "传输",
  "devm.col.channels": "通道 在线/总数",
  "devm.col.last_seen": "最近心跳",
  "devm.col.registered": "注册时间",
  "devm.beijing": "时间均为北京时间。",
  "devm.col.org": "组织节点",
  "devm.col.result": "结果",
  "devm.col.row": "行号",
  "devm.col.reason": "原因",
  "devm.sort_hint": "点击按此列排序",
  "devm.empty": "没有符合条件的设备",
  "devm.unassigned": "未分组",
  "devm.org_hidden": "（无权查看的节点）",
  "devm.transport.udp": "UDP",
  "devm.transport.tcp": "TCP",
  "devm.transport.tls": "TLS",
  "devm.transport.unknown": "未知",
  "devm.sync": "同步目录",
  "devm.status": "查询状态",
  "devm.password": "密码",
  "devm.sync.running": "同步中 {received}/{expected}",
  "devm.sync.complete": "同步完成 {received}/{expected}",
  "devm.sync.partial": "部分完成 {received}/{expected}（设备未发完目录）",
  "devm.sync.failed": "同步失败：{error}",
  "devm.sync.started": "已开始同步 {id} 的目录",
  "devm.f.device_id": "设备编码（20 位数字）",
  "devm.f.name": "名称",
  "devm.f.password": "设备密码",
  "devm.f.password_hint_new": "设备注册用的 SIP 密码；留空则使用平台统一密码。至少 8 位，包含两类以上字符，不含设备编码。",
  "devm.f.password_hint_edit": "留空表示不修改。",
  "devm.f.password_clear": "清除设备密码（改用平台统一密码）",
  "devm.f.transport": "信令传输",
  "devm.f.org_node_id": "组织节点",
  "devm.f.stream_form": "主/子码流标识方式",
  "devm.f.expected_channels": "应有通道数",
  "devm.f.longitude": "经度",
  "devm.f.latitude": "纬度",
  "devm.f.address": "安装地址",
  "devm.stream.streamnumber": "国标 2022（a=streamnumber）",
  "devm.stream.stream": "厂商（a=stream）",
  "devm.stream.streamprofile": "厂商（a=streamprofile）",
  "devm.stream.none": "不指定",
  "devm.bad_id": "设备编码须为 20 位数字",
  "devm.check_fields": "请检查以下内容：{fields}",
  "devm.new_title": "添加设备",
  "devm.edit_title": "编辑设备：{name}",
  "devm.created": "已添加设备 {id}（预注册，设备注册后上线）",
  "devm.saved": "设备 {id} 已保存",
  "devm.delete_title": "删除设备：{name}",
  "devm.delete_offline": "删除设备 {id}？设备的上下线记录、审计日志和报表保留；以后可用同一编码重新添加。",
  "devm.delete_online": "设备 {id} 当前在线，不能直接删除。",
  "devm.force_delete": "强制删除",
  "devm.force_explain": "强制删除会同时注销该设备在平台上的注册（断开其信令），设备随即显示离线并从列表中移除；设备再次注册会被拒绝，直到重新添加。",
  "devm.deleted": "设备 {id} 已删除",
  "devm.password_title": "设备密码：{name}",
  "devm.password_saved": "设备 {id} 的密码已保存，设备下次注册时生效",
  "devm.password_cleared": "设备 {id} 已改用平台统一密码",
  "devm.status_title": "设备状态：{name}",
  "devm.st.result": "查询结果",
  "devm.st.online": "设备自报在线",
  "devm.st.status": "工作状态",
  "devm.st.encode": "编码",
  "devm.st.record": "录像",
  "devm.st.device_time": "设备时间",
  "devm.st.alarms": "报警输入",
  "devm.st.none": "无",
  "devm.word.OK": "正常",
  "devm.word.ERROR": "异常",
  "devm.word.ONLINE": "在线",
  "devm.word.OFFLINE": "离线",
  "devm.word.ON": "开启",
  "devm.word.OFF": "关闭",
  "devm.word.ONDUTY": "布防",
  "devm.word.OFFDUTY": "撤防",
  "devm.word.ALARM": "报警中",
  "devm.word.unknown": "未报告",
  "devm.import_title": "导入设备",
  "devm.import_file": "文件（.csv 或 .xlsx，最大 5 MB，最多 10000 行）",
  "devm.import_hint": "请使用“下载模板”得到的表头；每行一台设备，错误的行会被跳过并在结果中列出。",
  "devm.import_go": "开始导入",
  "devm.import_pick": "请选择一个 .csv 或 .xlsx 文件",
  "devm.import_report": "导入结果",
  "devm.import_summary": "共 {total} 行：新增 {created} 台，更新 {updated} 台，失败 {failed} 行",
  "devm.import_all_ok": "全部导入成功",
  "devm.download_failed": "下载失败：{error}",
  "devm.ok": "成功",
  "devm.failed": "失败",
  "devm.updated": "每 10 秒自动刷新 · 最近更新 {time}",
  "devm.code.device_online": "设备在线，未删除",
  "devm.code.device_offline": "设备不在线，无法同步目录",
  "devm.code.device_not_found": "设备不存在",
  "devm.code.device_exists": "设备编码已存在",
  "devm.code.bad_device_id": "设备编码无效",
  "devm.code.weak_password": "设备密码太弱",
  "devm.code.bad_org_node": "组织节点无效",
  "devm.code.forbidden": "无权操作此设备",
  "devm.code.out_of_scope": "不在您的管辖范围内",
  "devm.code.sip_unavailable": "信令服务不可用",
}, {
  "devm.title": "Device management",
  "devm.add": "Add device",
  "devm.import": "Import",
  "devm.export_csv": "Export CSV",
  "devm.export_xlsx": "Export Excel",
  "devm.template_csv": "Template (CSV)",
  "devm.template_xlsx": "Template (Excel)",
  "devm.search": "Search device id or name",
  "devm.filter_online": "Presence",
  "devm.page_size": "Per page",
  "devm.page_size_n": "{n} rows",
  "devm.select_all": "Select every device of this page",
  "devm.select_one": "Select device {id}",
  "devm.selected": "{n} devices selected",
  "devm.clear_selection": "Clear selection",
  "devm.batch_move": "Move to organisation node",
  "devm.batch_sync": "Sync catalog",
  "devm.batch_delete": "Delete offline devices",
  "devm.batch": "Batch actions",
  "devm.batch_results": "Batch results",
  "devm.batch_summary": "{ok} succeeded, {failed} failed",
  "devm.batch_delete_confirm": "Delete the {n} selected devices? Online devices are not deleted (the results say so). Their presence history, audit entries and reports stay.",
  "devm.move_to": "Target organisation node",
  "devm.col.status": "State",
  "devm.col.device_id": "Device id",
  "devm.col.name": "Name",
  "devm.col.maker": "Manufacturer / model",
  "devm.col.addr": "IP:port",
  "devm.col.transport": "Transport",
  "devm.col.channels": "Channels online/total",
  "devm.col.last_seen": "Last keepalive",
  "devm.col.registered": "Registered since",
  "devm.beijing": "Times are Beijing time.",
  "devm.col.org": "Organisation node",
  "devm.col.result": "Result",
  "devm.col.row": "Row",
  "devm.col.reason": "Reason",
  "devm.sort_hint": "Click to sort by this column",
  "devm.empty": "No device matches",
  "devm.unassigned": "Unassigned",
  "devm.org_hidden": "(a node you cannot see)",
  "devm.transport.udp": "UDP",
  "devm.transport.tcp": "TCP",
  "devm.transport.tls": "TLS",
  "devm.transport.unknown": "unknown",
  "devm.sync": "Sync catalog",
  "devm.status": "Query status",
  "devm.password": "Password",
  "devm.sync.running": "syncing {received}/{expected}",
  "devm.sync.complete": "synced {received}/{expected}",
  "devm.sync.partial": "partly synced {received}/{expected} (the device did not send its whole catalog)",
  "devm.sync.failed": "sync failed: {error}",
  "devm.sync.started": "Catalog sync of {id} started",
  "devm.f.device_id": "Device id (20 digits)",
  "devm.f.name": "Name",
  "devm.f.password": "Device password",
  "devm.f.password_hint_new": "The SIP password the device registers with; empty: the platform-wide password. At least 8 characters of two kinds or more, not containing the device id.",
  "devm.f.password_hint_edit": "Leave empty to keep it.",
  "devm.f.password_clear": "Clear the device password (use the platform-wide one)",
  "devm.f.transport": "Signalling transport",
  "devm.f.org_node_id": "Organisation node",
  "devm.f.stream_form": "Main/sub-stream identification",
  "devm.f.expected_channels": "Expected channels",
  "devm.f.longitude": "Longitude",
  "devm.f.latitude": "Latitude",
  "devm.f.address": "Installation address",
  "devm.stream.streamnumber": "GB/T 28181-2022 (a=streamnumber)",
  "devm.stream.stream": "vendor (a=stream)",
  "devm.stream.streamprofile": "vendor (a=streamprofile)",
  "devm.stream.none": "not specified",
  "devm.bad_id": "The device id must be 20 digits",
  "devm.check_fields": "Please check: {fields}",
  "devm.new_title": "Add device",
  "devm.edit_title": "Edit device: {name}",
  "devm.created": "Device {id} added (pre-registered: online once it registers)",
  "devm.saved": "Device {id} saved",
  "devm.delete_title": "Delete device: {name}",
  "devm.delete_offline": "Delete device {id}? Its presence history, audit entries and reports stay; the same id can be added again later.",
  "devm.delete_online": "Device {id} is online: it cannot simply be deleted.",
  "devm.force_delete": "Force delete",
  "devm.force_explain": "A forced delete also drops the device's registration with the platform (its signalling is cut): it shows offline and leaves the list at once; its next registration is refused until it is added again.",
  "devm.deleted": "Device {id} deleted",
  "devm.password_title": "Device password: {name}",
  "devm.password_saved": "Password of {id} saved: the device uses it from its next registration",
  "devm.password_cleared": "Device {id} now uses the platform-wide password",
  "devm.status_title": "Device status: {name}",
  "devm.st.result": "Query result",
  "devm.st.online": "Device says online",
  "devm.st.status": "Working state",
  "devm.st.encode": "Encoding",
  "devm.st.record": "Recording",
  "devm.st.device_time": "Device time",
  "devm.st.alarms": "Alarm inputs",
  "devm.st.none": "none",
  "devm.word.OK": "normal",
  "devm.word.ERROR": "fault",
  "devm.word.ONLINE": "online",
  "devm.word.OFFLINE": "offline",
  "devm.word.ON": "on",
  "devm.word.OFF": "off",
  "devm.word.ONDUTY": "armed",
  "devm.word.OFFDUTY": "disarmed",
  "devm.word.ALARM": "alarming",
  "devm.word.unknown": "not reported",
  "devm.import_title": "Import devices",
  "devm.import_file": "File (.csv or .xlsx, at most 5 MB and 10,000 rows)",
  "devm.import_hint": "Use the headers of the template; one device per row; bad rows are skipped and listed in the results.",
  "devm.import_go": "Import",
  "devm.import_pick": "Choose a .csv or .xlsx file",
  "devm.import_report": "Import results",
  "devm.import_summary": "{total} rows: {created} devices added, {updated} updated, {failed} rows failed",
  "devm.import_all_ok": "every row imported",
  "devm.download_failed": "Download failed: {error}",
  "devm.ok": "OK",
  "devm.failed": "failed",
  "devm.updated": "refreshes every 10 s · last updated {time}",
  "devm.code.device_online": "the device is online: not deleted",
  "devm.code.device_offline": "the device is offline: its catalog cannot be synced",
  "devm.code.device_not_found": "no such device",
  "devm.code.device_exists": "the device id exists already",
  "devm.code.bad_device_id": "invalid device id",
  "devm.code.weak_password": "the device password is weak",
  "devm.code.bad_org_node": "invalid organisation node",
  "devm.code.forbidden": "not allowed for this device",
  "devm.code.out_of_scope": "outside your scope",
  "devm.code.sip_unavailable": "the signalling service is unavailable",
});

const BASE = "/api/devices";
const REFRESH_MS = 10000;
const POLL_MS = 1000;
const PAGE_SIZES = [50, 100];
const STREAM_FORMS = ["streamnumber", "stream", "streamprofile", "none"];
const TRANSPORTS = ["udp", "tcp"];
const FORM_FIELDS = ["device_id", "name", "password", "transport", "org_node_id", "stream_form", "expected_channels",
                     "longitude", "latitude", "address"];
// the columns: key, words, the server's sort key (none: not sortable), "lo": hidden on a narrow screen
const COLUMNS = [
  { key: "status", label: "devm.col.status", sort: "online" },
  { key: "device_id", label: "devm.col.device_id", sort: "device_id" },
  { key: "name", label: "devm.col.name", sort: "name" },
  { key: "maker", label: "devm.col.maker", sort: "manufacturer", lo: true },
  { key: "addr", label: "devm.col.addr", sort: "remote_addr", lo: true },
  { key: "transport", label: "devm.col.transport", lo: true },
  { key: "channels", label: "devm.col.channels" },
  { key: "last_seen", label: "devm.col.last_seen", sort: "last_seen", lo: true },
  { key: "registered", label: "devm.col.registered", sort: "registered_at", lo: true },
  { key: "org", label: "devm.col.org", lo: true },
];
// newest first is what one wants from a time column
const DESC_FIRST = new Set(["last_seen", "registered_at", "online"]);

const CSS = `
.devm .devm-filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin-bottom: 10px; }
.devm .devm-filters label { display: inline-flex; align-items: center; gap: 6px; }
.devm .devm-filters input[type=search] { width: 260px; max-width: 100%; }
.devm .devm-batch { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; padding: 8px 10px; margin-bottom: 10px;
  background: var(--accent-soft, #e8f0fe); border-radius: 6px; }
.devm .devm-table-wrap { overflow-x: auto; max-width: 100%; }
.devm .devm-table th button.devm-sort { background: none; border: none; padding: 0; font: inherit; color: inherit;
  cursor: pointer; display: inline-flex; gap: 4px; align-items: center; }
.devm .devm-table th button.devm-sort:focus-visible { outline: 2px solid var(--accent, #2a6ee6); }
.devm .devm-table th[aria-sort=ascending] button.devm-sort::after { content: "▲"; font-size: 10px; }
.devm .devm-table th[aria-sort=descending] button.devm-sort::after { content: "▼"; font-size: 10px; }
.devm .devm-table td { white-space: nowrap; }
.devm .devm-table th { white-space: normal; vertical-align: bottom; }
.devm .devm-table th[data-col=channels] { min-width: 5.5em; }
.devm .devm-table td.devm-name, .devm .devm-table td.devm-maker { white-space: normal; min-width: 6em; }
.devm .devm-table td.devm-seen, .devm .devm-table td.devm-registered { white-space: normal; min-width: 6.5em; }
.devm .devm-table td.actions { white-space: normal; }
.devm .devm-actions { display: flex; flex-wrap: wrap; gap: 4px; width: 190px; }
.devm .devm-actions button { margin: 0; }
.devm .devm-sync { display: block; font-size: 12px; color: var(--muted, #667); margin-top: 2px; }
.devm .devm-sync.done { color: var(--ok, #13653b); }
.devm .devm-sync.bad { color: var(--bad, #8f1d1d); }
.devm .devm-pager { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; justify-content: flex-end; margin-top: 8px; }
.devm .devm-pager .muted { margin-right: auto; }
.devm-dialog .form-grid .field input, .devm-dialog .form-grid .field select { width: 100%; }
.devm-dialog .devm-report { max-height: 50vh; overflow: auto; }
.devm-dialog .devm-report td { white-space: normal; }
.devm-dialog .devm-report td:nth-child(2) { min-width: 6em; }
.devm-dialog .badge { white-space: normal; }
.devm .devm-report-wrap { max-height: 360px; overflow: auto; }
@media (max-width: 700px) {
  .devm .col-lo { display: none; }
  .devm .devm-actions { width: 150px; }
  .devm-dialog .form-grid { grid-template-columns: 1fr; }
}`;

const addStyle = pageStyle(CSS);

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

// t() of a key this page may not know: its fallback then
function word(key, fallback) {
  const text = t(key);
  return text === key ? fallback : text;
}

export function transportWord(value) {
  if (!value) return "—";
  return word("devm.transport." + String(value).toLowerCase(), t("devm.transport.unknown"));
}

// an error of the API in words: its code's words where this page has them, else the server's own text;
// ``detail``: the server's text after the code's words (the reason of a refused import row)
function errorWords(code, text, detail = true) {
  const known = code ? word("devm.code." + code, null) : null;
  if (known && text && detail) return `${known}（${serverText(text)}）`;
  return known || (text ? serverText(text) : t("devm.failed"));
}

// a 422 of the API's validation: name the fields by their labels
function formError(err) {
  if (err instanceof ApiError && err.code === "validation_error" && err.body && Array.isArray(err.body.details)) {
    const names = err.body.details.map((d) => {
      const loc = d.loc || [];
      const name = String(loc[loc.length - 1] ?? "");
      return FORM_FIELDS.includes(name) ? t("devm.f." + name) : name;
    });
    return new Error(t("devm.check_fields", { fields: [...new Set(names)].join("、") }));
  }
  return err;
}

// ------------------------------------------------------------------ downloads with the token
function fileName(r, fallback) {
  const cd = r.headers.get("content-disposition") || "";
  const star = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(cd);
  if (star) { try { return decodeURIComponent(star[1].trim().replace(/^"|"$/g, "")); } catch (_) { /* plain */ } }
  const plain = /filename="?([^";]+)"?/i.exec(cd);
  return plain ? plain[1] : fallback;
}

export async function download(path, fallback) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + (token.get() || "") } });
  if (!r.ok) {
    let text = "HTTP " + r.status;
    try { const data = await r.json(); if (data && data.message) text = serverText(data.message); } catch (_) { /* */ }
    throw new Error(text);
  }
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: fileName(r, fallback), class: "hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

// ------------------------------------------------------------------ organisation nodes (names, not ids)
async function loadOrg() {
  const byId = new Map();
  const options = [];
  let data = null;
  try { data = await get("/api/org/tree"); } catch (_) { return { byId, options }; }
  const nodes = data.nodes || [];
  for (const n of nodes) byId.set(n.id, n);
  for (const [n, depth] of orderedOrgNodes(nodes)) {
    options.push({ id: n.id, label: "\u3000".repeat(depth) + n.name, disabled: n.in_scope === false });
  }
  return { byId, options };
}

function orgSelect(org, value, { id, allowNone = true } = {}) {
  const sel = h("select", { id, name: "org_node_id" },
    allowNone ? h("option", { value: "" }, t("devm.unassigned")) : null,
    org.options.map((o) => h("option", { value: String(o.id), disabled: o.disabled }, o.label)));
  sel.value = value == null ? "" : String(value);
  return sel;
}

// ------------------------------------------------------------------ the view
export async function devicesView(root, route) {
  addStyle();
  root.classList.add("devm");
  const st = { q: "", online: "", sort: "device_id", order: "asc", offset: 0, limit: PAGE_SIZES[0] };
  const asked = route && route.params ? route.params : new URLSearchParams();  // links: #/devices?online=false
  if (["true", "false"].includes(asked.get("online"))) st.online = asked.get("online");
  if (asked.get("q")) st.q = asked.get("q").slice(0, 100);
  const selected = new Map(); // device id -> the device as last listed
  const syncs = new Map(); // device id -> {state, received, expected, error}
  const timers = new Set();
  let page = { total: 0, items: [] };
  let org = await loadOrg();
  const writer = can("device.write");
  let alive = true;

  const search = h("input", { type: "search", id: "devm-search", placeholder: t("devm.search"),
                              "aria-label": t("devm.search"), maxlength: 100 });
  const online = h("select", { id: "devm-online", "aria-label": t("devm.filter_online") },
    h("option", { value: "" }, t("common.all")), h("option", { value: "true" }, t("common.online")),
    h("option", { value: "false" }, t("common.offline")));
  const size = h("select", { id: "devm-size", "aria-label": t("devm.page_size") },
    PAGE_SIZES.map((n) => h("option", { value: String(n) }, t("devm.page_size_n", { n }))));
  online.value = st.online;
  search.value = st.q;
  // a refresh also reads the organisation tree again (a node added meanwhile)
  const refresh = h("button", { type: "button", id: "devm-refresh",
                                onclick: async () => { org = await loadOrg(); await reload(); } }, t("common.refresh"));
  const batch = h("div", { class: "devm-batch hidden", id: "devm-batch", role: "region",
                           "aria-label": t("devm.batch") });
  const table = h("table", { class: "table devm-table", id: "devm-table" });
  const pager = h("div", { class: "devm-pager", id: "devm-pager" });
  const failure = h("div", { id: "devm-error" });
  const report = h("div", { id: "devm-report" });
  const updated = h("p", { class: "muted", id: "devm-updated" });
  const zone = h("span", { class: "muted", id: "devm-zone" }, t("devm.beijing"));

  const tools = [
    writer ? h("button", { type: "button", class: "primary", id: "devm-add", onclick: () => editForm(null) },
      t("devm.add")) : null,
    writer ? h("button", { type: "button", id: "devm-import", onclick: importForm }, t("devm.import")) : null,
    h("button", { type: "button", id: "devm-export-csv", onclick: () => save(`${BASE}/export?format=csv`,
      "devices.csv") }, t("devm.export_csv")),
    h("button", { type: "button", id: "devm-export-xlsx", onclick: () => save(`${BASE}/export?format=xlsx`,
      "devices.xlsx") }, t("devm.export_xlsx")),
    writer ? h("button", { type: "button", id: "devm-template-csv", onclick: () =>
      save(`${BASE}/import/template?format=csv`, "devices-template.csv") }, t("devm.template_csv")) : null,
    writer ? h("button", { type: "button", id: "devm-template-xlsx", onclick: () =>
      save(`${BASE}/import/template?format=xlsx`, "devices-template.xlsx") }, t("devm.template_xlsx")) : null,
    refresh,
  ];
  root.append(pageHead(t("devm.title"), tools), failure, report,
    h("section", { class: "card" },
      h("div", { class: "devm-filters", role: "search" }, search,
        h("label", null, h("span", null, t("devm.filter_online")), online),
        h("label", null, h("span", null, t("devm.page_size")), size)),
      batch,
      h("div", { class: "devm-table-wrap" }, table),
      pager),
    updated);

  async function save(path, name) {
    try { await download(path, name); } catch (err) {
      toast(t("devm.download_failed", { error: err.message || String(err) }), "error");
    }
  }

  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { st.q = search.value.trim(); st.offset = 0; reload(); }, 300);
  });
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { clearTimeout(searchTimer); st.q = search.value.trim(); st.offset = 0; reload(); }
  });
  online.addEventListener("change", () => { st.online = online.value; st.offset = 0; reload(); });
  size.addEventListener("change", () => { st.limit = Number(size.value); st.offset = 0; reload(); });

  // ---------------------------------------------------------------- drawing
  function headCell(col) {
    const th = h("th", { class: col.lo ? "col-lo" : null, scope: "col", dataset: { col: col.key } });
    if (!col.sort) { th.append(t(col.label)); return th; }
    if (st.sort === col.sort) th.setAttribute("aria-sort", st.order === "asc" ? "ascending" : "descending");
    th.append(h("button", { type: "button", class: "devm-sort", title: t("devm.sort_hint"), dataset: { sort: col.sort },
      onclick: () => {
        if (st.sort === col.sort) st.order = st.order === "asc" ? "desc" : "asc";
        else { st.sort = col.sort; st.order = DESC_FIRST.has(col.sort) ? "desc" : "asc"; }
        st.offset = 0;
        reload();
      } }, t(col.label)));
    return th;
  }

  function syncLine(id) {
    const s = syncs.get(id);
    if (!s) return null;
    if (s.error) return h("span", { class: "devm-sync bad" }, t("devm.sync.failed", { error: s.error }));
    const vars = { received: s.received ?? 0, expected: s.expected ?? "?" };
    const key = s.state === "complete" ? "devm.sync.complete" : s.state === "partial" ? "devm.sync.partial"
      : "devm.sync.running";
    return h("span", { class: "devm-sync" + (s.state === "complete" ? " done" : s.state === "partial" ? " bad" : ""),
                       role: "status" }, t(key, vars));
  }

  function orgName(id) {
    if (id == null) return t("devm.unassigned");
    const n = org.byId.get(id);
    return n ? n.name : t("devm.org_hidden");
  }

  function row(d) {
    const id = d.device_id;
    const label = d.name || id;
    const box = h("input", { type: "checkbox", class: "devm-check", "aria-label": t("devm.select_one", { id }),
                             checked: selected.has(id) });
    box.addEventListener("change", () => {
      if (box.checked) selected.set(id, d); else selected.delete(id);
      drawBatch();
      drawAllBox();
    });
    const maker = [d.manufacturer, d.model].filter(Boolean).join(" / ") || "—";
    const total = d.channels_total ?? d.channel_count;
    const chans = `${d.channels_online ?? "—"} / ${total ?? "—"}`;
    const actions = h("td", { class: "actions" }, h("div", { class: "devm-actions" },
      writer ? h("button", { type: "button", class: "small devm-edit", onclick: () => editForm(d) }, t("common.edit"))
        : null,
      can("device.catalog_sync") ? h("button", { type: "button", class: "small devm-sync-btn",
        disabled: !d.online || (syncs.get(id) && syncs.get(id).state === "running" && !syncs.get(id).error),
        onclick: () => startSync(d) }, t("devm.sync")) : null,
      h("button", { type: "button", class: "small devm-status-btn", disabled: !d.online, onclick: () => statusDialog(d) },
        t("devm.status")),
      writer ? h("button", { type: "button", class: "small devm-password", onclick: () => passwordForm(d) },
        t("devm.password")) : null,
      writer ? h("button", { type: "button", class: "small danger devm-delete", onclick: () => deleteDialog(d) },
        t("common.delete")) : null),
      syncLine(id));
    return h("tr", { dataset: { device: id } },
      h("td", null, box),
      h("td", { class: "devm-state" }, badge(d.online ? t("common.online") : t("common.offline"), d.online ? "on" : "off")),
      h("td", { class: "mono devm-id" }, h("a", { href: `#/device/${encodeURIComponent(id)}` }, id)),
      h("td", { class: "devm-name" }, label === id ? "—" : label),
      h("td", { class: "col-lo devm-maker" }, maker),
      h("td", { class: "col-lo mono devm-addr" }, d.remote_addr || "—"),
      h("td", { class: "col-lo devm-transport" }, transportWord(d.transport)),
      h("td", { class: "devm-channels" }, chans),
      h("td", { class: "col-lo devm-seen" }, fmtTime(d.last_seen)),
      h("td", { class: "col-lo devm-registered" }, fmtTime(d.registered_at)),
      h("td", { class: "col-lo devm-org" }, orgName(d.org_node_id)),
      actions);
  }

  const allBox = h("input", { type: "checkbox", id: "devm-all", "aria-label": t("devm.select_all") });
  allBox.addEventListener("change", () => {
    for (const d of page.items) { if (allBox.checked) selected.set(d.device_id, d); else selected.delete(d.device_id); }
    for (const b of table.querySelectorAll("input.devm-check")) b.checked = allBox.checked;
    drawBatch();
  });
  function drawAllBox() {
    const n = page.items.filter((d) => selected.has(d.device_id)).length;
    allBox.checked = n > 0 && n === page.items.length;
    allBox.indeterminate = n > 0 && n < page.items.length;
  }

  function drawTable() {
    const head = h("tr", null, h("th", { scope: "col" }, allBox), COLUMNS.map(headCell),
      h("th", { scope: "col" }, t("common.actions")));
    const rows = page.items.map(row);
    clear(table).append(h("thead", null, head), h("tbody", null, rows.length ? rows
      : h("tr", null, h("td", { colspan: COLUMNS.length + 2, class: "empty muted" }, t("devm.empty")))));
    drawAllBox();
    const from = page.total ? st.offset + 1 : 0;
    const to = st.offset + page.items.length;
    clear(pager).append(
      h("span", { class: "muted", id: "devm-range" }, t("common.page", { from, to, total: page.total }), " · ", zone),
      h("button", { type: "button", id: "devm-prev", disabled: st.offset <= 0,
                    onclick: () => { st.offset = Math.max(0, st.offset - st.limit); reload(); } }, t("common.prev")),
      h("button", { type: "button", id: "devm-next", disabled: to >= page.total,
                    onclick: () => { st.offset += st.limit; reload(); } }, t("common.next")));
  }

  function drawBatch() {
    if (!selected.size || !writer) { batch.classList.add("hidden"); clear(batch); return; }
    batch.classList.remove("hidden");
    clear(batch).append(
      h("strong", { id: "devm-selected" }, t("devm.selected", { n: selected.size })),
      h("button", { type: "button", id: "devm-batch-move", onclick: batchMove }, t("devm.batch_move")),
      h("button", { type: "button", id: "devm-batch-sync", onclick: () => runBatch({ action: "catalog_sync" }) },
        t("devm.batch_sync")),
      h("button", { type: "button", class: "danger", id: "devm-batch-delete", onclick: batchDelete },
        t("devm.batch_delete")),
      h("button", { type: "button", class: "ghost", id: "devm-batch-clear",
                    onclick: () => { selected.clear(); drawBatch(); drawTable(); } }, t("devm.clear_selection")));
  }

  // ---------------------------------------------------------------- loading
  let seq = 0;
  let first = true;
  async function reload() {
    const mine = ++seq;
    const params = { q: st.q || undefined, online: st.online || undefined, sort: st.sort, order: st.order,
                     offset: st.offset, limit: st.limit };
    try {
      const data = await get(BASE, params);
      if (mine !== seq || !alive) return;
      // the last page emptied (devices deleted meanwhile): step back
      if (!data.items.length && st.offset > 0 && data.total > 0) {
        st.offset = Math.max(0, Math.floor((data.total - 1) / st.limit) * st.limit);
        await reload();
        return;
      }
      page = data;
      for (const d of page.items) if (selected.has(d.device_id)) selected.set(d.device_id, d);
      clear(failure);
      drawTable();
      drawBatch();
      updated.textContent = t("devm.updated", { time: fmtTime(new Date()) });
    } catch (err) {
      if (first) throw err; // the router says why the page cannot be shown
      if (mine === seq) clear(failure).append(message(`${t("common.error")}: ${err.message || err}`, "error"));
    } finally {
      first = false;
    }
  }

  // ---------------------------------------------------------------- catalog sync with its progress
  function pollSync(id) {
    const timer = setTimeout(async () => {
      timers.delete(timer);
      if (!alive) return;
      try {
        const p = await get(`${BASE}/${encodeURIComponent(id)}/catalog-sync`);
        syncs.set(id, { state: p.state, received: p.received, expected: p.expected });
        if (p.state === "running") pollSync(id); else reload();
      } catch (err) {
        syncs.set(id, { error: err.message || String(err) });
      }
      redrawSync(id);
    }, POLL_MS);
    timers.add(timer);
  }

  function redrawSync(id) {
    const tr = table.querySelector(`tr[data-device="${CSS_escape(id)}"]`);
    if (!tr) return;
    const cell = tr.querySelector("td.actions");
    const old = cell.querySelector(".devm-sync");
    if (old) old.remove();
    const line = syncLine(id);
    if (line) cell.append(line);
    const btn = cell.querySelector(".devm-sync-btn");
    const s = syncs.get(id);
    if (btn) btn.disabled = !!(s && s.state === "running" && !s.error);
  }

  async function startSync(d) {
    const id = d.device_id;
    try {
      const p = await post(`${BASE}/${encodeURIComponent(id)}/catalog-sync`);
      syncs.set(id, { state: p.state, received: p.received, expected: p.expected });
      toast(t("devm.sync.started", { id }), "ok");
      if (p.state === "running") pollSync(id);
    } catch (err) {
      syncs.set(id, { error: errorWords(err.code, err.message) });
    }
    redrawSync(id);
  }

  // ---------------------------------------------------------------- status query
  function stWord(v) {
    if (v === null || v === undefined || v === "") return t("devm.word.unknown");
    if (typeof v === "boolean") return t(v ? "devm.word.ONLINE" : "devm.word.OFFLINE");
    return word("devm.word." + String(v).toUpperCase(), String(v));
  }

  async function statusDialog(d) {
    let s;
    try { s = await get(`${BASE}/${encodeURIComponent(d.device_id)}/status`); } catch (err) {
      toast(errorWords(err.code, err.message), "error");
      return;
    }
    const dlg = modal(t("devm.status_title", { name: d.name || d.device_id }), (body) => {
      const facts = [["result", stWord(s.result)], ["online", stWord(s.online)], ["status", stWord(s.status)],
        ["encode", stWord(s.encode)], ["record", stWord(s.record)],
        // the device's own wall clock (GB/T 28181 sends it without a zone): shown as the device said it
        ["device_time", s.device_time ? String(s.device_time).replace("T", " ") : t("devm.word.unknown")],
        ["alarms", (s.alarms || []).length ? s.alarms.map((a) => `${a[0]}：${stWord(a[1])}`).join("；")
          : t("devm.st.none")]];
      body.append(h("dl", { class: "facts", id: "devm-status-facts" },
        facts.map(([k, v]) => [h("dt", null, t("devm.st." + k)), h("dd", { dataset: { k } }, v)])));
    }, null);
    dlg.classList.add("devm-dialog");
    closeLabel(dlg);
  }

  // ---------------------------------------------------------------- add / edit
  function editForm(d) {
    const f = {
      device_id: h("input", { id: "devm-f-device_id", name: "device_id", required: true, inputmode: "numeric",
                              maxlength: 20, autocomplete: "off", value: d ? d.device_id : "",
                              readonly: !!d }),
      name: h("input", { id: "devm-f-name", name: "name", required: true, maxlength: 64, value: d ? d.name || "" : "" }),
      password: h("input", { id: "devm-f-password", name: "password", type: "password", autocomplete: "new-password",
                             maxlength: 128 }),
      transport: h("select", { id: "devm-f-transport", name: "transport" },
        TRANSPORTS.map((v) => h("option", { value: v }, transportWord(v)))),
      org_node_id: orgSelect(org, d ? d.org_node_id : null, { id: "devm-f-org_node_id" }),
      stream_form: h("select", { id: "devm-f-stream_form", name: "stream_form" },
        STREAM_FORMS.map((v) => h("option", { value: v }, t("devm.stream." + v)))),
      expected_channels: h("input", { id: "devm-f-expected_channels", name: "expected_channels", type: "number",
                                      min: 0, max: 4096, step: 1, value: d && d.expected_channels != null
                                        ? String(d.expected_channels) : "" }),
      longitude: h("input", { id: "devm-f-longitude", name: "longitude", type: "number", min: -180, max: 180,
                              step: "any", value: d && d.longitude != null ? String(d.longitude) : "" }),
      latitude: h("input", { id: "devm-f-latitude", name: "latitude", type: "number", min: -90, max: 90, step: "any",
                             value: d && d.latitude != null ? String(d.latitude) : "" }),
      address: h("input", { id: "devm-f-address", name: "address", maxlength: 200, value: d ? d.address || "" : "" }),
    };
    f.transport.value = d && TRANSPORTS.includes(String(d.transport).toLowerCase()) ? String(d.transport).toLowerCase()
      : "udp";
    f.stream_form.value = d && STREAM_FORMS.includes(d.stream_form) ? d.stream_form : "none";
    const clearPw = h("input", { type: "checkbox", id: "devm-f-password-clear" });
    const dlg = modal(d ? t("devm.edit_title", { name: d.name || d.device_id }) : t("devm.new_title"), (body) => {
      body.append(h("div", { class: "form-grid", id: "devm-form" },
        field(t("devm.f.device_id"), f.device_id),
        field(t("devm.f.name"), f.name),
        field(t("devm.f.password"), f.password, d ? t("devm.f.password_hint_edit") : t("devm.f.password_hint_new")),
        field(t("devm.f.transport"), f.transport),
        field(t("devm.f.org_node_id"), f.org_node_id),
        field(t("devm.f.stream_form"), f.stream_form),
        field(t("devm.f.expected_channels"), f.expected_channels),
        field(t("devm.f.address"), f.address),
        field(t("devm.f.longitude"), f.longitude),
        field(t("devm.f.latitude"), f.latitude)),
      ...(d ? [h("label", { class: "check" }, clearPw, t("devm.f.password_clear"))] : []));
    }, async () => {
      const id = f.device_id.value.trim();
      if (!/^\d{20}$/.test(id)) { f.device_id.focus(); throw new Error(t("devm.bad_id")); }
      const num = (el) => (el.value === "" ? null : Number(el.value));
      const body = {
        name: f.name.value.trim(),
        transport: f.transport.value,
        org_node_id: f.org_node_id.value === "" ? null : Number(f.org_node_id.value),
        stream_form: f.stream_form.value,
        expected_channels: num(f.expected_channels),
        longitude: num(f.longitude),
        latitude: num(f.latitude),
        address: f.address.value.trim() || null,
      };
      try {
        if (d) {
          if (clearPw.checked) body.password = null; else if (f.password.value) body.password = f.password.value;
          await patch(`${BASE}/${encodeURIComponent(id)}`, body);
          toast(t("devm.saved", { id }), "ok");
        } else {
          await post(BASE, { device_id: id, ...body, password: f.password.value || null });
          toast(t("devm.created", { id }), "ok");
        }
      } catch (err) { throw formError(err); }
      await reload();
    }, { saveLabel: d ? t("common.save") : t("devm.add") });
    dlg.classList.add("devm-dialog");
    dlg.id = d ? "devm-edit-dialog" : "devm-add-dialog";
    (d ? f.name : f.device_id).focus();
  }

  function passwordForm(d) {
    const pw = h("input", { id: "devm-pw", type: "password", autocomplete: "new-password", maxlength: 128 });
    const clearPw = h("input", { type: "checkbox", id: "devm-pw-clear" });
    const dlg = modal(t("devm.password_title", { name: d.name || d.device_id }), (body) => {
      body.append(field(t("devm.f.password"), pw, t("devm.f.password_hint_new")),
        h("label", { class: "check" }, clearPw, t("devm.f.password_clear")));
    }, async () => {
      const value = clearPw.checked ? null : pw.value;
      if (value === "") { pw.focus(); return false; }
      await put(`${BASE}/${encodeURIComponent(d.device_id)}/password`, { password: value });
      toast(t(value === null ? "devm.password_cleared" : "devm.password_saved", { id: d.device_id }), "ok");
    });
    dlg.classList.add("devm-dialog");
    pw.focus();
  }

  // ---------------------------------------------------------------- delete
  function deleteDialog(d) {
    const id = d.device_id;
    const dlg = modal(t("devm.delete_title", { name: d.name || id }), (body) => {
      if (d.online) body.append(message(t("devm.delete_online", { id }), "warn"), h("p", null, t("devm.force_explain")));
      else body.append(h("p", null, t("devm.delete_offline", { id })));
    }, async () => {
      await del(`${BASE}/${encodeURIComponent(id)}`, { force: d.online ? "true" : "false" });
      selected.delete(id);
      syncs.delete(id);
      toast(t("devm.deleted", { id }), "ok");
      await reload();
    }, { saveLabel: d.online ? t("devm.force_delete") : t("common.delete") });
    dlg.classList.add("devm-dialog");
    dlg.id = "devm-delete-dialog";
    const btn = dlg.querySelector("button[type=submit]");
    if (btn) { btn.classList.remove("primary"); btn.classList.add("danger"); btn.id = "devm-delete-confirm"; }
  }

  // ---------------------------------------------------------------- batch
  function showResults(results) {
    const names = new Map([...selected.values()].map((d) => [d.device_id, d.name]));
    const ok = results.filter((r) => r.ok).length;
    const dlg = modal(t("devm.batch_results"), (body) => {
      body.append(h("p", { id: "devm-batch-summary" }, t("devm.batch_summary", { ok, failed: results.length - ok })),
        h("div", { class: "devm-report" }, h("table", { class: "table compact", id: "devm-batch-results" },
          h("thead", null, h("tr", null, h("th", null, t("devm.col.device_id")), h("th", null, t("devm.col.name")),
            h("th", null, t("devm.col.result")))),
          h("tbody", null, results.map((r) => h("tr", { dataset: { device: r.device_id } },
            h("td", { class: "mono" }, r.device_id), h("td", null, names.get(r.device_id) || "—"),
            h("td", { title: r.ok ? null : serverText(r.message || "") },
              r.ok ? badge(t("devm.ok"), "on") : badge(errorWords(r.code, r.message, false), "off"))))))));
    }, null);
    closeLabel(dlg);
    dlg.classList.add("devm-dialog", "wide");
    dlg.id = "devm-batch-dialog";
  }

  async function runBatch(extra) {
    const ids = [...selected.keys()];
    if (!ids.length) return;
    let out;
    try { out = await post(`${BASE}/batch`, { device_ids: ids, org_node_id: null, force: false, ...extra }); } catch (err) {
      toast(errorWords(err.code, err.message), "error");
      return;
    }
    const results = out.results || [];
    showResults(results);
    if (extra.action === "catalog_sync") {
      for (const r of results) if (r.ok) { syncs.set(r.device_id, { state: "running" }); pollSync(r.device_id); }
    }
    if (extra.action === "delete") for (const r of results) if (r.ok) selected.delete(r.device_id);
    await reload();
  }

  function batchMove() {
    const sel = orgSelect(org, null, { id: "devm-move-target" });
    const dlg = modal(t("devm.batch_move"), (body) => {
      body.append(h("p", null, t("devm.selected", { n: selected.size })), field(t("devm.move_to"), sel));
    }, async () => {
      await runBatch({ action: "move", org_node_id: sel.value === "" ? null : Number(sel.value) });
    }, { saveLabel: t("devm.batch_move") });
    dlg.classList.add("devm-dialog");
    sel.focus();
  }

  function batchDelete() {
    const dlg = modal(t("devm.batch_delete"), (body) => {
      body.append(h("p", null, t("devm.batch_delete_confirm", { n: selected.size })));
    }, async () => { await runBatch({ action: "delete", force: false }); }, { saveLabel: t("devm.batch_delete") });
    dlg.classList.add("devm-dialog");
  }

  // ---------------------------------------------------------------- import
  function importForm() {
    const file = h("input", { type: "file", id: "devm-import-file", name: "file", required: true,
                              accept: ".csv,.xlsx,text/csv,application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" });
    const dlg = modal(t("devm.import_title"), (body) => {
      body.append(h("p", { class: "muted" }, t("devm.import_hint")), field(t("devm.import_file"), file));
    }, async () => {
      const chosen = file.files && file.files[0];
      if (!chosen) throw new Error(t("devm.import_pick"));
      const fd = new FormData();
      fd.append("file", chosen, chosen.name);
      const r = await fetch(`${BASE}/import`, { method: "POST", body: fd,
                                                 headers: { Authorization: "Bearer " + (token.get() || "") } });
      let data = null;
      try { data = await r.json(); } catch (_) { data = null; }
      if (!r.ok) {
        throw new Error(errorWords(data && data.error, data && data.message ? data.message : "HTTP " + r.status));
      }
      drawReport(data);
      await reload();
    }, { saveLabel: t("devm.import_go") });
    dlg.classList.add("devm-dialog");
    dlg.id = "devm-import-dialog";
    file.focus();
  }

  function drawReport(data) {
    const errors = data.errors || [];
    const close = h("button", { type: "button", class: "ghost small", id: "devm-report-close",
                                onclick: () => clear(report) }, t("common.close"));
    clear(report).append(h("section", { class: "card", id: "devm-import-report" },
      h("div", { class: "page-head" }, h("h2", null, t("devm.import_report")), close),
      h("p", { id: "devm-import-summary" }, t("devm.import_summary", { total: data.total ?? 0, created: data.created ?? 0,
        updated: data.updated ?? 0, failed: data.failed ?? errors.length })),
      errors.length ? h("div", { class: "devm-report-wrap" }, h("table", { class: "table compact", id: "devm-import-errors" },
        h("thead", null, h("tr", null, h("th", null, t("devm.col.row")), h("th", null, t("devm.col.device_id")),
          h("th", null, t("devm.col.reason")))),
        h("tbody", null, errors.map((e) => h("tr", { dataset: { row: e.row } },
          h("td", null, String(e.row)), h("td", { class: "mono" }, e.device_id || "—"),
          h("td", null, errorWords(e.code, e.message)))))))
        : message(t("devm.import_all_ok"), "info")));
  }

  await reload();
  const timer = setInterval(() => {
    if (document.querySelector("dialog.modal[open]")) return; // an open form keeps the table still
    if (table.contains(document.activeElement)) return; // so does a keyboard user working in the table
    reload();
  }, REFRESH_MS);
  return () => {
    alive = false;
    clearInterval(timer);
    clearTimeout(searchTimer);
    for (const x of timers) clearTimeout(x);
    root.classList.remove("devm");
  };
}

// a dialog that only shows something: its one button closes it
function closeLabel(dlg) {
  const btn = dlg.querySelector(".modal-actions button");
  if (btn) btn.textContent = t("common.close");
}

// a device id in an attribute selector (ids are digits, but a hostile list must not break the query)
function CSS_escape(value) {
  return window.CSS && CSS.escape ? CSS.escape(value) : String(value).replace(/["\\]/g, "\\$&");
}
