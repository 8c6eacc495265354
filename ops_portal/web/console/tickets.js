// 故障工单 (issue 18): the ticket list with its filters (state, overdue, waiting for repair, kind, device, channel,
// contract, organisation node (descendants included) and a search box, all the server's, kept in the address) and
// paging, every code in words and the SLA deadline as a live countdown; the detail dialog (#/tickets?id=N keeps
// it in the address) with the state flow as buttons for the moves the API allows, the history of moves (who, when,
// Beijing time), the countdown and the snapshot (uploaded with PUT, shown through a blob URL: <img src> cannot send
// the token); the 报修 dialog (a channel searched in /api/channels, or device and channel ids), also opened preset
// by other pages through openRepairDialog(channel); and mountTicketBell(container), the header's counts.
// The page's own CSS is a constructed style sheet (adoptedStyleSheets): the console's CSP allows no inline <style>.
import { ApiError, get, post, token } from "./api.js";
import { badge, clear, field, fmtTime, h, message, modal, pageStyle, toast } from "./dom.js";
import { orderedOrgNodes } from "./data.js";
import { extend, serverText, t } from "./i18n.js";
import { can } from "./session.js";

extend({
  "tk.title": "故障工单",
  "tk.new": "新建工单（报修）",
  "tk.beijing": "时间均为北京时间。",
  "tk.updated": "每 30 秒自动刷新 · 最近更新 {time}",
  "tk.empty": "没有符合条件的工单",
  "tk.f.state": "状态",
  "tk.f.open": "处理进度",
  "tk.f.open.true": "待修复",
  "tk.f.open.false": "已修复",
  "tk.f.overdue": "超期",
  "tk.f.overdue.true": "已超期",
  "tk.f.overdue.false": "未超期",
  "tk.f.kind": "类型",
  "tk.f.device": "设备编码",
  "tk.f.channel": "通道编码",
  "tk.f.contract": "合同",
  "tk.f.org": "组织",
  "tk.f.search": "搜索",
  "tk.f.search_ph": "描述、通道名称或编码",
  "tk.f.size": "每页",
  "tk.f.size_n": "{n} 条",
  "tk.f.apply": "筛选",
  "tk.f.reset": "清除筛选",
  "tk.col.id": "编号",
  "tk.col.state": "状态",
  "tk.col.channel": "故障点位",
  "tk.col.kind": "类型",
  "tk.col.reporter": "报修人",
  "tk.col.reported": "报修时间",
  "tk.col.sla": "修复期限",
  "tk.col.contract": "合同",
  "tk.detail": "详情",
  "tk.state.reported": "待受理",
  "tk.state.acknowledged": "已受理",
  "tk.state.repairing": "维修中",
  "tk.state.repaired": "已修复待确认",
  "tk.state.confirmed": "已确认",
  "tk.state.reopened": "已重开",
  "tk.act.acknowledge": "受理",
  "tk.act.start_repair": "开始维修",
  "tk.act.feedback": "修复反馈",
  "tk.act.confirm": "确认修复",
  "tk.act.reopen": "重开",
  "tk.act.recover": "设备自动恢复",
  "tk.act.report": "报修",
  "tk.act.done": "工单 {id}：{action}完成，当前状态“{state}”",
  "tk.kind.fault": "点位故障",
  "tk.kind.quality": "视频质量异常",
  "tk.source.user": "人工报修",
  "tk.source.auto_offline": "离线自动生成",
  "tk.source.auto_quality": "质量检测自动生成",
  "tk.source.auto_alarm": "报警自动生成",
  "tk.source.auto_clock": "时钟偏差自动生成",
  "tk.anomaly.black": "黑屏",
  "tk.anomaly.overexposed": "过曝",
  "tk.anomaly.frozen": "画面冻结",
  "tk.anomaly.blur": "模糊",
  "tk.anomaly.color_cast": "偏色",
  "tk.anomaly.occlusion": "遮挡",
  "tk.anomaly.low_resolution": "分辨率不足",
  "tk.anomaly.other": "其他",
  "tk.actor.system": "系统",
  "tk.left": "剩余 {time}",
  "tk.late": "已超时 {time}",
  "tk.days": "{d} 天 {h} 小时 {m} 分",
  "tk.hours": "{h} 小时 {m} 分",
  "tk.minutes": "{m} 分",
  "tk.within": "时限内修复（用时 {time}）",
  "tk.missed": "超时限修复（用时 {time}）",
  "tk.deadline_at": "期限 {time}",
  "tk.no_contract": "默认时限",
  "tk.contract_n": "合同 {id}",
  "tk.device_only": "整台设备",
  "tk.d.title": "工单 {id}",
  "tk.d.state": "当前状态",
  "tk.d.subject": "故障点位",
  "tk.d.kind": "类型",
  "tk.d.source": "来源",
  "tk.d.anomaly": "异常类型",
  "tk.d.note": "故障描述",
  "tk.d.reporter": "报修人",
  "tk.d.reported": "报修时间",
  "tk.d.limit": "修复时限",
  "tk.d.limit_h": "{h} 小时",
  "tk.d.deadline": "修复期限",
  "tk.d.sla": "SLA 倒计时",
  "tk.d.contract": "合同",
  "tk.d.feedback": "修复反馈",
  "tk.d.flow": "处理",
  "tk.d.comment": "说明（修复反馈必填）",
  "tk.d.no_actions": "当前状态没有可执行的处理。",
  "tk.d.feedback_note": "修复反馈须填写说明",
  "tk.d.history": "处理记录",
  "tk.d.h.at": "时间",
  "tk.d.h.action": "处理",
  "tk.d.h.move": "状态变化",
  "tk.d.h.actor": "处理人",
  "tk.d.h.note": "说明",
  "tk.d.h.empty": "尚无处理记录",
  "tk.d.snapshot": "现场图片",
  "tk.d.snap_none": "尚无现场图片",
  "tk.d.snap_file": "选择图片（JPEG 或 PNG）",
  "tk.d.snap_upload": "上传图片",
  "tk.d.snap_pick": "请先选择一个 JPEG 或 PNG 图片",
  "tk.d.snap_done": "现场图片已上传",
  "tk.d.snap_alt": "工单 {id} 的现场图片",
  "tk.d.snap_failed": "图片加载失败：{error}",
  "tk.r.title": "新建工单（报修）",
  "tk.r.search": "搜索通道（编码、名称、地址）",
  "tk.r.results": "选择通道",
  "tk.r.pick": "— 请选择 —",
  "tk.r.no_match": "没有匹配的通道",
  "tk.r.device_id": "设备编码",
  "tk.r.channel_id": "通道编码",
  "tk.r.channel": "故障通道",
  "tk.r.kind": "类型",
  "tk.r.anomaly": "异常类型",
  "tk.r.note": "故障描述",
  "tk.r.note_ph": "例如：画面黑屏、无法连接",
  "tk.r.submit": "提交报修",
  "tk.r.need_subject": "请选择故障通道，或填写设备编码和通道编码",
  "tk.r.bad_id": "设备编码和通道编码只能包含字母、数字、下划线和连字符",
  "tk.r.created": "已创建工单 {id}",
  "tk.bell": "工单通知",
  "tk.bell.open": "待修复 {n}",
  "tk.bell.overdue": "已超期 {n}",
  "tk.bell.new": "新通知 {n}",
  "tk.bell.recent": "最近通知",
  "tk.bell.none": "没有通知",
  "tk.bell.all": "查看全部工单",
  "tk.note.ticket.opened": "自动生成工单",
  "tk.note.ticket.overdue": "工单超期",
  "tk.code.illegal_transition": "当前状态不能执行此处理",
  "tk.code.feedback_note_required": "修复反馈须填写说明",
  "tk.code.ticket_not_found": "工单不存在",
  "tk.code.ticket_forbidden": "无权访问此工单",
  "tk.code.channel_not_found": "通道不存在",
  "tk.code.device_not_found": "设备不存在",
  "tk.code.channel_device_mismatch": "通道不属于该设备",
  "tk.code.snapshot_too_large": "图片过大",
  "tk.code.snapshot_not_image": "只接受 JPEG 或 PNG 图片",
  "tk.code.snapshot_not_found": "该工单没有现场图片",
  "tk.code.forbidden": "无权执行此操作",
  "tk.code.out_of_scope": "不在您的管辖范围内",
  "tk.code.contract_not_found": "合同不存在",
  "tk.code.org_node_not_found": "组织节点不存在",
}, {
  "tk.title": "Fault tickets",
  "tk.new": "New ticket (report a fault)",
  "tk.beijing": "All times are Beijing time.",
  "tk.updated": "Refreshed every 30 s · last update {time}",
  "tk.empty": "No ticket matches",
  "tk.f.state": "State",
  "tk.f.open": "Progress",
  "tk.f.open.true": "waiting for repair",
  "tk.f.open.false": "repaired",
  "tk.f.overdue": "Overdue",
  "tk.f.overdue.true": "overdue",
  "tk.f.overdue.false": "not overdue",
  "tk.f.kind": "Kind",
  "tk.f.device": "Device id",
  "tk.f.channel": "Channel id",
  "tk.f.contract": "Contract",
  "tk.f.org": "Organisation",
  "tk.f.search": "Search",
  "tk.f.search_ph": "description, channel name or id",
  "tk.f.size": "Per page",
  "tk.f.size_n": "{n}",
  "tk.f.apply": "Filter",
  "tk.f.reset": "Clear filters",
  "tk.col.id": "No.",
  "tk.col.state": "State",
  "tk.col.channel": "Faulty point",
  "tk.col.kind": "Kind",
  "tk.col.reporter": "Reported by",
  "tk.col.reported": "Reported at",
  "tk.col.sla": "Repair deadline",
  "tk.col.contract": "Contract",
  "tk.detail": "Details",
  "tk.state.reported": "waiting for acceptance",
  "tk.state.acknowledged": "accepted",
  "tk.state.repairing": "under repair",
  "tk.state.repaired": "repaired, to be confirmed",
  "tk.state.confirmed": "confirmed",
  "tk.state.reopened": "reopened",
  "tk.act.acknowledge": "Accept",
  "tk.act.start_repair": "Start repair",
  "tk.act.feedback": "Report repaired",
  "tk.act.confirm": "Confirm repair",
  "tk.act.reopen": "Reopen",
  "tk.act.recover": "Device recovered",
  "tk.act.report": "Report",
  "tk.act.done": "Ticket {id}: {action} done, now “{state}”",
  "tk.kind.fault": "point fault",
  "tk.kind.quality": "video quality",
  "tk.source.user": "reported by a person",
  "tk.source.auto_offline": "automatic (offline)",
  "tk.source.auto_quality": "automatic (quality check)",
  "tk.source.auto_alarm": "automatic (alarm)",
  "tk.source.auto_clock": "automatic (clock drift)",
  "tk.anomaly.black": "black picture",
  "tk.anomaly.overexposed": "overexposed",
  "tk.anomaly.frozen": "frozen picture",
  "tk.anomaly.blur": "blurred",
  "tk.anomaly.color_cast": "colour cast",
  "tk.anomaly.occlusion": "occluded",
  "tk.anomaly.low_resolution": "resolution too low",
  "tk.anomaly.other": "other",
  "tk.actor.system": "system",
  "tk.left": "{time} left",
  "tk.late": "overdue by {time}",
  "tk.days": "{d} d {h} h {m} min",
  "tk.hours": "{h} h {m} min",
  "tk.minutes": "{m} min",
  "tk.within": "repaired within the limit (in {time})",
  "tk.missed": "repaired late (in {time})",
  "tk.deadline_at": "due {time}",
  "tk.no_contract": "default limit",
  "tk.contract_n": "contract {id}",
  "tk.device_only": "whole device",
  "tk.d.title": "Ticket {id}",
  "tk.d.state": "State",
  "tk.d.subject": "Faulty point",
  "tk.d.kind": "Kind",
  "tk.d.source": "Source",
  "tk.d.anomaly": "Anomaly",
  "tk.d.note": "Description",
  "tk.d.reporter": "Reported by",
  "tk.d.reported": "Reported at",
  "tk.d.limit": "Repair limit",
  "tk.d.limit_h": "{h} h",
  "tk.d.deadline": "Deadline",
  "tk.d.sla": "SLA countdown",
  "tk.d.contract": "Contract",
  "tk.d.feedback": "Repair feedback",
  "tk.d.flow": "Handle",
  "tk.d.comment": "Note (required for the repair feedback)",
  "tk.d.no_actions": "Nothing can be done in this state.",
  "tk.d.feedback_note": "The repair feedback needs a note",
  "tk.d.history": "History",
  "tk.d.h.at": "Time",
  "tk.d.h.action": "Action",
  "tk.d.h.move": "State change",
  "tk.d.h.actor": "By",
  "tk.d.h.note": "Note",
  "tk.d.h.empty": "Nothing done yet",
  "tk.d.snapshot": "Snapshot",
  "tk.d.snap_none": "No snapshot yet",
  "tk.d.snap_file": "Choose an image (JPEG or PNG)",
  "tk.d.snap_upload": "Upload image",
  "tk.d.snap_pick": "Choose a JPEG or PNG image first",
  "tk.d.snap_done": "Snapshot uploaded",
  "tk.d.snap_alt": "Snapshot of ticket {id}",
  "tk.d.snap_failed": "The image could not be loaded: {error}",
  "tk.r.title": "New ticket (report a fault)",
  "tk.r.search": "Search channels (id, name, address)",
  "tk.r.results": "Channel",
  "tk.r.pick": "— choose —",
  "tk.r.no_match": "No channel matches",
  "tk.r.device_id": "Device id",
  "tk.r.channel_id": "Channel id",
  "tk.r.channel": "Faulty channel",
  "tk.r.kind": "Kind",
  "tk.r.anomaly": "Anomaly",
  "tk.r.note": "Description",
  "tk.r.note_ph": "e.g. black picture, cannot connect",
  "tk.r.submit": "Report",
  "tk.r.need_subject": "Choose the faulty channel, or enter the device and channel ids",
  "tk.r.bad_id": "Device and channel ids may contain only letters, digits, _ and -",
  "tk.r.created": "Ticket {id} created",
  "tk.bell": "Ticket notifications",
  "tk.bell.open": "{n} waiting for repair",
  "tk.bell.overdue": "{n} overdue",
  "tk.bell.new": "{n} new",
  "tk.bell.recent": "Recent notifications",
  "tk.bell.none": "No notifications",
  "tk.bell.all": "All tickets",
  "tk.note.ticket.opened": "ticket opened automatically",
  "tk.note.ticket.overdue": "ticket overdue",
  "tk.code.illegal_transition": "This cannot be done in the ticket's state",
  "tk.code.feedback_note_required": "The repair feedback needs a note",
  "tk.code.ticket_not_found": "No such ticket",
  "tk.code.ticket_forbidden": "No access to this ticket",
  "tk.code.channel_not_found": "No such channel",
  "tk.code.device_not_found": "No such device",
  "tk.code.channel_device_mismatch": "The channel is not on that device",
  "tk.code.snapshot_too_large": "The image is too large",
  "tk.code.snapshot_not_image": "Only JPEG or PNG images are accepted",
  "tk.code.snapshot_not_found": "This ticket has no snapshot",
  "tk.code.forbidden": "Not allowed",
  "tk.code.out_of_scope": "Outside your area",
  "tk.code.contract_not_found": "No such contract",
  "tk.code.org_node_not_found": "No such organisation node",
});

