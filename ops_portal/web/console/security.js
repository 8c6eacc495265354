// Security alerts (安全告警): the live alert panel fed by the server's event stream (/api/security/stream,
// read with fetch() so that the bearer token stays in a header), open alerts acknowledged with a note, the
// blocked addresses with unblock, and the security events with their filters.  Kinds, rules and severities are
// shown in words (the API sends them in Chinese and English), never as codes.
import { ApiError, del, get, openEventStream, post } from "./api.js";
import { beep } from "./alarms.js";
import { clear, field, fmtTime, fromLocalInput, h, message, modal, toast } from "./dom.js";
import { dictionaries, extend, getLang, serverText, t } from "./i18n.js";
import { can } from "./session.js";

extend({
  "nav.security": "安全告警",
  "sec.live_title": "实时告警",
  "sec.open_alerts": "未处理告警",
  "sec.blocks": "已封禁地址",
  "sec.events": "安全事件",
  "sec.connecting": "正在连接…",
  "sec.live.open": "实时推送已连接",
  "sec.live.closed": "实时推送已断开，正在重连",
  "sec.live.denied": "无权接收实时推送",
  "sec.rule": "告警规则",
  "sec.key": "对象",
  "sec.count": "次数",
  "sec.first": "首次",
  "sec.last": "最近",
  "sec.severity": "级别",
  "sec.state": "状态",
  "sec.blocked_until": "封禁至",
  "sec.ack": "确认",
  "sec.ack_title": "确认安全告警",
  "sec.note": "处理说明（必填）",
  "sec.note_required": "请填写处理说明",
  "sec.acked": "告警已确认",
  "sec.acked_by": "{name} 已确认",
  "sec.no_alerts": "没有未处理的安全告警",
  "sec.no_blocks": "没有被封禁的地址",
  "sec.no_events": "没有符合条件的安全事件",
  "sec.address": "地址",
  "sec.reason": "原因",
  "sec.unblock": "解除封禁",
  "sec.unblock_confirm": "解除对 {address} 的封禁？",
  "sec.unblocked": "已解除封禁",
  "sec.kind": "事件类型",
  "sec.all_kinds": "全部类型",
  "sec.all_severities": "全部级别",
  "sec.source_ip": "来源地址",
  "sec.user": "用户",
  "sec.device": "设备",
  "sec.detail": "详情",
  "sec.from": "从",
  "sec.to": "到",
  "sec.autoblock_on": "自动封禁已开启",
  "sec.autoblock_off": "自动封禁未开启",
  "sec.show_acked": "显示已确认",
  "sec.action": "操作",
  "sec.filter_kind": "按事件类型筛选",
  "sec.filter_severity": "按级别筛选",
  // an event's detail: the keys its producers send (ops_portal auth and access checks, the SIP feed, the
  // audit feed, the clock checks), and the values that are codes
  "sec.d.reason": "原因",
  "sec.d.scope": "锁定范围",
  "sec.d.locked_until": "锁定至",
  "sec.d.failures": "账户连续失败次数",
  "sec.d.failed_logins": "该地址失败次数",
  "sec.d.at": "发生在",
  "sec.d.permission": "所需权限",
  "sec.d.route": "接口",
  "sec.d.token_id": "令牌编号",
  "sec.d.idle_minutes": "空闲时限",
  "sec.d.method": "请求方法",
  "sec.d.path": "请求路径",
  "sec.d.error": "拒绝原因",
  "sec.d.transport": "传输协议",
  "sec.d.port": "来源端口",
  "sec.d.status": "应答",
  "sec.d.refused_while_locked": "锁定期间的请求",
  "sec.d.locked_out": "因此锁定",
  "sec.d.before": "原地址",
  "sec.d.after": "新地址",
  "sec.d.action": "操作",
  "sec.d.target": "操作对象",
  "sec.d.actor_type": "操作者",
  "sec.d.channel": "通道",
  "sec.d.job_id": "下载任务",
  "sec.d.start": "开始",
  "sec.d.end": "结束",
  "sec.d.local_time": "发生时间（北京时间）",
  "sec.d.work_hours": "工作时间",
  "sec.d.offset_s": "时钟偏差",
  "sec.d.servers": "时间服务器",
  "sec.d.skew_s": "时钟偏差",
  "sec.d.uncertainty_s": "误差范围",
  "sec.d.limit_s": "允许偏差",
  "sec.d.samples": "样本数",
  "sec.d.device_time": "设备时间",
  "sec.d.kind": "拒绝类型",
  "sec.d.remote_addr": "来源",
  "sec.d.suppressed_before": "此前未单独记录的次数",
  "sec.v.yes": "是",
  "sec.v.no": "否",
  "sec.v.seconds": "{n} 秒",
  "sec.v.minutes": "{n} 分钟",
  "sec.v.no_answer": "无应答",
  "sec.v.offset_beyond": "偏差 {offset} 秒，超过 {limit} 秒",
  "sec.v.scope.address": "来源地址",
  "sec.v.scope.account": "账户",
  "sec.v.at.login": "登录",
  "sec.v.at.request": "接口请求",
  "sec.v.at.totp_enable": "启用动态口令",
  "sec.v.at.totp_disable": "停用动态口令",
  "sec.v.reason.bad_credentials": "用户名或密码错误",
  "sec.v.reason.wrong_password": "密码错误",
  "sec.v.reason.totp_failed": "动态口令错误",
  "sec.v.reason.disabled": "账户已停用",
  "sec.v.reason.locked": "已锁定",
  "sec.v.reason.account_not_yet_valid": "账户尚未生效",
  "sec.v.reason.account_expired": "账户已过有效期",
  "sec.v.reason.lifetime": "令牌已到期",
  "sec.v.reason.idle": "空闲超时",
  "sec.v.reason.no server answered": "没有时间服务器应答",
  "sec.v.reason.bad device id": "设备编号无效",
  "sec.v.reason.locked out": "密码错误次数过多，已锁定",
  "sec.v.reason.unknown device": "未登记的设备",
  "sec.v.reason.malformed credentials": "认证信息格式错误",
  "sec.v.reason.not a Digest scheme": "不是摘要认证",
  "sec.v.reason.missing digest parameter": "摘要认证缺少参数",
  "sec.v.reason.realm mismatch": "认证域不符",
  "sec.v.reason.unsupported algorithm": "不支持的摘要算法",
  "sec.v.reason.unsupported qop": "不支持的保护方式（qop）",
  "sec.v.reason.userhash not supported": "不支持用户名哈希",
  "sec.v.reason.nonce is not self-made (bad format)": "随机数不是本平台签发的（格式错误）",
  "sec.v.reason.nonce is not self-made (HMAC mismatch)": "随机数不是本平台签发的（校验不符）",
  "sec.v.reason.nonce was issued to another device": "随机数是签发给其他设备的",
  "sec.v.reason.nonce expired": "随机数已过期",
  "sec.v.reason.nonce already used": "随机数已使用过（重放）",
  "sec.v.reason.no credentials for this device": "该设备没有设置密码",
  "sec.v.reason.wrong response": "密码错误",
  "sec.v.error.forbidden": "没有所需权限",
  "sec.v.error.channel_forbidden": "无权访问该通道",
  "sec.v.error.device_forbidden": "无权访问该设备",
  "sec.v.error.org_node_forbidden": "无权访问该组织节点",
  "sec.v.error.org_root_forbidden": "不能操作根节点",
  "sec.v.error.grant_exceeds_own": "授予的权限超出本人权限",
  "sec.v.error.scope_forbidden": "超出管理范围",
  "sec.v.error.ticket_forbidden": "无权处理该工单",
  "sec.v.error.404": "接口不存在（404）",
  "sec.v.error.405": "接口不支持该方法（405）",
  "sec.v.status.400": "400 请求无效",
  "sec.v.status.401": "401 需要认证",
  "sec.v.status.403": "403 拒绝",
  "sec.v.transport.udp": "UDP",
  "sec.v.transport.tcp": "TCP",
  "sec.v.transport.tls": "TLS（加密）",
  "sec.v.transport.ws": "WebSocket",
  "sec.v.transport.wss": "WebSocket（加密）",
  "sec.v.actor_type.user": "用户",
  "sec.v.actor_type.system": "平台",
  "sec.v.actor_type.anonymous": "匿名",
  "sec.v.actor_type.device": "设备",
  "sec.v.actor_type.platform": "上级平台",
  "sec.v.action.download.request": "视频下载",
  "sec.v.action.playback.start": "录像回放",
  "sec.v.kind.address_mismatch": "请求不是来自设备的登记地址",
  "sec.v.kind.lockout": "密码错误次数过多，已锁定",
  "sec.v.target.user": "用户",
  "sec.v.target.role": "角色",
  "sec.v.target.device": "设备",
  "sec.v.target.channel": "通道",
  "sec.v.target.org": "组织节点",
  "sec.v.target.org_node": "组织节点",
  "sec.v.target.setting": "设置",
  "sec.v.target.contract": "维保合同",
  "sec.v.target.cascade": "上级平台",
  "sec.v.target.platform": "上级平台",
  "sec.v.target.record_plan": "录像计划",
  "sec.v.target.watermark": "水印策略",
}, {
  "nav.security": "Security alerts",
  "sec.live_title": "Live alerts",
  "sec.open_alerts": "Open alerts",
  "sec.blocks": "Blocked addresses",
  "sec.events": "Security events",
  "sec.connecting": "Connecting…",
  "sec.live.open": "Live",
  "sec.live.closed": "Disconnected, reconnecting",
  "sec.live.denied": "Not allowed to receive live alerts",
  "sec.rule": "Rule",
  "sec.key": "Subject",
  "sec.count": "Count",
  "sec.first": "First",
  "sec.last": "Last",
  "sec.severity": "Severity",
  "sec.state": "State",
  "sec.blocked_until": "Blocked until",
  "sec.ack": "Acknowledge",
  "sec.ack_title": "Acknowledge security alert",
  "sec.note": "Note (required)",
  "sec.note_required": "A note is required",
  "sec.acked": "Alert acknowledged",
  "sec.acked_by": "acknowledged by {name}",
  "sec.no_alerts": "No open security alerts",
  "sec.no_blocks": "No blocked addresses",
  "sec.no_events": "No security events match",
  "sec.address": "Address",
  "sec.reason": "Reason",
  "sec.unblock": "Unblock",
  "sec.unblock_confirm": "Lift the block of {address}?",
  "sec.unblocked": "Block lifted",
  "sec.kind": "Kind",
  "sec.all_kinds": "All kinds",
  "sec.all_severities": "All severities",
  "sec.source_ip": "Source address",
  "sec.user": "User",
  "sec.device": "Device",
  "sec.detail": "Detail",
  "sec.from": "From",
  "sec.to": "To",
  "sec.autoblock_on": "Automatic blocking on",
  "sec.autoblock_off": "Automatic blocking off",
  "sec.show_acked": "Show acknowledged",
  "sec.action": "Action",
  "sec.filter_kind": "Filter by kind",
  "sec.filter_severity": "Filter by severity",
  "sec.d.reason": "Reason",
  "sec.d.scope": "Locked",
  "sec.d.locked_until": "Locked until",
  "sec.d.failures": "Failures of the account",
  "sec.d.failed_logins": "Failures from the address",
  "sec.d.at": "During",
  "sec.d.permission": "Permission needed",
  "sec.d.route": "Route",
  "sec.d.token_id": "Token no.",
  "sec.d.idle_minutes": "Idle limit",
  "sec.d.method": "Method",
  "sec.d.path": "Path",
  "sec.d.error": "Refused because",
  "sec.d.transport": "Transport",
  "sec.d.port": "Source port",
  "sec.d.status": "Answer",
  "sec.d.refused_while_locked": "Request while locked out",
  "sec.d.locked_out": "Locked out by it",
  "sec.d.before": "Previous address",
  "sec.d.after": "New address",
  "sec.d.action": "Action",
  "sec.d.target": "Target",
  "sec.d.actor_type": "Done by",
  "sec.d.channel": "Channel",
  "sec.d.job_id": "Download job",
  "sec.d.start": "Start",
  "sec.d.end": "End",
  "sec.d.local_time": "At (Beijing time)",
  "sec.d.work_hours": "Working hours",
  "sec.d.offset_s": "Clock offset",
  "sec.d.servers": "Time servers",
  "sec.d.skew_s": "Clock skew",
  "sec.d.uncertainty_s": "Uncertainty",
  "sec.d.limit_s": "Limit",
  "sec.d.samples": "Samples",
  "sec.d.device_time": "Device time",
  "sec.d.kind": "Refused as",
  "sec.d.remote_addr": "From",
  "sec.d.suppressed_before": "Not recorded one by one before",
  "sec.v.yes": "yes",
  "sec.v.no": "no",
  "sec.v.seconds": "{n} s",
  "sec.v.minutes": "{n} min",
  "sec.v.no_answer": "no answer",
  "sec.v.offset_beyond": "offset {offset} s, beyond {limit} s",
  "sec.v.scope.address": "source address",
  "sec.v.scope.account": "account",
  "sec.v.at.login": "login",
  "sec.v.at.request": "an API request",
  "sec.v.at.totp_enable": "turning the second factor on",
  "sec.v.at.totp_disable": "turning the second factor off",
  "sec.v.reason.bad_credentials": "wrong user name or password",
  "sec.v.reason.wrong_password": "wrong password",
  "sec.v.reason.totp_failed": "wrong second-factor code",
  "sec.v.reason.disabled": "account disabled",
  "sec.v.reason.locked": "locked out",
  "sec.v.reason.account_not_yet_valid": "account not valid yet",
  "sec.v.reason.account_expired": "account expired",
  "sec.v.reason.lifetime": "token lifetime over",
  "sec.v.reason.idle": "idle too long",
  "sec.v.reason.no server answered": "no time server answered",
  "sec.v.reason.bad device id": "invalid device id",
  "sec.v.reason.locked out": "too many wrong passwords, locked out",
  "sec.v.reason.unknown device": "device not registered on the platform",
  "sec.v.reason.malformed credentials": "malformed credentials",
  "sec.v.reason.not a Digest scheme": "not digest authentication",
  "sec.v.reason.missing digest parameter": "a digest parameter is missing",
  "sec.v.reason.realm mismatch": "wrong realm",
  "sec.v.reason.unsupported algorithm": "unsupported digest algorithm",
  "sec.v.reason.unsupported qop": "unsupported qop",
  "sec.v.reason.userhash not supported": "user name hashing not supported",
  "sec.v.reason.nonce is not self-made (bad format)": "nonce not issued by the platform (bad format)",
  "sec.v.reason.nonce is not self-made (HMAC mismatch)": "nonce not issued by the platform (bad signature)",
  "sec.v.reason.nonce was issued to another device": "nonce issued to another device",
  "sec.v.reason.nonce expired": "nonce expired",
  "sec.v.reason.nonce already used": "nonce already used (replay)",
  "sec.v.reason.no credentials for this device": "no password set for this device",
  "sec.v.reason.wrong response": "wrong password",
  "sec.v.error.forbidden": "permission missing",
  "sec.v.error.channel_forbidden": "channel not allowed",
  "sec.v.error.device_forbidden": "device not allowed",
  "sec.v.error.org_node_forbidden": "organisation node not allowed",
  "sec.v.error.org_root_forbidden": "the root node cannot be changed",
  "sec.v.error.grant_exceeds_own": "grant beyond the user's own permissions",
  "sec.v.error.scope_forbidden": "outside the user's scope",
  "sec.v.error.ticket_forbidden": "ticket not allowed",
  "sec.v.error.404": "no such route (404)",
  "sec.v.error.405": "method not allowed (405)",
  "sec.v.status.400": "400 bad request",
  "sec.v.status.401": "401 authentication needed",
  "sec.v.status.403": "403 refused",
  "sec.v.transport.udp": "UDP",
  "sec.v.transport.tcp": "TCP",
  "sec.v.transport.tls": "TLS (encrypted)",
  "sec.v.transport.ws": "WebSocket",
  "sec.v.transport.wss": "WebSocket (encrypted)",
  "sec.v.actor_type.user": "user",
  "sec.v.actor_type.system": "the platform",
  "sec.v.actor_type.anonymous": "anonymous",
  "sec.v.actor_type.device": "device",
  "sec.v.actor_type.platform": "upper platform",
  "sec.v.action.download.request": "video download",
  "sec.v.action.playback.start": "playback",
  "sec.v.kind.address_mismatch": "request not from the device's registered address",
  "sec.v.kind.lockout": "too many wrong passwords, locked out",
  "sec.v.target.user": "user",
  "sec.v.target.role": "role",
  "sec.v.target.device": "device",
  "sec.v.target.channel": "channel",
  "sec.v.target.org": "organisation node",
  "sec.v.target.org_node": "organisation node",
  "sec.v.target.setting": "setting",
  "sec.v.target.contract": "maintenance contract",
  "sec.v.target.cascade": "upper platform",
  "sec.v.target.platform": "upper platform",
  "sec.v.target.record_plan": "recording plan",
  "sec.v.target.watermark": "watermark policy",
});