const BASE = "/api/tickets";
const STATES = ["reported", "acknowledged", "repairing", "repaired", "confirmed", "reopened"];
const ACTIONS = ["acknowledge", "start_repair", "feedback", "confirm", "reopen"];
const KINDS = ["fault", "quality"];
const ANOMALIES = ["black", "overexposed", "frozen", "blur", "color_cast", "occlusion", "low_resolution", "other"];
const ID_RE = /^[0-9A-Za-z_-]{1,32}$/;
const PAGE_SIZES = [50, 100];
const REFRESH_MS = 30000;
const TICK_MS = 15000;
const FILTERS = ["state", "open", "overdue", "kind", "device_id", "channel_id", "contract_id", "org_node_id", "q"];
const SEARCH_MAX = 64; // the server's limit of q
const SEARCH_DELAY_MS = 300;
const OPEN_STATES = new Set(["reported", "acknowledged", "repairing", "reopened"]);

const CSS = `
.tk .tk-filters { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: flex-end; margin-bottom: 10px; }
.tk .tk-filters label { display: inline-flex; flex-direction: column; gap: 2px; font-size: 12.5px; }
.tk .tk-filters input { width: 13em; max-width: 100%; }
.tk .tk-filters select { max-width: 100%; }
.tk .tk-filters select#tk-contract, .tk .tk-filters select#tk-org { width: 13em; }
.tk .tk-filters label.tk-search input { width: 16em; }
.tk .tk-table-wrap { overflow-x: auto; max-width: 100%; }
.tk .tk-table td { vertical-align: top; }
.tk .tk-table td.tk-reported, .tk .tk-table td.tk-sla { white-space: nowrap; }
.tk-sub { display: block; font-size: 12px; color: var(--muted, #667); overflow-wrap: anywhere; }
.tk .tk-pager { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; justify-content: flex-end; margin-top: 8px; }
.tk .tk-pager .muted { margin-right: auto; }
.tk-countdown.late, .tk-countdown.missed { color: #b42318; font-weight: 600; }
.tk-countdown.within { color: #13653b; }
.tk-countdown.left { color: inherit; }
.badge.tk-st-reported, .badge.tk-st-reopened { background: #fff3d6; color: #7a5300; }
.badge.tk-st-acknowledged, .badge.tk-st-repairing { background: #e8f0fe; color: #1d4ea8; }
.badge.tk-st-repaired { background: #eef7ff; color: #0b5394; }
.badge.tk-st-confirmed { background: #e4f6ec; color: #13653b; }
.tk-dialog .tk-facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin: 0 0 12px; }
.tk-dialog .tk-facts dt { color: var(--muted, #667); font-size: 12.5px; }
.tk-dialog .tk-facts dd { margin: 0; overflow-wrap: anywhere; }
.tk-dialog .tk-flow { display: flex; flex-wrap: wrap; gap: 6px; margin: 6px 0 12px; }
.tk-dialog textarea { width: 100%; box-sizing: border-box; min-height: 3.5em; }
.tk-dialog .tk-history-wrap { max-height: 30vh; overflow: auto; margin-bottom: 12px; }
.tk-dialog .tk-history td { white-space: normal; }
.tk-dialog .tk-snap img { max-width: 100%; max-height: 40vh; display: block; margin-top: 8px; border-radius: 4px; }
.tk-dialog .tk-snap-up { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; }
.tk-dialog h3 { font-size: 14px; margin: 14px 0 6px; }
.tk-dialog .tk-results select { width: 100%; }
.tk-dialog .field input, .tk-dialog .field select { width: 100%; box-sizing: border-box; }
.tk-bell { position: relative; display: inline-flex; align-items: center; }
.tk-bell > button { display: inline-flex; gap: 4px; align-items: center; }
.tk-bell .tk-bell-n { min-width: 1.4em; padding: 0 5px; border-radius: 9px; background: #b42318; color: #fff;
  font-size: 12px; text-align: center; }
.tk-bell .tk-bell-n.zero { background: #66707f; } /* white on it 5:1 (#9aa6b8 was 2.5:1) */
.tk-bell .tk-bell-panel { position: absolute; right: 0; top: 100%; z-index: 50; width: 300px; max-width: calc(100vw - 24px);
  background: #fff; color: #1f2937; border: 1px solid #d8dde6; border-radius: 8px; padding: 10px 12px;
  box-shadow: 0 6px 24px rgba(15, 23, 42, .18); }
.tk-bell .tk-bell-panel a { display: block; padding: 3px 0; }
.tk-bell .tk-bell-panel ul { list-style: none; padding: 0; margin: 4px 0; max-height: 40vh; overflow: auto; }
.tk-bell .tk-bell-panel li { font-size: 12.5px; border-top: 1px solid #f0f2f5; padding: 4px 0; }
.tk-bell svg { width: 18px; height: 18px; fill: currentColor; }
@media (max-width: 700px) {
  .tk .col-lo { display: none; }
  .tk .tk-table thead { display: none; }
  .tk .tk-table, .tk .tk-table tbody { display: block; }
  .tk .tk-table tr { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 10px; padding: 10px 2px;
    border-bottom: 1px solid #e5e8ee; }
  .tk .tk-table td { display: block; border: none; padding: 0; }
  .tk .tk-table td.tk-channel, .tk .tk-table td.tk-sla { flex-basis: 100%; white-space: normal; }
  .tk .tk-table td.actions { margin-left: auto; }
  .tk .tk-table td.col-lo { display: none; }
  .tk .tk-filters input, .tk .tk-filters label.tk-search input { width: 10em; }
  .tk .tk-filters select#tk-contract, .tk .tk-filters select#tk-org { width: 10em; }
  .tk-dialog .tk-facts { grid-template-columns: 1fr; }
  .tk-dialog .tk-facts dd { margin-bottom: 4px; }
}`;

const addStyle = pageStyle(CSS);

// t() of a key this page may not know: its fallback then
function word(key, fallback) {
  const text = t(key);
  return text === key ? fallback : text;
}

export const stateWord = (s) => word("tk.state." + s, s || "—");
export const actionWord = (a) => word("tk.act." + a, a || "—");
const kindWord = (k) => word("tk.kind." + k, k || "—");
const sourceWord = (s) => word("tk.source." + s, s || "—");
const anomalyWord = (a) => (a ? word("tk.anomaly." + a, t("tk.anomaly.other")) : "—");

function errorWords(err) {
  const code = err && err.code;
  const known = code ? word("tk.code." + code, null) : null;
  const text = err && err.message ? err.message : String(err);
  if (known && text && !text.startsWith("HTTP")) return `${known}（${text}）`;
  return known || text;
}

// a span of seconds as words: "5 小时 12 分" (hours, as repair limits are given; days past a week)
function span(seconds) {
  const total = Math.max(0, Math.floor(Math.abs(seconds) / 60));
  const m = total % 60;
  if (total >= 7 * 1440) return t("tk.days", { d: Math.floor(total / 1440), h: Math.floor((total % 1440) / 60), m });
  const hh = Math.floor(total / 60);
  if (hh) return t("tk.hours", { h: hh, m });
  return t("tk.minutes", { m });
}