const PAGE = 100;
const zh = () => getLang() !== "en";
const words = (o, base) => (zh() ? o[base + "_zh"] : o[base + "_en"]) || o[base];

// ------------------------------------------------------------------ the live feed
// onItem(kind, data) for alert / event / block / unblock; onState("open" | "closed" | "denied").
export function openSecurityFeed(onItem, onState = () => {}) {
  return openEventStream("/api/security/stream", onItem, onState);
}

function severityBadge(item) {
  const cls = { critical: "off", warning: "warn", info: "" }[item.severity] || "";
  return h("span", { class: "badge sev-" + item.severity + " " + cls }, zh() ? item.severity_zh : item.severity);
}

// An event's detail in words: each key the producers send with its label, the values that are codes in words,
// times in Beijing time, seconds with their unit, addresses and paths as they are.  A key not known here is
// still shown, the key itself muted (nothing is hidden).
const has = (key) => key in dictionaries.zh;
const TIMES = new Set(["locked_until", "start", "end"]);
const SECONDS = new Set(["offset_s", "skew_s", "uncertainty_s", "limit_s"]);
const SIGNED = new Set(["offset_s", "skew_s"]);  // ahead (+) or behind (-)
const CODED = new Set(["scope", "at", "reason", "error", "status", "actor_type", "kind"]);
const num = (v) => (typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v));