// ------------------------------------------------------------------ the SLA countdown
// The server's time_left_seconds at the moment of the answer, counted down with the browser's monotonic clock
// (the browser's own wall clock may be off): every countdown element is redrawn by tickCountdowns().
function countdown(ticket) {
  const el = h("span", { class: "tk-countdown" });
  el._ticket = ticket;
  el._at = performance.now();
  drawCountdown(el);
  return el;
}

function drawCountdown(el) {
  const tk = el._ticket;
  let cls;
  let text;
  if (tk.time_left_seconds === null || tk.time_left_seconds === undefined) {
    // repaired (or confirmed): the repair time against the limit
    const took = tk.repair_seconds == null ? null : span(tk.repair_seconds);
    if (tk.within_limit === false) { cls = "missed"; text = t("tk.missed", { time: took ?? "—" }); }
    else if (tk.within_limit === true) { cls = "within"; text = t("tk.within", { time: took ?? "—" }); }
    else { cls = "within"; text = "—"; }
  } else {
    const left = tk.time_left_seconds - (performance.now() - el._at) / 1000;
    if (left < 0) { cls = "late"; text = t("tk.late", { time: span(left) }); }
    else { cls = "left"; text = t("tk.left", { time: span(left) }); }
  }
  el.className = "tk-countdown " + cls;
  el.textContent = text;
}

function tickCountdowns(root) {
  for (const el of root.querySelectorAll(".tk-countdown")) if (el._ticket) drawCountdown(el);
}

// ------------------------------------------------------------------ names of channels and contracts
let channelCache = null;
async function channelNames() {
  if (channelCache) return channelCache;
  const names = new Map();
  if (can("device.read")) {
    try {
      const data = await get("/api/channels", { limit: 5000 });
      for (const c of data.items || []) names.set(`${c.device_id}/${c.channel_id}`, c.name || "");
    } catch (_) { /* ids only */ }
  }
  channelCache = names;
  setTimeout(() => { channelCache = null; }, 60000);
  return names;
}

async function contractNames() {
  const names = new Map();
  if (!can("report.read")) return names;
  try {
    const data = await get("/api/contracts");
    for (const c of data.items || []) names.set(c.id, c.name);
  } catch (_) { /* numbers only */ }
  return names;
}

function subject(ticket, names) {
  const name = ticket.channel_id ? names.get(`${ticket.device_id}/${ticket.channel_id}`) : null;
  const main = ticket.channel_id ? (name || ticket.channel_id) : t("tk.device_only");
  return [h("span", { class: "tk-chan-name" }, main),
    h("span", { class: "tk-sub tk-device" }, [ticket.device_id, ticket.channel_id && name ? ticket.channel_id : null]
      .filter(Boolean).join(" · "))];
}

// the organisation nodes the caller's tree shows (GET /api/org/tree, scoped by the server), in display order
async function orgNodes() {
  if (!can("device.read")) return [];
  try {
    return orderedOrgNodes((await get("/api/org/tree")).nodes || []);
  } catch (_) { return []; }
}

function contractText(ticket, contracts) {
  if (ticket.contract_id == null) return t("tk.no_contract");
  return contracts.get(ticket.contract_id) || t("tk.contract_n", { id: ticket.contract_id });
}

function stateBadge(state) {
  return badge(stateWord(state), "tk-state tk-st-" + state);
}

function select(id, label, values, wordOf, value) {
  const sel = h("select", { id, "aria-label": label },
    h("option", { value: "" }, t("common.all")),
    values.map((v) => h("option", { value: v }, wordOf(v))));
  sel.value = value || "";
  return sel;
}