function coded(key, v) {
  const code = key === "transport" ? String(v).toLowerCase() : String(v);
  if (has(`sec.v.${key}.${code}`)) return t(`sec.v.${key}.${code}`);
  if (key === "reason") {
    const beyond = /^offset ([+-]?[\d.]+) s beyond ([\d.]+) s$/.exec(code);  // the clock check's words
    if (beyond) return t("sec.v.offset_beyond", { offset: beyond[1], limit: beyond[2] });
    if (code.includes(" / ")) return serverText(code);  // "中文 / English" from the SIP service
  }
  return null;
}

function detailValue(key, v, d) {
  if (typeof v === "boolean") return t(v ? "sec.v.yes" : "sec.v.no");
  if (TIMES.has(key)) return fmtTime(v);
  if (SECONDS.has(key)) return t("sec.v.seconds", { n: (SIGNED.has(key) && v > 0 ? "+" : "") + num(v) });
  if (key === "idle_minutes") return t("sec.v.minutes", { n: num(v) });
  if (key === "action") {  // a configuration change carries its words; the others are playback or download
    const w = zh() ? d.action_zh : d.action_en;
    if (w) return w;
  }
  if (key === "target" && typeof v === "string" && v.includes(":")) {
    const [type, ...rest] = v.split(":");
    if (has(`sec.v.target.${type}`)) return `${t(`sec.v.target.${type}`)} ${rest.join(":")}`;
  }
  if (key === "servers" && Array.isArray(v)) {
    const one = (s) => (s.ok && typeof s.offset_s === "number"
      ? t("sec.v.seconds", { n: (s.offset_s > 0 ? "+" : "") + num(s.offset_s) }) : s.error || t("sec.v.no_answer"));
    return v.map((s) => `${s.server || s.address || "—"}: ${one(s || {})}`).join("; ") || "—";
  }
  if (CODED.has(key) || key === "transport" || key === "action") {
    const w = coded(key, v);
    if (w !== null) return w;
  }
  return typeof v === "object" ? JSON.stringify(v) : String(v);
}

// [{key, label (null: not known), value}] of a detail object, in its order.  "x_zh" / "x_en" are the words of
// "x" (used by detailValue); without an "x" the one of the language shown stands for it.
function detailItems(d) {
  if (!d || typeof d !== "object") return [];
  const out = [];
  for (const [k, v] of Object.entries(d)) {
    if (v === null || v === undefined || v === "") continue;
    const lang = /^(.+)_(zh|en)$/.exec(k);
    if (lang && (lang[1] in d || (lang[2] === "zh") !== zh())) continue;
    const key = lang ? lang[1] : k;
    out.push({ key, label: has("sec.d." + key) ? t("sec.d." + key) : null,
               value: lang ? String(v) : detailValue(k, v, d) });
  }
  return out;
}

function detailCell(d) {
  const items = detailItems(d);
  if (!items.length) return "—";
  return items.map((it) => h("span", { class: "sec-d", dataset: { key: it.key } },
    it.label ? h("span", { class: "sec-dkey" }, it.label + (zh() ? "：" : ": "))
      // an unknown key is shown as it is, muted: a code on purpose (no words for it yet)
      : h("span", { class: "sec-dkey unknown", dataset: { code: it.key } }, it.key + ": "),
    h("span", { class: "sec-dval" }, it.value)));
}