// ------------------------------------------------------------------ the view
export async function ticketsView(root, route) {
  addStyle();
  root.classList.add("tk");
  const params = (route && route.params) || new URLSearchParams();
  const st = { offset: Number(params.get("offset")) || 0, limit: PAGE_SIZES[0] };
  for (const key of FILTERS) st[key] = params.get(key) || "";
  if (!["true", "false", ""].includes(st.open)) st.open = "";
  if (!["true", "false", ""].includes(st.overdue)) st.overdue = "";
  if (!STATES.includes(st.state)) st.state = "";
  if (!KINDS.includes(st.kind)) st.kind = "";
  st.q = st.q.slice(0, SEARCH_MAX);
  let alive = true;
  let page = { total: 0, items: [] };
  let names = await channelNames();
  const [contracts, nodes] = await Promise.all([contractNames(), orgNodes()]);
  const writer = can("ticket.write");
  // a contract or node from the address that this user cannot choose is dropped (the server would answer 404)
  if (!contracts.has(Number(st.contract_id))) st.contract_id = "";
  if (!nodes.some(([n]) => String(n.id) === st.org_node_id)) st.org_node_id = "";

  const stateSel = select("tk-state", t("tk.f.state"), STATES, stateWord, st.state);
  const openSel = select("tk-open", t("tk.f.open"), ["true", "false"], (v) => t("tk.f.open." + v), st.open);
  const overdueSel = select("tk-overdue", t("tk.f.overdue"), ["true", "false"], (v) => t("tk.f.overdue." + v),
                            st.overdue);
  const kindSel = select("tk-kind", t("tk.f.kind"), KINDS, kindWord, st.kind);
  const deviceIn = h("input", { id: "tk-device", type: "search", maxlength: 32, value: st.device_id,
                                autocomplete: "off" });
  const channelIn = h("input", { id: "tk-channel", type: "search", maxlength: 32, value: st.channel_id,
                                 autocomplete: "off" });
  // the contract: only with the permission to read contracts (report.read), and when there is one to choose
  const contractSel = can("report.read") && contracts.size ? h("select", { id: "tk-contract", "aria-label": t("tk.f.contract") },
    h("option", { value: "" }, t("common.all")),
    [...contracts].map(([id, name]) => h("option", { value: String(id) }, name))) : null;
  if (contractSel) contractSel.value = st.contract_id;
  const orgSel = nodes.length ? h("select", { id: "tk-org", "aria-label": t("tk.f.org") },
    h("option", { value: "" }, t("common.all")),
    nodes.map(([n, depth]) => h("option", { value: String(n.id) }, "\u3000".repeat(depth) + (n.name || String(n.id)))))
    : null;
  if (orgSel) orgSel.value = st.org_node_id;
  const searchIn = h("input", { id: "tk-search", type: "search", maxlength: SEARCH_MAX, value: st.q, autocomplete: "off",
                                placeholder: t("tk.f.search_ph") });
  const size = h("select", { id: "tk-size" }, PAGE_SIZES.map((n) => h("option", { value: String(n) },
    t("tk.f.size_n", { n }))));
  const table = h("table", { class: "table tk-table", id: "tk-table" });
  const pager = h("div", { class: "tk-pager", id: "tk-pager" });
  const failure = h("div", { id: "tk-error" });
  const updated = h("p", { class: "muted", id: "tk-updated" });

  const lbl = (text, input) => h("label", null, h("span", null, text), input);
  const searchLabel = h("label", { class: "tk-search" }, h("span", null, t("tk.f.search")), searchIn);
  const choices = [stateSel, openSel, overdueSel, kindSel, contractSel, orgSel].filter(Boolean);
  const filters = h("form", { class: "tk-filters", role: "search", id: "tk-filters" },
    searchLabel,
    lbl(t("tk.f.state"), stateSel), lbl(t("tk.f.open"), openSel), lbl(t("tk.f.overdue"), overdueSel),
    lbl(t("tk.f.kind"), kindSel),
    contractSel ? lbl(t("tk.f.contract"), contractSel) : null, orgSel ? lbl(t("tk.f.org"), orgSel) : null,
    lbl(t("tk.f.device"), deviceIn), lbl(t("tk.f.channel"), channelIn),
    lbl(t("tk.f.size"), size),
    h("button", { type: "submit", id: "tk-apply" }, t("tk.f.apply")),
    h("button", { type: "button", class: "ghost", id: "tk-reset", onclick: () => {
      for (const el of [...choices, deviceIn, channelIn, searchIn]) el.value = "";
      applyFilters();
    } }, t("tk.f.reset")));
  filters.addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
  for (const el of choices) el.addEventListener("change", applyFilters);
  // the search box: the list follows the typing, once it pauses
  let searchTimer = null;
  searchIn.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { if (alive && searchIn.value.trim() !== st.q) applyFilters(); }, SEARCH_DELAY_MS);
  });
  size.addEventListener("change", () => { st.limit = Number(size.value); st.offset = 0; reload(); });

  root.append(
    h("div", { class: "page-head" }, h("h1", null, t("tk.title")), h("div", { class: "tools" },
      writer ? h("button", { type: "button", class: "primary", id: "tk-new", onclick: () => openRepairDialog(null) },
        t("tk.new")) : null,
      h("button", { type: "button", id: "tk-refresh", onclick: () => reload() }, t("common.refresh")))),
    failure,
    h("section", { class: "card" }, filters, h("div", { class: "tk-table-wrap" }, table), pager),
    updated);

  function applyFilters() {
    const dev = deviceIn.value.trim();
    const chan = channelIn.value.trim();
    if ((dev && !ID_RE.test(dev)) || (chan && !ID_RE.test(chan))) {
      clear(failure).append(message(t("tk.r.bad_id"), "error"));
      return;
    }
    clearTimeout(searchTimer);
    Object.assign(st, { state: stateSel.value, open: openSel.value, overdue: overdueSel.value, kind: kindSel.value,
                        device_id: dev, channel_id: chan, contract_id: contractSel ? contractSel.value : "",
                        org_node_id: orgSel ? orgSel.value : "", q: searchIn.value.trim().slice(0, SEARCH_MAX),
                        offset: 0 });
    reload();
  }

  // the filters and the open ticket in the address, without a new render of the page
  function keepAddress(openId) {
    const q = new URLSearchParams();
    for (const key of FILTERS) if (st[key]) q.set(key, st[key]);
    if (st.offset) q.set("offset", String(st.offset));
    if (openId) q.set("id", String(openId));
    const s = q.toString();
    const hash = "#/tickets" + (s ? "?" + s : "");
    if (location.hash !== hash) history.replaceState(null, "", hash);
  }

  function row(tk) {
    return h("tr", { dataset: { ticket: String(tk.id), state: tk.state } },
      h("td", { class: "tk-id" }, String(tk.id)),
      h("td", { class: "tk-state-cell" }, stateBadge(tk.state)),
      h("td", { class: "tk-channel" }, subject(tk, names)),
      h("td", { class: "tk-kind col-lo" }, kindWord(tk.kind),
        tk.anomaly ? h("span", { class: "tk-sub" }, anomalyWord(tk.anomaly)) : null,
        h("span", { class: "tk-sub" }, sourceWord(tk.source))),
      h("td", { class: "tk-reporter col-lo" }, tk.reporter_name || (tk.source === "user" ? "—" : t("tk.actor.system"))),
      h("td", { class: "tk-reported col-lo" }, fmtTime(tk.reported_at)),
      h("td", { class: "tk-sla" }, countdown(tk),
        h("span", { class: "tk-sub" }, t("tk.deadline_at", { time: fmtTime(tk.deadline) }))),
      h("td", { class: "tk-contract col-lo" }, contractText(tk, contracts)),
      h("td", { class: "actions" }, h("button", { type: "button", class: "tk-open",
        "aria-label": `${t("tk.detail")} ${tk.id}`, onclick: () => openDetail(tk.id) }, t("tk.detail"))));
  }

  function drawTable() {
    const cols = [["id", "tk.col.id"], ["state", "tk.col.state"], ["channel", "tk.col.channel"],
      ["kind", "tk.col.kind", true], ["reporter", "tk.col.reporter", true], ["reported", "tk.col.reported", true],
      ["sla", "tk.col.sla"], ["contract", "tk.col.contract", true], ["actions", "common.actions"]];
    const head = h("tr", null, cols.map(([key, label, lo]) =>
      h("th", { scope: "col", class: lo ? "col-lo" : null, dataset: { col: key } }, t(label))));
    const rows = page.items.map(row);
    clear(table).append(h("thead", null, head), h("tbody", null, rows.length ? rows
      : h("tr", null, h("td", { colspan: cols.length, class: "empty muted" }, t("tk.empty")))));
    const from = page.total ? st.offset + 1 : 0;
    const to = st.offset + page.items.length;
    clear(pager).append(
      h("span", { class: "muted", id: "tk-range" }, t("common.page", { from, to, total: page.total }), " · ",
        t("tk.beijing")),
      h("button", { type: "button", id: "tk-prev", disabled: st.offset <= 0,
                    onclick: () => { st.offset = Math.max(0, st.offset - st.limit); reload(); } }, t("common.prev")),
      h("button", { type: "button", id: "tk-next", disabled: to >= page.total,
                    onclick: () => { st.offset += st.limit; reload(); } }, t("common.next")));
  }

  let seq = 0;
  let first = true;
  async function reload() {
    const mine = ++seq;
    const q = { offset: st.offset, limit: st.limit };
    for (const key of FILTERS) if (st[key]) q[key] = st[key];
    try {
      const data = await get(BASE, q);
      if (mine !== seq || !alive) return;
      if (!data.items.length && st.offset > 0 && data.total > 0) {
        st.offset = Math.max(0, Math.floor((data.total - 1) / st.limit) * st.limit);
        await reload();
        return;
      }
      page = data;
      if (page.items.some((tk) => tk.channel_id && !names.has(`${tk.device_id}/${tk.channel_id}`))) {
        names = await channelNames();
      }
      clear(failure);
      drawTable();
      keepAddress(detailId);
      updated.textContent = t("tk.updated", { time: fmtTime(new Date()) });
    } catch (err) {
      if (first) throw err; // the router says why the page cannot be shown
      if (mine === seq) clear(failure).append(message(`${t("common.error")}: ${errorWords(err)}`, "error"));
    } finally {
      first = false;
    }
  }

  // ---------------------------------------------------------------- the detail dialog
  let detailId = null;
  function openDetail(id) {
    detailId = id;
    keepAddress(id);
    ticketDialog(id, {
      onChange: () => reload(),
      onClose: () => { if (detailId === id) { detailId = null; if (alive) keepAddress(null); } },
    });
  }

  const onCreated = (e) => { if (alive) { reload(); if (e.detail && e.detail.id) openDetail(e.detail.id); } };
  window.addEventListener("gbops:ticket-created", onCreated);
  const refreshTimer = setInterval(() => { if (!document.querySelector("dialog.tk-dialog")) reload(); }, REFRESH_MS);
  const tickTimer = setInterval(() => tickCountdowns(document), TICK_MS);

  await reload();
  const wanted = Number(params.get("id"));
  if (Number.isInteger(wanted) && wanted > 0) openDetail(wanted);

  return () => {
    alive = false;
    clearTimeout(searchTimer);
    clearInterval(refreshTimer);
    clearInterval(tickTimer);
    window.removeEventListener("gbops:ticket-created", onCreated);
    for (const dlg of document.querySelectorAll("dialog.tk-dialog")) dlg.close();
  };
}