// ------------------------------------------------------------------ the page
export async function securityView(root) {
  const manage = can("security.manage");
  let vocab = { kinds: [], rules: [], severities: {}, autoblock: false };
  try {
    vocab = await get("/api/security/vocabulary");
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) throw err;
  }
  const live = h("span", { class: "badge", id: "sec-live" }, t("sec.connecting"));
  const autoblock = h("span", { class: "badge " + (vocab.autoblock ? "on" : "") },
    t(vocab.autoblock ? "sec.autoblock_on" : "sec.autoblock_off"));

  // --- alerts
  const alertBody = h("tbody", { id: "sec-alerts" });
  const showAcked = h("input", { type: "checkbox", id: "sec-show-acked" });
  function alertRow(a, fresh = false) {
    const state = a.state === "acknowledged"
      ? h("span", { class: "badge on", title: a.ack_note || "" }, t("sec.acked_by", { name: a.ack_user || "—" }),
          a.ack_note ? ` · ${a.ack_note}` : "")
      : manage ? h("button", { type: "button", class: "small primary", dataset: { ack: a.id }, onclick: () => ackDialog(a) },
          t("sec.ack")) : h("span", { class: "badge off" }, zh() ? a.state_zh : a.state);
    return h("tr", { class: "sec-alert" + (fresh ? " fresh" : "") + (a.state === "open" ? " open" : ""),
                     dataset: { alert: a.id } },
      h("td", null, fmtTime(a.first_at), a.last_at !== a.first_at ? h("div", { class: "muted" }, fmtTime(a.last_at)) : null),
      h("td", null, severityBadge(a)),
      h("td", null, h("strong", { class: "sec-rule" }, words(a, "rule")),
        h("div", { class: "muted" }, zh() ? a.rule_text_zh : a.rule_text_en)),
      h("td", { class: "mono" }, a.key),
      h("td", null, String(a.count)),
      h("td", null, a.blocked_until ? fmtTime(a.blocked_until) : "—"),
      h("td", null, state));
  }
  function emptyRow(body, cols, text) {
    clear(body).append(h("tr", null, h("td", { colspan: cols, class: "empty muted" }, text)));
  }
  function ackDialog(a) {
    const note = h("textarea", { name: "note", maxlength: 500, rows: 3, id: "sec-note", required: true });
    modal(t("sec.ack_title"), (b) => b.append(
      h("p", null, `${words(a, "rule")} · ${a.key} · ${fmtTime(a.first_at)}`),
      field(t("sec.note"), note)),
    async () => {
      if (!note.value.trim()) throw new Error(t("sec.note_required"));
      const done = await post(`/api/security/alerts/${a.id}/ack`, { note: note.value.trim() });
      placeAlert(done);
      toast(t("sec.acked"), "ok");
    }, { saveLabel: t("sec.ack") });
  }
  function placeAlert(a, fresh = false) {
    const tr = alertBody.querySelector(`tr[data-alert="${CSS.escape(String(a.id))}"]`);
    if (a.state !== "open" && !showAcked.checked) {
      if (tr) tr.remove();
      if (!alertBody.querySelector("tr")) emptyRow(alertBody, 7, t("sec.no_alerts"));
      return;
    }
    const empty = alertBody.querySelector("td.empty");
    if (empty) empty.parentElement.remove();
    if (tr) tr.replaceWith(alertRow(a, fresh));
    else alertBody.prepend(alertRow(a, fresh));
  }
  async function loadAlerts() {
    const page = await get("/api/security/alerts", { state: showAcked.checked ? null : "open", limit: PAGE });
    if (!page.items.length) emptyRow(alertBody, 7, t("sec.no_alerts"));
    else clear(alertBody).append(...page.items.map((a) => alertRow(a)));
  }
  showAcked.addEventListener("change", () => loadAlerts().catch((err) => toast(err.message, "error")));

  // --- blocks
  const blockBody = h("tbody", { id: "sec-blocks" });
  function blockRow(b) {
    return h("tr", { dataset: { address: b.address } },
      h("td", { class: "mono" }, b.address), h("td", null, fmtTime(b.until)), h("td", null, b.reason),
      h("td", null, manage ? h("button", { type: "button", class: "small", dataset: { unblock: b.address }, onclick: async () => {
        if (!confirm(t("sec.unblock_confirm", { address: b.address }))) return;
        try {
          await del(`/api/security/blocks/${encodeURIComponent(b.address)}`);
          toast(t("sec.unblocked"), "ok");
          await loadBlocks();
        } catch (err) { toast(err.message, "error"); }
      } }, t("sec.unblock")) : "—"));
  }
  async function loadBlocks() {
    const page = await get("/api/security/blocks");
    if (!page.items.length) emptyRow(blockBody, 4, t("sec.no_blocks"));
    else clear(blockBody).append(...page.items.map(blockRow));
  }

  // --- events
  const kindSel = h("select", { id: "sec-kind", "aria-label": t("sec.filter_kind") }, h("option", { value: "" }, t("sec.all_kinds")),
    vocab.kinds.map((k) => h("option", { value: k.kind }, zh() ? k.zh : k.en)));
  const sevSel = h("select", { id: "sec-severity", "aria-label": t("sec.filter_severity") }, h("option", { value: "" }, t("sec.all_severities")),
    Object.entries(vocab.severities).map(([s, w]) => h("option", { value: s }, zh() ? w : s)));
  const ipIn = h("input", { id: "sec-ip", placeholder: t("sec.source_ip"), "aria-label": t("sec.source_ip"), maxlength: 64, size: 16 });
  const userIn = h("input", { id: "sec-user", placeholder: t("sec.user"), "aria-label": t("sec.user"), maxlength: 64, size: 12 });
  const devIn = h("input", { id: "sec-device", placeholder: t("sec.device"), "aria-label": t("sec.device"), maxlength: 64, size: 22 });
  const sinceIn = h("input", { id: "sec-since", type: "datetime-local" });
  const untilIn = h("input", { id: "sec-until", type: "datetime-local" });
  const eventBody = h("tbody", { id: "sec-events" });
  const info = h("div", { class: "muted" });
  let offset = 0, total = 0, shown = 0;
  const filters = () => ({ kind: kindSel.value || null, severity: sevSel.value || null, source_ip: ipIn.value.trim() || null,
                           user: userIn.value.trim() || null, device_id: devIn.value.trim() || null,
                           since: fromLocalInput(sinceIn.value), until: fromLocalInput(untilIn.value) });
  const count = () => { info.textContent = t("common.page", { from: shown ? offset + 1 : 0, to: offset + shown, total }); };
  function eventRow(e, fresh = false) {
    return h("tr", { class: "sec-event" + (fresh ? " fresh" : ""), dataset: { event: e.id, kind: e.kind } },
      h("td", null, fmtTime(e.time)), h("td", null, words(e, "kind")), h("td", null, severityBadge(e)),
      h("td", { class: "mono" }, e.source_ip || "—"), h("td", null, e.user || "—"), h("td", { class: "mono" }, e.device_id || "—"),
      h("td", { class: "sec-detail" }, detailCell(e.detail)));
  }
  function matches(e, f) {
    for (const k of ["kind", "severity", "source_ip", "user", "device_id"]) if (f[k] && e[k] !== f[k]) return false;
    const at = Date.parse(e.time || "");
    if (f.since && !(at >= Date.parse(f.since))) return false;
    if (f.until && !(at < Date.parse(f.until))) return false;
    return true;
  }
  async function loadEvents() {
    const page = await get("/api/security/events", { ...filters(), offset, limit: PAGE });
    if (!page.items.length) emptyRow(eventBody, 7, t("sec.no_events"));
    else clear(eventBody).append(...page.items.map((e) => eventRow(e)));
    total = page.total;
    shown = page.items.length;
    count();
    prev.disabled = offset === 0;
    next.disabled = offset + page.items.length >= page.total;
  }
  const prev = h("button", { type: "button", class: "small", onclick: () => { offset = Math.max(0, offset - PAGE); loadEvents(); } }, t("common.prev"));
  const next = h("button", { type: "button", class: "small", onclick: () => { offset += PAGE; loadEvents(); } }, t("common.next"));
  const search = h("button", { type: "button", class: "primary", id: "sec-search", onclick: () => {
    offset = 0;
    loadEvents().catch((err) => toast(err.message, "error"));
  } }, t("common.search"));
  const th = (...keys) => h("thead", null, h("tr", null, keys.map((k) => h("th", null, t(k)))));

  root.append(
    h("div", { class: "page-head" }, h("h1", null, t("nav.security")), h("div", { class: "tools" }, live, autoblock)),
    h("section", { class: "card", id: "sec-live-panel" }, h("h2", null, t("sec.live_title"), " · ", t("sec.open_alerts")),
      h("div", { class: "tools" }, h("label", { class: "check" }, showAcked, t("sec.show_acked"))),
      h("table", { class: "table", id: "sec-alert-table" },
        th("sec.first", "sec.severity", "sec.rule", "sec.key", "sec.count", "sec.blocked_until", "sec.state"), alertBody)),
    h("section", { class: "card" }, h("h2", null, t("sec.blocks")),
      h("table", { class: "table", id: "sec-block-table" }, th("sec.address", "sec.blocked_until", "sec.reason", "sec.action"),
        blockBody)),
    h("section", { class: "card" }, h("h2", null, t("sec.events")),
      h("div", { class: "filters" }, kindSel, sevSel, ipIn, userIn, devIn,
        h("label", null, t("sec.from"), " ", sinceIn), h("label", null, t("sec.to"), " ", untilIn), search),
      h("table", { class: "table", id: "sec-event-table" },
        th("field.time", "sec.kind", "sec.severity", "sec.source_ip", "sec.user", "sec.device", "sec.detail"), eventBody),
      h("div", { class: "tools pager" }, info, prev, next)));
  try {
    await Promise.all([loadAlerts(), loadBlocks(), loadEvents()]);
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) throw err;
    root.append(message(err.message, "error"));
  }

  const feed = openSecurityFeed((kind, item) => {
    if (kind === "alert") {
      const isNew = item.state === "open" && !alertBody.querySelector(`tr[data-alert="${CSS.escape(String(item.id))}"]`);
      placeAlert(item, isNew);
      if (isNew) beep();
    } else if (kind === "event") {
      if (offset !== 0 || !matches(item, filters()) || eventBody.querySelector(`tr[data-event="${CSS.escape(String(item.id))}"]`)) return;
      const empty = eventBody.querySelector("td.empty");
      if (empty) empty.parentElement.remove();
      eventBody.prepend(eventRow(item, true));
      while (eventBody.children.length > PAGE) eventBody.lastElementChild.remove();
      total += 1;
      shown = Math.min(PAGE, shown + 1);
      count();
    } else if (kind === "block" || kind === "unblock") {
      loadBlocks().catch(() => {});
    }
  }, (st) => {
    live.textContent = t("sec.live." + st);
    live.className = "badge " + (st === "open" ? "on" : "off");
  });
  return () => feed.close();
}