// ------------------------------------------------------------------ one ticket
function facts(pairs) {
  return h("dl", { class: "tk-facts" }, pairs.filter(Boolean).map(([label, value, cls]) =>
    [h("dt", null, label), h("dd", { class: cls || null }, value)]));
}

// The detail dialog of ticket ``id``: onChange() after a move or an upload, onClose() when it closes.
export function ticketDialog(id, { onChange = () => {}, onClose = () => {} } = {}) {
  addStyle();
  let objectUrl = null;
  let ticket = null;
  let names = new Map();
  let contracts = new Map();
  let body = null;
  const dlg = modal(t("tk.d.title", { id }), (b) => { body = b; b.append(h("p", { class: "muted" }, t("common.loading"))); },
    null);
  dlg.classList.add("tk-dialog", "wide");
  dlg.id = "tk-detail";
  dlg.dataset.ticket = String(id);
  const closeBtn = dlg.querySelector(".modal-actions button");
  if (closeBtn) closeBtn.textContent = t("common.close");
  const tick = setInterval(() => tickCountdowns(dlg), TICK_MS);
  dlg.addEventListener("close", () => {
    clearInterval(tick);
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    onClose();
  });

  async function load() {
    try {
      [ticket, names, contracts] = await Promise.all([get(`${BASE}/${id}`), channelNames(), contractNames()]);
    } catch (err) {
      clear(body).append(message(errorWords(err), "error"));
      return;
    }
    draw();
  }

  function draw() {
    const tk = ticket;
    const writer = can("ticket.write");
    const error = h("div", { class: "msg error hidden", role: "alert", id: "tk-flow-error" });
    const note = h("textarea", { id: "tk-comment", maxlength: 2000, rows: 2 });
    const allowed = ACTIONS.filter((a) => (tk.allowed_actions || []).includes(a));
    const buttons = allowed.map((a) => h("button", { type: "button", id: "tk-act-" + a,
      class: a === "reopen" ? "" : "primary", onclick: (e) => act(a, note, error, e.currentTarget) }, actionWord(a)));
    const flow = h("div", { class: "tk-flow-box" }, writer ? [
      h("h3", null, t("tk.d.flow")),
      allowed.length ? [field(t("tk.d.comment"), note), h("div", { class: "tk-flow", id: "tk-flow" }, buttons), error]
        : h("p", { class: "muted", id: "tk-flow" }, t("tk.d.no_actions")),
    ] : null);

    const events = tk.events || [];
    const history = h("div", { class: "tk-history-wrap" }, h("table", { class: "table tk-history", id: "tk-history" },
      h("thead", null, h("tr", null, ["tk.d.h.at", "tk.d.h.action", "tk.d.h.move", "tk.d.h.actor", "tk.d.h.note"]
        .map((k) => h("th", { scope: "col" }, t(k))))),
      h("tbody", null, events.length ? events.map((ev) => h("tr", { dataset: { action: ev.action } },
        h("td", null, fmtTime(ev.at)),
        h("td", { class: "tk-h-action" }, actionWord(ev.action)),
        h("td", { class: "tk-h-move" }, `${ev.from_state ? stateWord(ev.from_state) : "—"} → ${stateWord(ev.to_state)}`),
        h("td", { class: "tk-h-actor" }, ev.actor_name || (ev.actor_type === "user" ? "—" : t("tk.actor.system"))),
        h("td", null, ev.note || "—")))
        : h("tr", null, h("td", { colspan: 5, class: "muted" }, t("tk.d.h.empty"))))));

    const img = h("div", { id: "tk-snap-view" });
    const file = h("input", { type: "file", id: "tk-snap-file", accept: "image/jpeg,image/png" });
    const snapError = h("div", { class: "msg error hidden", role: "alert", id: "tk-snap-error" });
    const upload = h("button", { type: "button", id: "tk-snap-upload", onclick: () => uploadSnapshot(file, snapError) },
      t("tk.d.snap_upload"));
    const snap = h("div", { class: "tk-snap" }, img,
      writer ? h("div", { class: "tk-snap-up" }, field(t("tk.d.snap_file"), file), upload) : null, snapError);

    clear(body).append(
      facts([
        [t("tk.d.state"), stateBadge(tk.state), "tk-d-state"],
        [t("tk.d.subject"), subject(tk, names)],
        [t("tk.d.kind"), `${kindWord(tk.kind)} · ${sourceWord(tk.source)}`],
        tk.anomaly ? [t("tk.d.anomaly"), anomalyWord(tk.anomaly)] : null,
        [t("tk.d.note"), tk.note || "—"],
        [t("tk.d.reporter"), tk.reporter_name || (tk.source === "user" ? "—" : t("tk.actor.system"))],
        [t("tk.d.reported"), fmtTime(tk.reported_at)],
        [t("tk.d.contract"), contractText(tk, contracts)],
        [t("tk.d.limit"), t("tk.d.limit_h", { h: Math.round(tk.repair_limit_hours * 100) / 100 })],
        [t("tk.d.deadline"), fmtTime(tk.deadline)],
        [t("tk.d.sla"), countdown(tk), "tk-d-sla"],
        tk.feedback_note ? [t("tk.d.feedback"), `${tk.feedback_note}（${fmtTime(tk.feedback_at)}）`] : null,
      ]),
      flow,
      h("h3", null, t("tk.d.history")), history,
      h("h3", null, t("tk.d.snapshot")), snap);
    showSnapshot(img);
  }

  async function act(action, note, error, button) {
    error.classList.add("hidden");
    const text = note.value.trim();
    if (action === "feedback" && !text) {
      error.textContent = t("tk.d.feedback_note");
      error.classList.remove("hidden");
      note.focus();
      return;
    }
    for (const b of dlg.querySelectorAll(".tk-flow button")) b.disabled = true;
    try {
      ticket = await post(`${BASE}/${id}/transitions`, text ? { action, note: text } : { action });
    } catch (err) {
      error.textContent = errorWords(err);
      error.classList.remove("hidden");
      for (const b of dlg.querySelectorAll(".tk-flow button")) b.disabled = false;
      if (button) button.focus();
      return;
    }
    toast(t("tk.act.done", { id, action: actionWord(action), state: stateWord(ticket.state) }), "ok");
    draw();
    const first = dlg.querySelector(".tk-flow button");
    if (first) first.focus();
    window.dispatchEvent(new CustomEvent("gbops:ticket-changed", { detail: ticket }));
    onChange(ticket);
  }

  async function uploadSnapshot(file, error) {
    error.classList.add("hidden");
    const f = file.files && file.files[0];
    if (!f || !["image/jpeg", "image/png"].includes(f.type)) {
      error.textContent = t("tk.d.snap_pick");
      error.classList.remove("hidden");
      return;
    }
    let r;
    try {
      r = await fetch(`${BASE}/${id}/snapshot`, { method: "PUT", body: f,
        headers: { "Content-Type": f.type, Authorization: "Bearer " + (token.get() || "") } });
    } catch (err) {
      error.textContent = `${t("common.error")}: ${err.message || err}`;
      error.classList.remove("hidden");
      return;
    }
    let data = null;
    try { data = await r.json(); } catch (_) { /* no body */ }
    if (!r.ok) {
      const err = new ApiError(r.status, data && data.error, data && data.message ? serverText(data.message)
        : "HTTP " + r.status);
      error.textContent = errorWords(err);
      error.classList.remove("hidden");
      return;
    }
    ticket = { ...data, events: ticket.events };
    toast(t("tk.d.snap_done"), "ok");
    draw();
    onChange(ticket);
  }

  // the picture fetched with the token, shown through an object URL
  async function showSnapshot(box) {
    if (!ticket.snapshot_url) { box.append(h("p", { class: "muted" }, t("tk.d.snap_none"))); return; }
    try {
      const r = await fetch(ticket.snapshot_url, { headers: { Authorization: "Bearer " + (token.get() || "") },
                                                   cache: "no-store" });
      if (!r.ok) {
        let text = "HTTP " + r.status;
        try { const d = await r.json(); if (d && d.message) text = serverText(d.message); } catch (_) { /* */ }
        throw new Error(text);
      }
      const blob = await r.blob();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = URL.createObjectURL(blob);
      clear(box).append(h("img", { src: objectUrl, id: "tk-snap-img", alt: t("tk.d.snap_alt", { id }) }));
    } catch (err) {
      clear(box).append(message(t("tk.d.snap_failed", { error: err.message || String(err) }), "error"));
    }
  }

  load();
  return dlg;
}

// ------------------------------------------------------------------ 报修
// The report dialog; ``channel`` {device_id, channel_id, name} presets the faulty channel (channel pages, live
// panes). Resolves with the new ticket (null when closed without one); "gbops:ticket-created" tells the list.
export function openRepairDialog(channel) {
  addStyle();
  return new Promise((resolve) => {
    let created = null;
    const preset = channel && channel.device_id && channel.channel_id ? channel : null;
    const search = h("input", { type: "search", id: "tk-r-search", maxlength: 100, autocomplete: "off",
                                placeholder: t("tk.r.search") });
    const results = h("select", { id: "tk-r-results" }, h("option", { value: "" }, t("tk.r.pick")));
    const deviceIn = h("input", { id: "tk-r-device", maxlength: 32, autocomplete: "off", pattern: "[0-9A-Za-z_\\-]*" });
    const channelIn = h("input", { id: "tk-r-channel", maxlength: 32, autocomplete: "off", pattern: "[0-9A-Za-z_\\-]*" });
    const kind = h("select", { id: "tk-r-kind" }, KINDS.map((k) => h("option", { value: k }, kindWord(k))));
    const anomaly = h("select", { id: "tk-r-anomaly" }, ANOMALIES.map((a) => h("option", { value: a }, anomalyWord(a))));
    const anomalyField = field(t("tk.r.anomaly"), anomaly);
    anomalyField.classList.add("hidden");
    kind.addEventListener("change", () => anomalyField.classList.toggle("hidden", kind.value !== "quality"));
    const note = h("textarea", { id: "tk-r-note", maxlength: 2000, rows: 3, placeholder: t("tk.r.note_ph") });
    let found = [];

    let timer = null;
    let seq = 0;
    async function lookup() {
      const q = search.value.trim();
      const mine = ++seq;
      let items = [];
      try { items = q ? (await get("/api/channels", { q, limit: 50 })).items || [] : []; } catch (_) { items = []; }
      if (mine !== seq) return;
      found = items;
      clear(results).append(h("option", { value: "" }, q && !items.length ? t("tk.r.no_match") : t("tk.r.pick")),
        ...items.map((c, i) => h("option", { value: String(i) },
          `${c.name || c.channel_id}（${c.device_id} / ${c.channel_id}）${c.online ? "" : " · " + t("common.offline")}`)));
      if (items.length === 1) { results.value = "0"; pick(); }
    }
    function pick() {
      const c = found[Number(results.value)];
      if (results.value !== "" && c) { deviceIn.value = c.device_id; channelIn.value = c.channel_id; }
    }
    search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(lookup, 300); });
    search.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); clearTimeout(timer); lookup(); } });
    results.addEventListener("change", pick);

    const dlg = modal(t("tk.r.title"), (body) => {
      if (preset) {
        deviceIn.value = preset.device_id;
        channelIn.value = preset.channel_id;
        body.append(facts([[t("tk.r.channel"), [h("span", { class: "tk-chan-name" }, preset.name || preset.channel_id),
          h("span", { class: "tk-sub" }, `${preset.device_id} · ${preset.channel_id}`)], "tk-r-preset"]]));
      } else {
        if (can("device.read")) {
          body.append(field(t("tk.r.search"), search), h("div", { class: "tk-results" }, field(t("tk.r.results"), results)));
        }
        body.append(field(t("tk.r.device_id"), deviceIn), field(t("tk.r.channel_id"), channelIn));
      }
      body.append(field(t("tk.r.kind"), kind), anomalyField, field(t("tk.r.note"), note));
    }, async () => {
      const device_id = deviceIn.value.trim();
      const channel_id = channelIn.value.trim();
      if (!device_id || !channel_id) throw new Error(t("tk.r.need_subject"));
      if (!ID_RE.test(device_id) || !ID_RE.test(channel_id)) throw new Error(t("tk.r.bad_id"));
      const payload = { device_id, channel_id, kind: kind.value, note: note.value.trim() };
      if (kind.value === "quality") payload.anomaly = anomaly.value;
      try {
        created = await post(BASE, payload);
      } catch (err) { throw new Error(errorWords(err)); }
      toast(t("tk.r.created", { id: created.id }), "ok");
      return true;
    }, { saveLabel: t("tk.r.submit") });
    dlg.classList.add("tk-dialog");
    dlg.id = "tk-repair-dialog";
    dlg.addEventListener("close", () => {
      clearTimeout(timer);
      if (created) window.dispatchEvent(new CustomEvent("gbops:ticket-created", { detail: created }));
      resolve(created);
    });
    (preset ? note : (can("device.read") ? search : deviceIn)).focus();
  });
}

// ------------------------------------------------------------------ the header bell
const SEEN_KEY = "gbops.tickets.seen";
const SVG = "http://www.w3.org/2000/svg";

// a bell drawn as SVG (no emoji font is needed)
function bellIcon() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", "M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 "
    + "1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2z");
  svg.append(path);
  return svg;
}

// The counts of tickets waiting for repair and overdue, and the notifications newer than the last look
// (GET /api/notifications), refreshed every 30 s; the panel links to the filtered list. Returns stop().
export function mountTicketBell(container) {
  if (!container || !can("ticket.read")) return () => {};
  addStyle();
  let stopped = false;
  let notes = [];
  const counts = { open: 0, overdue: 0 };
  const num = h("span", { class: "tk-bell-n zero", id: "tk-bell-count" }, "0");
  const button = h("button", { type: "button", class: "ghost", id: "tk-bell-button", "aria-haspopup": "true",
                               "aria-expanded": "false", title: t("tk.bell") }, bellIcon(), num);
  const panel = h("div", { class: "tk-bell-panel hidden", id: "tk-bell-panel", role: "region", "aria-label": t("tk.bell") });
  const wrap = h("span", { class: "tk-bell", id: "tk-bell" }, button, panel);
  container.append(wrap);

  const seen = () => Number(localStorage.getItem(SEEN_KEY)) || 0;
  function unseen() { const s = seen(); return notes.filter((n) => n.id > s).length; }

  function draw() {
    const fresh = unseen();
    const n = counts.open;
    num.textContent = String(n);
    num.className = "tk-bell-n" + (n || fresh ? "" : " zero");
    const label = [t("tk.bell.open", { n: counts.open }), t("tk.bell.overdue", { n: counts.overdue }),
      fresh ? t("tk.bell.new", { n: fresh }) : null].filter(Boolean).join(" · ");
    button.setAttribute("aria-label", `${t("tk.bell")}: ${label}`);
    button.title = `${t("tk.bell")}: ${label}`;
    if (panel.classList.contains("hidden")) return;
    clear(panel).append(
      h("a", { href: "#/tickets?open=true", id: "tk-bell-open", onclick: close }, t("tk.bell.open", { n: counts.open })),
      h("a", { href: "#/tickets?overdue=true&open=true", id: "tk-bell-overdue", onclick: close },
        t("tk.bell.overdue", { n: counts.overdue })),
      h("strong", null, t("tk.bell.recent")),
      notes.length ? h("ul", { id: "tk-bell-notes" }, notes.slice(0, 8).map((x) => h("li", null,
        h("a", { href: `#/tickets?id=${x.ticket_id}`, onclick: close },
          `${word("tk.note." + x.kind, "")}${x.message ? "：" + serverText(x.message) : ""}`),
        h("span", { class: "tk-sub" }, fmtTime(x.at)))))
        : h("p", { class: "muted" }, t("tk.bell.none")),
      h("a", { href: "#/tickets", onclick: close }, t("tk.bell.all")));
  }

  function close() {
    panel.classList.add("hidden");
    button.setAttribute("aria-expanded", "false");
  }
  button.addEventListener("click", () => {
    const open = panel.classList.toggle("hidden") === false;
    button.setAttribute("aria-expanded", String(open));
    if (open) {
      if (notes.length) localStorage.setItem(SEEN_KEY, String(Math.max(seen(), notes[0].id)));
      draw();
    }
  });
  const onKey = (e) => { if (e.key === "Escape" && !panel.classList.contains("hidden")) { close(); button.focus(); } };
  const onDoc = (e) => { if (!wrap.contains(e.target)) close(); };
  document.addEventListener("keydown", onKey);
  document.addEventListener("click", onDoc);

  async function refresh() {
    try {
      const [open, overdue, list] = await Promise.all([
        get(BASE, { open: true, limit: 1 }), get(BASE, { open: true, overdue: true, limit: 1 }),
        get("/api/notifications", { limit: 50 })]);
      if (stopped) return;
      counts.open = open.total;
      counts.overdue = overdue.total;
      notes = list.items || [];
      draw();
    } catch (_) { /* the bell keeps its last counts */ }
  }
  const onCreated = () => refresh();
  window.addEventListener("gbops:ticket-created", onCreated);
  window.addEventListener("gbops:ticket-changed", onCreated);
  refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
    window.removeEventListener("gbops:ticket-created", onCreated);
    window.removeEventListener("gbops:ticket-changed", onCreated);
    document.removeEventListener("keydown", onKey);
    document.removeEventListener("click", onDoc);
    wrap.remove();
  };
}

// kept for other pages: a ticket state is "waiting for repair"
export const isOpenState = (s) => OPEN_STATES.has(s);
