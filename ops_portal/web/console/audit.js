// 审计日志 (issue 18): the tamper-evident audit log in words. The entries table (time in Beijing time, the actor,
// the action from GET /api/audit/actions, the target by its name where the console can read it, the result, the
// client address), filters (time range, action, actor, target) and paging; each row opens to its detail as a
// key/value list. Export asks POST /api/audit/export for the contiguous range of entries the filter selects and
// saves the zip through a blob URL. Verification runs in the browser on a bundle the user picks: the zip is read
// with DecompressionStream, the checkpoint's Ed25519 signature is checked with WebCrypto against the platform's
// verifier key (GET /api/audit/verifier-key, never the bundle's own copy), and every entry is re-hashed
// (SHA-256 leaf hashes, the prev chain, the RFC 9162 Merkle root, the earlier signed checkpoints in the bundle).
// The page's own CSS is a constructed style sheet (adoptedStyleSheets): the console's CSP allows no inline <style>.
import { get, token } from "./api.js";
import { badge, clear, field, fmtTime, fromLocalInput, h, message, pageStyle, toast } from "./dom.js";
import { extend, getLang, serverText, t } from "./i18n.js";
import { can } from "./session.js";

extend({
  "auditv.title": "审计日志",
  "auditv.time": "时间（北京时间）",
  "auditv.actor": "操作者",
  "auditv.action": "动作",
  "auditv.target": "对象",
  "auditv.result": "结果",
  "auditv.ip": "来源地址",
  "auditv.seq": "序号",
  "auditv.since": "开始时间",
  "auditv.until": "结束时间",
  "auditv.action_hint": "输入或选择动作（名称或编码，如 device.*）",
  "auditv.actor_hint": "用户名或编码",
  "auditv.target_hint": "对象编码，如设备编码",
  "auditv.target_type": "对象类型",
  "auditv.order": "排序",
  "auditv.newest": "最新在前",
  "auditv.oldest": "最早在前",
  "auditv.filter": "查询",
  "auditv.reset": "清除条件",
  "auditv.empty": "没有符合条件的审计记录",
  "auditv.unknown_action": "未知动作：{text}",
  "auditv.expand": "展开详情",
  "auditv.collapse": "收起详情",
  "auditv.no_detail": "无更多详情",
  "auditv.more_items": "……共 {n} 项",
  "auditv.result.ok": "成功",
  "auditv.result.failed": "失败",
  "auditv.result.refused": "已拒绝",
  "auditv.actor.system": "系统",
  "auditv.actor.platform": "平台",
  "auditv.actor.anonymous": "匿名",
  "auditv.actor.device": "设备",
  "auditv.group": "{name}（全部）",
  "auditv.group.auth": "登录与账户",
  "auditv.group.user": "用户管理",
  "auditv.group.role": "角色管理",
  "auditv.group.device": "设备管理",
  "auditv.group.channel": "通道",
  "auditv.group.org": "组织节点",
  "auditv.group.live": "实时预览",
  "auditv.group.playback": "录像回放",
  "auditv.group.download": "视频下载",
  "auditv.group.record": "录像存储",
  "auditv.group.ptz": "云台控制",
  "auditv.group.ticket": "工单",
  "auditv.group.contract": "合同",
  "auditv.group.report": "报表",
  "auditv.group.security": "安全",
  "auditv.group.access": "访问控制",
  "auditv.group.cascade": "级联",
  "auditv.group.audit": "审计日志",
  "auditv.group.backup": "备份",
  "auditv.group.alarm": "报警",
  "auditv.type.channel": "通道",
  "auditv.type.device": "设备",
  "auditv.type.org_node": "组织节点",
  "auditv.type.ticket": "工单",
  "auditv.type.user": "用户",
  "auditv.type.role": "角色",
  "auditv.type.contract": "合同",
  "auditv.type.report": "报表",
  "auditv.type.audit_log": "审计日志",
  "auditv.type.setting": "系统设置",
  "auditv.type.file": "文件",
  "auditv.type.node": "集群节点",
  "auditv.type.cascade": "上级平台",
  "auditv.type.security_alert": "安全告警",
  "auditv.type.address": "网络地址",
  "auditv.type.alarm": "报警",
  "auditv.type.backup": "备份",
  "auditv.type.job": "下载任务",
  "auditv.type.other": "其他对象",
  "auditv.channel_of": "{channel}（{device}）",
  "auditv.export": "导出当前条件的审计包",
  "auditv.exporting": "正在导出……",
  "auditv.exported": "已导出审计包：第 {from}–{to} 条",
  "auditv.export_failed": "导出失败：{error}",
  "auditv.export_none": "没有符合条件的记录，未导出",
  "auditv.export_note": "导出包含符合条件的第一条到最后一条之间的全部记录（连续区间才能验证），并附平台签名的检查点。",
  "auditv.verify": "验证导出包",
  "auditv.verify_file": "选择审计导出包（.zip）",
  "auditv.verify_note": "在浏览器中验证：用平台的验证公钥检查检查点的 Ed25519 签名，并重新计算每条记录的哈希链和默克尔根。",
  "auditv.verifying": "正在验证……",
  "auditv.pass": "验证通过",
  "auditv.fail": "验证失败",
  "auditv.checked": "已检查：",
  "auditv.reason": "原因：",
  "auditv.chk.signature": "检查点签名有效（Ed25519，平台验证公钥 {key}）",
  "auditv.chk.entries": "{n} 条记录（第 {from}–{to} 条）的哈希链连续、未被修改",
  "auditv.chk.root": "重新计算的默克尔根与已签名检查点一致（树大小 {size}）",
  "auditv.chk.prefix": "与此前第 0–{last} 条的衔接（前缀哈希与包含证明）",
  "auditv.chk.witness": "与导出包中 {n} 个早先签名的检查点一致",
  "auditv.chk.bundle_key": "导出包自带的验证公钥与平台的一致",
  "auditv.warn.bundle_key": "注意：导出包自带的验证公钥与平台的不同（已使用平台的公钥验证）",
  "auditv.why.not_zip": "所选文件不是有效的 zip 导出包",
  "auditv.why.missing": "导出包缺少文件 {name}",
  "auditv.why.key": "无法读取平台的验证公钥",
  "auditv.why.no_ed25519": "此浏览器不支持 Ed25519 签名验证，无法检查签名",
  "auditv.why.note": "检查点 {name} 格式错误",
  "auditv.why.unknown_key": "检查点 {name} 不是由平台的密钥签名的",
  "auditv.why.bad_signature": "检查点 {name} 的签名无效：内容被修改或不是平台签发的",
  "auditv.why.malformed": "第 {seq} 条记录（第 {line} 行）格式错误或被编辑",
  "auditv.why.seq": "第 {line} 行应为第 {seq} 条记录：记录缺失、重复或顺序被打乱",
  "auditv.why.altered": "第 {seq} 条记录被修改：其哈希与下一条记录中的 prev 不符",
  "auditv.why.chain": "第 {seq} 条记录与上一条不衔接（prev 不符）",
  "auditv.why.size": "检查点覆盖 {size} 条记录，而导出包的记录到第 {last} 条为止：记录被删除或增加",
  "auditv.why.root": "记录重新计算的默克尔根与已签名的检查点不符：第 {seq} 条被修改，或记录被重写",
  "auditv.why.prefix": "与此前记录的衔接信息（consistency.json）无效",
  "auditv.why.witness": "前 {size} 条记录与早先签名的检查点不符：已被重写",
  "auditv.why.origin": "检查点来自另一个日志（{origin}）",
  "auditv.why.error": "无法检查：{error}",
  "auditv.why.insecure": "浏览器只在 HTTPS（或本机地址）下提供加密接口：请通过 HTTPS 打开控制台再验证",
  "auditv.yes": "是",
  "auditv.no": "否",
}, {
  "auditv.title": "Audit log",
  "auditv.time": "Time (Beijing)",
  "auditv.actor": "Actor",
  "auditv.action": "Action",
  "auditv.target": "Target",
  "auditv.result": "Result",
  "auditv.ip": "Client address",
  "auditv.seq": "No.",
  "auditv.since": "From",
  "auditv.until": "Until",
  "auditv.action_hint": "Type or pick an action (its name, or a code such as device.*)",
  "auditv.actor_hint": "User name or id",
  "auditv.target_hint": "Target id, e.g. a device id",
  "auditv.target_type": "Target type",
  "auditv.order": "Order",
  "auditv.newest": "Newest first",
  "auditv.oldest": "Oldest first",
  "auditv.filter": "Search",
  "auditv.reset": "Clear",
  "auditv.empty": "No audit entries match",
  "auditv.unknown_action": "Unknown action: {text}",
  "auditv.expand": "Show detail",
  "auditv.collapse": "Hide detail",
  "auditv.no_detail": "No further detail",
  "auditv.more_items": "… {n} items in all",
  "auditv.result.ok": "Succeeded",
  "auditv.result.failed": "Failed",
  "auditv.result.refused": "Refused",
  "auditv.actor.system": "System",
  "auditv.actor.platform": "Platform",
  "auditv.actor.anonymous": "Anonymous",
  "auditv.actor.device": "Device",
  "auditv.group": "{name} (all)",
  "auditv.group.auth": "Sign-in and accounts",
  "auditv.group.user": "User management",
  "auditv.group.role": "Role management",
  "auditv.group.device": "Device management",
  "auditv.group.channel": "Channels",
  "auditv.group.org": "Organisation",
  "auditv.group.live": "Live view",
  "auditv.group.playback": "Playback",
  "auditv.group.download": "Video downloads",
  "auditv.group.record": "Recording storage",
  "auditv.group.ptz": "PTZ control",
  "auditv.group.ticket": "Tickets",
  "auditv.group.contract": "Contracts",
  "auditv.group.report": "Reports",
  "auditv.group.security": "Security",
  "auditv.group.access": "Access control",
  "auditv.group.cascade": "Cascade",
  "auditv.group.audit": "Audit log",
  "auditv.group.backup": "Backup",
  "auditv.group.alarm": "Alarms",
  "auditv.type.channel": "Channel",
  "auditv.type.device": "Device",
  "auditv.type.org_node": "Organisation node",
  "auditv.type.ticket": "Ticket",
  "auditv.type.user": "User",
  "auditv.type.role": "Role",
  "auditv.type.contract": "Contract",
  "auditv.type.report": "Report",
  "auditv.type.audit_log": "Audit log",
  "auditv.type.setting": "Setting",
  "auditv.type.file": "File",
  "auditv.type.node": "Cluster node",
  "auditv.type.cascade": "Upper platform",
  "auditv.type.security_alert": "Security alert",
  "auditv.type.address": "Network address",
  "auditv.type.alarm": "Alarm",
  "auditv.type.backup": "Backup",
  "auditv.type.job": "Download job",
  "auditv.type.other": "Other",
  "auditv.channel_of": "{channel} ({device})",
  "auditv.export": "Export the filtered entries",
  "auditv.exporting": "Exporting…",
  "auditv.exported": "Audit bundle exported: entries {from}–{to}",
  "auditv.export_failed": "Export failed: {error}",
  "auditv.export_none": "No entries match: nothing exported",
  "auditv.export_note": "The bundle holds every entry from the first to the last one that matches (only a contiguous range "
    + "verifies), with a checkpoint signed by the platform.",
  "auditv.verify": "Verify a bundle",
  "auditv.verify_file": "Pick an audit export bundle (.zip)",
  "auditv.verify_note": "Checked in the browser: the checkpoint's Ed25519 signature against the platform's verifier key, "
    + "and every entry's hash chain and the Merkle root recomputed.",
  "auditv.verifying": "Verifying…",
  "auditv.pass": "Verification passed",
  "auditv.fail": "Verification failed",
  "auditv.checked": "Checked:",
  "auditv.reason": "Reason:",
  "auditv.chk.signature": "The checkpoint's signature is valid (Ed25519, platform verifier key {key})",
  "auditv.chk.entries": "{n} entries (no. {from}–{to}) chain without a break and are unaltered",
  "auditv.chk.root": "The recomputed Merkle root equals the signed checkpoint's (tree size {size})",
  "auditv.chk.prefix": "The join to the earlier entries 0–{last} (prefix hashes and inclusion proof)",
  "auditv.chk.witness": "Matches {n} earlier signed checkpoints in the bundle",
  "auditv.chk.bundle_key": "The bundle's own verifier key is the platform's",
  "auditv.warn.bundle_key": "Note: the bundle's own verifier key differs from the platform's (the platform's was used)",
  "auditv.why.not_zip": "The file is not a valid zip export bundle",
  "auditv.why.missing": "The bundle lacks the file {name}",
  "auditv.why.key": "The platform's verifier key could not be read",
  "auditv.why.no_ed25519": "This browser cannot verify Ed25519 signatures: the signature is not checked",
  "auditv.why.note": "The checkpoint {name} is malformed",
  "auditv.why.unknown_key": "The checkpoint {name} is not signed by the platform's key",
  "auditv.why.bad_signature": "The checkpoint {name} has an invalid signature: altered, or not issued by the platform",
  "auditv.why.malformed": "Entry no. {seq} (line {line}) is malformed or was edited",
  "auditv.why.seq": "Line {line} should hold entry no. {seq}: entries missing, repeated or reordered",
  "auditv.why.altered": "Entry no. {seq} was altered: its hash no longer matches the prev recorded in the next entry",
  "auditv.why.chain": "Entry no. {seq} does not chain to the entry before it (prev differs)",
  "auditv.why.size": "The checkpoint covers {size} entries but the bundle's entries end at no. {last}: entries were "
    + "deleted or added",
  "auditv.why.root": "The entries do not hash to the signed checkpoint's Merkle root: entry no. {seq} was altered, or "
    + "the entries were rewritten",
  "auditv.why.prefix": "The join to the earlier entries (consistency.json) is invalid",
  "auditv.why.witness": "The first {size} entries do not match an earlier signed checkpoint: they were rewritten",
  "auditv.why.origin": "The checkpoint is from another log ({origin})",
  "auditv.why.error": "Cannot check: {error}",
  "auditv.why.insecure": "The browser offers its cryptography only over HTTPS (or a local address): open the console "
    + "over HTTPS to verify",
  "auditv.yes": "yes",
  "auditv.no": "no",
});

// ------------------------------------------------------------------ detail keys and coded values in words
const DETAIL_WORDS = {
  token_id: ["会话编号", "session id"], reason: ["原因", "reason"], locked_until: ["锁定至", "locked until"],
  route: ["请求路径", "request path"], error: ["错误", "error"], params: ["参数", "parameters"],
  summary: ["汇总", "summary"], suppressed: ["已合并的次数", "suppressed"], revoked_tokens: ["注销的会话数", "sessions ended"],
  cleared: ["已清除", "cleared"], sn: ["命令序号", "command serial"], settings: ["设置", "settings"],
  password_set: ["设置了密码", "password set"], password_cleared: ["清除了密码", "password cleared"],
  revived: ["恢复已删除的设备", "revived"], fields: ["修改的字段", "fields changed"], changes: ["修改内容", "changes"],
  force: ["强制", "forced"], was_online: ["删除时在线", "online when deleted"], file: ["文件", "file"],
  total: ["总数", "total"], created: ["新增", "created"], failed: ["失败", "failed"], errors: ["错误", "errors"],
  action: ["操作", "action"], device_ids: ["设备编码", "device ids"], org_node_id: ["组织节点", "organisation node"],
  kind: ["类型", "kind"], method: ["方法", "method"], transport: ["传输", "transport"],
  remote_addr: ["对端地址", "remote address"], suppressed_before: ["此前合并的次数", "suppressed before"],
  from: ["从", "from"], to: ["到", "to"], tree_size: ["树大小", "tree size"], sha256: ["SHA-256 摘要", "SHA-256"],
  entries_sha256: ["条目 SHA-256", "entries SHA-256"], device_id: ["设备编码", "device id"],
  channel_id: ["通道编码", "channel id"], codec: ["编码格式", "codec"], duration_s: ["时长（秒）", "duration (s)"],
  by: ["执行者", "by"], moved: ["已迁移", "moved"], left: ["剩余", "left"], report: ["报表", "report"],
  label: ["名称", "label"], start: ["开始", "start"], end: ["结束", "end"], format: ["格式", "format"],
  bytes: ["字节数", "bytes"], before: ["修改前", "before"], after: ["修改后", "after"], job_id: ["任务编号", "job id"],
  session_id: ["会话编号", "session id"], watermark_id: ["水印编号", "watermark id"], frames: ["帧数", "frames"],
  requester_id: ["申请人编号", "requester id"], requester: ["申请人", "requester"], source: ["来源", "source"],
  anomaly: ["异常", "anomaly"], contract_id: ["合同编号", "contract id"], deadline: ["期限", "deadline"],
  repair_seconds: ["修复用时（秒）", "repair time (s)"], type: ["类型", "type"], username: ["用户名", "user name"],
  role_ids: ["角色", "roles"], ptz_level: ["云台控制级别", "PTZ level"], valid_from: ["生效时间", "valid from"],
  valid_until: ["失效时间", "valid until"], roles: ["角色", "roles"], name: ["名称", "name"],
  permissions: ["权限", "permissions"], full_scope: ["全部数据范围", "full data scope"],
  org_node_ids: ["组织节点", "organisation nodes"], channels: ["通道", "channels"], role_id: ["角色编号", "role id"],
  role: ["角色", "role"], parent_id: ["上级节点", "parent node"], children: ["下级节点", "child nodes"],
  devices: ["设备", "devices"], moved_to: ["移至", "moved to"], command: ["命令", "command"], value: ["值", "value"],
  mode: ["模式", "mode"], stream: ["码流", "stream"], schedule: ["计划", "schedule"], channel: ["通道", "channel"],
  path: ["路径", "path"], root: ["根", "root"], free_mb: ["剩余空间（MB）", "free (MB)"], speed: ["速度", "speed"],
  level: ["级别", "level"], refused: ["被拒绝", "refused"], holder: ["占用者", "holder"],
  seconds_left: ["剩余秒数", "seconds left"], preset: ["预置位", "preset"], tour_id: ["巡航编号", "tour id"],
  points: ["巡航点", "points"], enabled: ["启用", "enabled"], result: ["结果", "result"], answered: ["已应答", "answered"],
  alarm_id: ["报警编号", "alarm id"], priority: ["级别", "priority"], note: ["备注", "note"],
  platform_id: ["上级平台", "upper platform"], server_id: ["上级编码", "server id"], host: ["主机", "host"],
  port: ["端口", "port"], items: ["条目数", "items"], cmd_type: ["查询类型", "query type"],
  upward_id: ["上报编码", "upward id"], status: ["状态", "status"], call_id: ["呼叫编号", "call id"],
  alert_id: ["告警编号", "alert id"], rule: ["规则", "rule"], rule_zh: ["规则说明", "rule (Chinese)"], key: ["键", "key"],
  severity: ["严重程度", "severity"], count: ["次数", "count"], source_ip: ["来源地址", "source address"],
  first_at: ["首次", "first at"], last_at: ["最近", "last at"], blocked_until: ["封禁至", "blocked until"],
  address: ["地址", "address"], until: ["截至", "until"], automatic: ["自动", "automatic"], window: ["时间窗", "window"],
  window_start: ["时间窗开始", "window start"], window_end: ["时间窗结束", "window end"], rate: ["在线率", "online rate"],
  threshold: ["阈值", "threshold"], breach: ["未达标", "breach"], scope: ["范围", "scope"],
  checkpoint_size: ["检查点大小", "checkpoint size"], checkpoint_root: ["检查点根", "checkpoint root"],
  source_sha256: ["源数据 SHA-256", "source SHA-256"], was_enabled: ["原已启用", "was enabled"],
  created_at: ["创建时间", "created at"], revision: ["版本", "revision"], tables: ["表", "tables"], rows: ["行数", "rows"],
  files: ["文件", "files"], trigger: ["触发方式", "trigger"], pruned: ["清理的旧备份", "pruned"], counts: ["统计", "counts"],
  codes: ["检查项", "codes"], retention_days: ["保留天数", "retention days"], interval: ["间隔", "interval"],
  online: ["在线", "online"], id: ["编号", "id"], row: ["行号", "row"], message: ["说明", "message"],
  latitude: ["纬度", "latitude"], longitude: ["经度", "longitude"], expected_channels: ["应有通道数", "expected channels"],
  stream_form: ["码流标识方式", "stream form"], before_count: ["修改前数量", "count before"],
  after_count: ["修改后数量", "count after"], org_nodes: ["组织节点", "organisation nodes"],
  failed_logins: ["连续失败次数", "failed logins in a row"], address_failures: ["该地址失败次数", "failures from the address"],
  account_failures: ["该账户失败次数", "failures of the account"], second_factor: ["两步验证", "second factor"],
  user_id: ["用户编号", "user id"], display_name: ["姓名", "display name"],
};
// a ticket's states (ticket.transition's from / to), in tickets.js's words
const TICKET_STATES = {
  reported: ["待受理", "waiting for acceptance"], acknowledged: ["已受理", "accepted"], repairing: ["维修中", "under repair"],
  repaired: ["已修复待确认", "repaired, to be confirmed"], confirmed: ["已确认", "confirmed"], reopened: ["已重开", "reopened"],
};
// values of a few keys that are codes: in words
const KEYED_VALUES = {
  transport: { udp: ["UDP", "UDP"], tcp: ["TCP", "TCP"], tls: ["TLS", "TLS"] },
  from: TICKET_STATES,
  to: TICKET_STATES,
  // a ticket's moves (ticket.transition's action; no other action's detail uses these codes)
  action: { acknowledge: ["受理", "Accept"], start_repair: ["开始维修", "Start repair"], feedback: ["修复反馈", "Report repaired"],
            recover: ["设备自动恢复", "Device recovered"], confirm: ["确认修复", "Confirm repair"], reopen: ["重开", "Reopen"] },
  stream_form: { none: ["不指定", "not set"], streamnumber: ["国标 2022（a=streamnumber）", "GB 2022 (a=streamnumber)"],
                 stream: ["厂商（a=stream）", "vendor (a=stream)"], streamprofile: ["厂商（a=streamprofile）",
                 "vendor (a=streamprofile)"] },
};
// coded values the console knows in words (login failure reasons, sources, states...)
const VALUE_WORDS = {
  bad_credentials: ["用户名或密码错误", "wrong user name or password"], unknown_user: ["用户不存在", "unknown user"],
  locked: ["账户已锁定", "account locked"], disabled: ["账户已停用", "account disabled"],
  account_expired: ["账户已过期", "account expired"], account_not_yet_valid: ["账户尚未生效", "account not yet valid"],
  totp_failed: ["两步验证码错误", "wrong two-step code"], admin_network: ["不在管理网段", "outside the admin network"],
  address_mismatch: ["来源地址与设备注册地址不符", "not from the device's registered address"],
  lockout: ["注册锁定", "REGISTER lockout"], manual: ["手动", "manual"], expired: ["已到期", "expired"],
  platform: ["平台录像", "platform recording"], cli: ["命令行", "command line"], signal: ["系统信号", "signal"],
  schedule: ["定时", "schedule"], user_stop: ["用户停止", "stopped by the user"], ok: ["成功", "OK"],
};
const TIME_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/;
const GROUPS = ["auth", "user", "role", "device", "channel", "org", "live", "playback", "download", "record", "ptz",
  "ticket", "contract", "report", "security", "access", "cascade", "audit", "backup", "alarm"];
const TARGET_TYPES = ["channel", "device", "org_node", "ticket", "user", "role", "contract", "report", "audit_log",
  "setting", "file", "node", "cascade", "security_alert", "address"];

function pair(words) { return words ? (getLang() === "en" ? words[1] : words[0]) : null; }
function word(key, fallback) { const text = t(key); return text === key ? fallback : text; }

const CSS = `
.auditv .auditv-filters { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(190px, 100%), 1fr)); gap: 8px 12px;
  align-items: end; margin-bottom: 12px; }
.auditv .auditv-filters .field { margin: 0; min-width: 0; }
.auditv .auditv-filters input, .auditv .auditv-filters select { width: 100%; min-width: 0; box-sizing: border-box; }
.auditv .card { min-width: 0; }
.auditv input[type=file] { max-width: 100%; }
.auditv .auditv-buttons { display: flex; gap: 8px; flex-wrap: wrap; }
.auditv .auditv-wrap { overflow-x: auto; max-width: 100%; }
.auditv .auditv-table td { vertical-align: top; }
.auditv .auditv-table td.auditv-time { white-space: nowrap; }
.auditv .auditv-table .auditv-sub { display: block; font-size: 11.5px; color: var(--muted, #667); overflow-wrap: anywhere; }
.auditv .auditv-table td.auditv-target, .auditv .auditv-table td.auditv-action { min-width: 9em; }
.auditv .auditv-table td.auditv-actor { min-width: 5em; }
.auditv .auditv-table td.auditv-result { white-space: nowrap; }
.auditv .auditv-toggle { background: none; border: 1px solid var(--line, #ccd); border-radius: 4px; padding: 0 6px;
  font: inherit; cursor: pointer; min-width: 2em; }
.auditv .auditv-toggle:focus-visible { outline: 2px solid var(--accent, #2a6ee6); }
.auditv tr.auditv-detail-row > td { background: var(--bg, #f7f8fa); }
.auditv dl.auditv-kv { display: grid; grid-template-columns: minmax(7em, max-content) 1fr; gap: 2px 12px; margin: 4px 0; }
.auditv dl.auditv-kv dt { color: var(--muted, #667); }
.auditv dl.auditv-kv dd { margin: 0; word-break: break-word; }
.auditv dl.auditv-kv dl.auditv-kv { margin: 0; padding-left: 8px; border-left: 2px solid var(--line, #dde); }
.auditv .auditv-pager { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; justify-content: flex-end;
  margin-top: 8px; }
.auditv .auditv-pager .muted { margin-right: auto; }
.auditv .auditv-tools { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 12px; margin-bottom: 12px; }
.auditv .auditv-tools > .card { margin: 0; }
.auditv .auditv-tools h2 { font-size: 15px; margin: 0 0 6px; }
.auditv .auditv-tools p { margin: 4px 0 8px; }
.auditv .auditv-verdict { margin-top: 8px; padding: 8px 10px; border-radius: 6px; }
.auditv .auditv-verdict.pass { background: #e4f6ec; color: #13653b; }
.auditv .auditv-verdict.fail { background: #fdecec; color: #8f1d1d; }
.auditv .auditv-verdict strong { font-size: 15px; }
.auditv .auditv-verdict ul { margin: 4px 0 0; padding-left: 20px; }
@media (max-width: 700px) {
  .auditv .auditv-lo { display: none; }
  .auditv .auditv-table td.auditv-time { white-space: normal; min-width: 6.5em; }
  .auditv .auditv-tools { grid-template-columns: minmax(0, 1fr); }
  .auditv .auditv-filters { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .auditv dl.auditv-kv { grid-template-columns: minmax(0, 1fr); }
  .auditv dl.auditv-kv dd { padding-left: 8px; }
}`;
const addStyle = pageStyle(CSS);

// ------------------------------------------------------------------ the action catalogue
let catalogue = null; // code -> {action, zh, en}

async function loadActions() {
  if (catalogue) return catalogue;
  try {
    const r = await get("/api/audit/actions");
    catalogue = new Map(r.items.map((a) => [a.action, a]));
  } catch (_) {
    return new Map();
  }
  return catalogue;
}

function actionWords(code) {
  const a = catalogue && catalogue.get(code);
  if (!a) return code;
  // serverText picks the half of a "中文 / English" pair that matches the language
  return serverText(`${a.zh} / ${a.en}`);
}

function groupName(group) { return t("auditv.group", { name: word("auditv.group." + group, group) }); }

// what a person typed in the action box, as the API's filter: a code, a prefix "x.*", or an action's words
function actionFilter(text, actions) {
  const s = text.trim();
  if (!s) return "";
  if (/^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$/.test(s)) return s;
  const lower = s.toLowerCase();
  for (const a of actions.values()) {
    if (a.zh === s || a.en.toLowerCase() === lower || actionWords(a.action) === s) return a.action;
  }
  for (const g of GROUPS) if (groupName(g) === s) return g + ".*";
  return null;
}

// ------------------------------------------------------------------ names of targets
const nodeNames = new Map(); // organisation node id -> name (targets and the detail's org_node_id)

function makeNames() {
  const devices = new Map(); // device id -> name | null
  const channels = new Map(); // "device/channel" -> name
  const bareChannels = new Map(); // channel id -> {name, device}
  const orgNodes = nodeNames;
  const users = new Map();
  let orgLoaded = false;
  let usersLoaded = false;

  async function load(entries) {
    const jobs = [];
    if (!orgLoaded && entries.some((e) => e.target.type === "org_node" || (e.detail && ("org_node_id" in e.detail
        || "parent_id" in e.detail)))) {
      orgLoaded = true;
      jobs.push(get("/api/org/tree").then((r) => { for (const n of r.nodes || []) orgNodes.set(String(n.id), n.name); })
        .catch(() => {}));
    }
    if (!usersLoaded && can("user.manage") && entries.some((e) => e.target.type === "user")) {
      usersLoaded = true;
      jobs.push(get("/api/users", { limit: 500 }).then((r) => {
        for (const u of r.items || []) users.set(String(u.id), u.display_name || u.name || u.username);
      }).catch(() => {}));
    }
    if (can("device.read")) {
      const wanted = new Set();
      for (const e of entries) {
        const id = e.target.id || "";
        const d = e.detail || {};
        if (e.target.type === "device") wanted.add(id);
        if (e.target.type === "channel") wanted.add(id.includes("/") ? id.split("/")[0] : d.device_id || "");
        if (typeof d.device_id === "string") wanted.add(d.device_id);
      }
      // searches, not GET /api/devices/{id}: a device deleted since is no 404 in the browser's console
      for (const id of wanted) {
        if (!/^\d{20}$/.test(id) || devices.has(id)) continue;
        devices.set(id, null);
        jobs.push(get("/api/channels", { q: id, limit: 500 }).then((r) => {
          for (const c of r.items || []) {
            channels.set(`${c.device_id}/${c.channel_id}`, c.name || null);
            if (!bareChannels.has(c.channel_id)) bareChannels.set(c.channel_id, { name: c.name, device: c.device_id });
          }
        }).catch(() => {}));
        jobs.push(get("/api/devices", { q: id, limit: 5 }).then((r) => {
          for (const dv of r.items || []) if (dv.device_id === id) devices.set(id, dv.name || null);
        }).catch(() => {}));
      }
    }
    await Promise.all(jobs);
  }

  // the target of an entry as {words, id}: its name where known (a channel with its device), else its id
  function target(e) {
    const type = e.target.type || "";
    const id = e.target.id || "";
    const d = e.detail || {};
    const typeWord = word("auditv.type." + type, t("auditv.type.other"));
    let name = null;
    if (type === "channel") {
      let [dev, ch] = id.includes("/") ? id.split("/") : [d.device_id || "", id];
      let chName = channels.get(`${dev}/${ch}`);
      if (!dev && bareChannels.has(ch)) { dev = bareChannels.get(ch).device; chName = bareChannels.get(ch).name; }
      const devName = devices.get(dev) || null;
      if (chName || devName) name = t("auditv.channel_of", { channel: chName || ch, device: devName || dev });
    } else if (type === "device") {
      name = devices.get(id) || null;
    } else if (type === "org_node") {
      name = orgNodes.get(id) || d.name || null;
    } else if (type === "user") {
      name = users.get(id) || d.username || null;
    } else if (type === "role") {
      name = d.name || d.role || null;
    } else if (type === "contract" || type === "cascade") {
      name = d.name || null;
    }
    return { type: typeWord, name, id };
  }
  return { load, target };
}

function actorWords(actor) {
  const name = actor.name || actor.id || "";
  switch (actor.type) {
    case "user": return name;
    case "device": return `${t("auditv.actor.device")} ${name}`.trim();
    case "system": return name ? `${t("auditv.actor.system")}（${name}）` : t("auditv.actor.system");
    case "platform": return name ? `${t("auditv.actor.platform")}（${name}）` : t("auditv.actor.platform");
    case "anonymous": return name ? `${t("auditv.actor.anonymous")}（${name}）` : t("auditv.actor.anonymous");
    default: return name || actor.type;
  }
}

// the outcome of an entry: refused, failed or succeeded, from its action and detail
function resultOf(e) {
  const d = e.detail || {};
  const a = e.action;
  if (a === "access.denied" || a === "security.sip_refused" || a === "cascade.refused" || d.refused === true) {
    return ["refused", "off"];
  }
  if (a.endsWith("_failed") || a.endsWith(".failed") || a === "auth.lockout" || a === "record.disk_full"
      || (d.error !== undefined && d.error !== null && d.error !== "")
      || (typeof d.result === "string" && /fail|error|refus|timeout/i.test(d.result))) return ["failed", "off"];
  return ["ok", "on"];
}

// ------------------------------------------------------------------ detail as a key/value list
function valueNode(key, value, depth) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "boolean") return value ? t("auditv.yes") : t("auditv.no");
  if (typeof value === "number" && (key === "org_node_id" || key === "parent_id") && nodeNames.has(String(value))) {
    return nodeNames.get(String(value));
  }
  if (typeof value === "number") return (key === "rate" || key === "threshold") && value <= 1
    ? `${(value * 100).toFixed(value >= 0.9995 ? 0 : 1)} %` : String(value);
  if (typeof value === "string") {
    if (TIME_RE.test(value)) return fmtTime(value);
    if (KEYED_VALUES[key] && KEYED_VALUES[key][value]) return pair(KEYED_VALUES[key][value]);
    if (VALUE_WORDS[value] && ["reason", "kind", "source", "trigger", "by", "result"].includes(key)) {
      return pair(VALUE_WORDS[value]);
    }
    if (key === "action" && catalogue && catalogue.has(value)) return actionWords(value);
    return /^[0-9a-f]{40,}$/.test(value) ? h("span", { class: "mono" }, value) : value;
  }
  if (Array.isArray(value)) {
    if (!value.length) return "—";
    if (value.every((v) => v === null || typeof v !== "object")) {
      const shown = value.slice(0, 50).map((v) => {
        const n = valueNode(key, v, depth + 1);
        return typeof n === "string" ? n : n.textContent;
      }).join("、");
      return value.length > 50 ? `${shown} ${t("auditv.more_items", { n: value.length })}` : shown;
    }
    if (depth >= 3) return JSON.stringify(value);
    const items = value.slice(0, 20).map((v, i) => [String(i + 1), v]);
    const list = kvList(items, depth + 1);
    if (value.length > 20) list.append(h("dt", null, "…"), h("dd", null, t("auditv.more_items", { n: value.length })));
    return list;
  }
  if (depth >= 3) return JSON.stringify(value);
  return kvList(Object.entries(value), depth + 1);
}

function kvList(pairs, depth = 0) {
  return h("dl", { class: "auditv-kv" }, pairs.flatMap(([k, v]) => [
    h("dt", { dataset: { key: k } }, pair(DETAIL_WORDS[k]) || k),
    h("dd", null, valueNode(k, v, depth)),
  ]));
}

// ------------------------------------------------------------------ export: a token fetch saved by a blob URL
async function saveExport(params) {
  const q = new URLSearchParams(params).toString();
  const r = await fetch("/api/audit/export" + (q ? "?" + q : ""), {
    method: "POST", headers: { Authorization: "Bearer " + (token.get() || "") } });
  if (!r.ok) {
    let text = "HTTP " + r.status;
    try { const data = await r.json(); if (data && data.message) text = serverText(data.message); } catch (_) { /* */ }
    throw new Error(text);
  }
  const cd = r.headers.get("content-disposition") || "";
  const m = /filename="?([^";]+)"?/i.exec(cd);
  const url = URL.createObjectURL(await r.blob());
  const a = h("a", { href: url, download: m ? m[1] : "gbops-audit.zip", class: "hidden" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
}

// ------------------------------------------------------------------ verification in the browser
class Failed extends Error {
  constructor(key, vars) { super(key); this.key = key; this.vars = vars || {}; }
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }
function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) { out.set(p, i); i += p.length; }
  return out;
}
function hex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); }
function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
function b64(text) {
  const bin = atob(text);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}
const nodeHash = (l, r) => sha256(concat(Uint8Array.of(1), l, r));

// the files of a zip (stored or deflated), by name
async function unzip(buffer) {
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 65557); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Failed("auditv.why.not_zip");
  const count = view.getUint16(eocd + 10, true);
  let p = view.getUint32(eocd + 16, true);
  const files = new Map();
  for (let n = 0; n < count; n++) {
    if (p + 46 > bytes.length || view.getUint32(p, true) !== 0x02014b50) throw new Failed("auditv.why.not_zip");
    const method = view.getUint16(p + 10, true);
    const size = view.getUint32(p + 20, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLen));
    p += 46 + nameLen + extraLen + commentLen;
    if (view.getUint32(local, true) !== 0x04034b50) throw new Failed("auditv.why.not_zip");
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const data = bytes.subarray(start, start + size);
    if (method === 0) files.set(name, data);
    else if (method === 8) {
      const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream("deflate-raw"));
      files.set(name, new Uint8Array(await new Response(stream).arrayBuffer()));
    } else throw new Failed("auditv.why.not_zip");
  }
  return files;
}

// a C2SP verifier key: {name, keyId, raw public key}
async function parseVkey(text) {
  // <name>+<hex id>+<base64 key>: the base64 may itself hold "+"
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (!m) throw new Failed("auditv.why.key");
  const [, name, hexId, b] = m;
  let raw;
  try { raw = b64(b); } catch (_) { throw new Failed("auditv.why.key"); }
  if (raw.length !== 33 || raw[0] !== 1) throw new Failed("auditv.why.key");
  const id = (await sha256(concat(enc.encode(name + "\n"), raw))).subarray(0, 4);
  if (hex(id) !== hexId) throw new Failed("auditv.why.key");
  return { name, keyId: id, vkey: text.trim(), key: await crypto.subtle.importKey("raw", raw.subarray(1),
    { name: "Ed25519" }, false, ["verify"]).catch(() => { throw new Failed("auditv.why.no_ed25519"); }) };
}

// a signed checkpoint note checked against the platform's key: {origin, size, root}
async function openCheckpoint(note, key, name) {
  const cut = note.lastIndexOf("\n\n");
  if (!note.endsWith("\n") || cut < 0) throw new Failed("auditv.why.note", { name });
  const text = note.slice(0, cut + 1);
  let good = 0;
  for (const line of note.slice(cut + 2, -1).split("\n")) {
    if (!line.startsWith("\u2014 ")) throw new Failed("auditv.why.note", { name });
    const sp = line.lastIndexOf(" ");
    const signer = line.slice(2, sp);
    let raw;
    try { raw = b64(line.slice(sp + 1)); } catch (_) { throw new Failed("auditv.why.note", { name }); }
    if (signer !== key.name || raw.length < 5 || !equal(raw.subarray(0, 4), key.keyId)) continue;
    const ok = await crypto.subtle.verify({ name: "Ed25519" }, key.key, raw.subarray(4), enc.encode(text));
    if (!ok) throw new Failed("auditv.why.bad_signature", { name });
    good += 1;
  }
  if (!good) throw new Failed("auditv.why.unknown_key", { name });
  const lines = text.split("\n");
  if (lines.length < 4 || !/^(0|[1-9]\d*)$/.test(lines[1])) throw new Failed("auditv.why.note", { name });
  let root;
  try { root = b64(lines[2]); } catch (_) { throw new Failed("auditv.why.note", { name }); }
  if (root.length !== 32) throw new Failed("auditv.why.note", { name });
  return { origin: lines[0], size: Number(lines[1]), root };
}

// RFC 9162 perfect-subtree frontier: append leaves, fold to the root
class Frontier {
  constructor(size = 0, hashes = []) { this.size = size; this.hashes = [...hashes]; }
  async add(leaf) {
    let hsh = leaf;
    let i = this.size;
    while (i & 1) { hsh = await nodeHash(this.hashes.pop(), hsh); i >>= 1; }
    this.hashes.push(hsh);
    this.size += 1;
  }
  async root() {
    if (!this.hashes.length) return sha256(new Uint8Array(0));
    let hsh = this.hashes[this.hashes.length - 1];
    for (let i = this.hashes.length - 2; i >= 0; i--) hsh = await nodeHash(this.hashes[i], hsh);
    return hsh;
  }
}

// RFC 9162 2.1.3.2
async function verifyInclusion(index, size, leaf, proof, root) {
  if (!(index >= 0 && index < size)) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn & 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn && !(fn & 1)) { fn >>= 1; sn >>= 1; }
    } else r = await nodeHash(r, p);
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 && equal(r, root);
}

// The whole check; returns {checks: [[key, vars]...], warnings}, throws Failed with the first reason.
export async function verifyBundle(buffer, vkeyText) {
  if (!globalThis.crypto || !crypto.subtle) throw new Failed("auditv.why.insecure");
  const key = await parseVkey(vkeyText);
  const files = await unzip(buffer);
  const read = (name) => {
    const f = files.get(name);
    if (!f) throw new Failed("auditv.why.missing", { name });
    return f;
  };
  const checks = [];
  const warnings = [];
  const text = (bytes, name) => {
    try { return dec.decode(bytes); } catch (_) { throw new Failed("auditv.why.note", { name }); }
  };
  const head = await openCheckpoint(text(read("checkpoint"), "checkpoint"), key, "checkpoint");
  checks.push(["auditv.chk.signature", { key: key.vkey.split("+").slice(0, 2).join("+") }]);
  if (files.has("verifier.key")) {
    const own = new TextDecoder().decode(files.get("verifier.key")).trim();
    if (own === key.vkey) checks.push(["auditv.chk.bundle_key", {}]); else warnings.push(["auditv.warn.bundle_key", {}]);
  }
  const witnesses = [];
  for (const name of [...files.keys()].filter((n) => n.startsWith("checkpoints/") && files.get(n).length).sort()) {
    const cp = await openCheckpoint(text(files.get(name), name), key, name);
    if (cp.origin !== head.origin) throw new Failed("auditv.why.origin", { origin: cp.origin });
    witnesses.push(cp);
  }

  // where the entries start: after a prefix the bundle proves with consistency.json
  let first = 0;
  let frontier = new Frontier();
  let prev = "0".repeat(64);
  if (files.has("consistency.json")) {
    let doc;
    try { doc = JSON.parse(new TextDecoder().decode(files.get("consistency.json"))); } catch (_) {
      throw new Failed("auditv.why.prefix");
    }
    first = Number(doc.old_size) || 0;
    if (first) {
      try {
        const prefix = doc.prefix.map(b64);
        const oldRoot = b64(doc.old_root);
        const prevLeaf = b64(doc.prev_leaf);
        const path = doc.prev_inclusion.map(b64);
        if (prefix.length !== first.toString(2).split("1").length - 1) throw new Error("prefix");
        frontier = new Frontier(first, prefix);
        if (!equal(await frontier.root(), oldRoot)) throw new Error("old root");
        if (!await verifyInclusion(first - 1, first, prevLeaf, path, oldRoot)) throw new Error("inclusion");
        prev = hex(prevLeaf);
      } catch (_) {
        throw new Failed("auditv.why.prefix");
      }
      checks.push(["auditv.chk.prefix", { last: first - 1 }]);
    }
  }

  // every entry: canonical-looking JSON with the expected seq, chained by prev, hashed into the tree
  const want = new Set(witnesses.map((w) => w.size));
  const roots = new Map();
  const bytes = read("entries.jsonl");
  const lines = [];
  let from = 0;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 10) { lines.push(bytes.subarray(from, i)); from = i + 1; }
  if (from !== bytes.length) lines.push(bytes.subarray(from));
  let expected = first;
  const leafOf = async (line) => sha256(concat(Uint8Array.of(0), line));
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n];
    let value;
    try { value = JSON.parse(dec.decode(line)); } catch (_) {
      throw new Failed("auditv.why.malformed", { seq: expected, line: n + 1 });
    }
    if (!value || typeof value !== "object" || typeof value.prev !== "string") {
      throw new Failed("auditv.why.malformed", { seq: expected, line: n + 1 });
    }
    if (value.seq !== expected) throw new Failed("auditv.why.seq", { seq: expected, line: n + 1 });
    const leaf = await leafOf(line);
    if (value.prev !== prev) {
      // the entry before was edited when this one still names its original hash and the next one names this one
      const next = lines[n + 1];
      if (n > 0 && next) {
        let nextPrev = null;
        try { nextPrev = JSON.parse(dec.decode(next)).prev; } catch (_) { /* */ }
        if (nextPrev === hex(leaf)) throw new Failed("auditv.why.altered", { seq: expected - 1 });
      }
      throw new Failed(n > 0 ? "auditv.why.altered" : "auditv.why.chain", { seq: n > 0 ? expected - 1 : expected });
    }
    await frontier.add(leaf);
    expected += 1;
    if (want.has(expected)) roots.set(expected, await frontier.root());
    prev = hex(leaf);
  }
  if (lines.length === 0 || from !== bytes.length) {
    throw new Failed("auditv.why.malformed", { seq: expected, line: lines.length + 1 });
  }
  if (head.size !== expected) throw new Failed("auditv.why.size", { size: head.size, last: expected - 1 });
  const beyond = witnesses.find((w) => w.size > expected);
  if (beyond) throw new Failed("auditv.why.size", { size: beyond.size, last: expected - 1 });
  const root = await frontier.root();
  const rewritten = witnesses.filter((w) => roots.has(w.size) && !equal(roots.get(w.size), w.root))
    .sort((a, b) => a.size - b.size);
  if (rewritten.length) throw new Failed("auditv.why.witness", { size: rewritten[0].size });
  if (!equal(root, head.root)) throw new Failed("auditv.why.root", { seq: expected - 1 });
  checks.push(["auditv.chk.entries", { n: expected - first, from: first, to: expected - 1 }]);
  checks.push(["auditv.chk.root", { size: head.size }]);
  const matched = witnesses.filter((w) => roots.has(w.size)).length;
  if (matched) checks.push(["auditv.chk.witness", { n: matched }]);
  return { checks, warnings, origin: head.origin };
}

// ------------------------------------------------------------------ the view
export async function auditView(root, route) {
  addStyle();
  const asked = route && route.params instanceof URLSearchParams ? route.params : new URLSearchParams();
  const actions = await loadActions();
  const names = makeNames();
  const limit = 50;
  let offset = 0;
  let current = {};
  let alive = true;

  const input = (id, attrs = {}) => h("input", { id, ...attrs });
  const f = {
    since: input("audit-since", { type: "datetime-local" }),
    until: input("audit-until", { type: "datetime-local" }),
    action: input("audit-action", { list: "audit-actions", autocomplete: "off", placeholder: t("auditv.action_hint"),
                                    maxlength: 64 }),
    actor: input("audit-actor", { placeholder: t("auditv.actor_hint"), maxlength: 128 }),
    target: input("audit-target", { placeholder: t("auditv.target_hint"), maxlength: 128 }),
    targetType: h("select", { id: "audit-target-type" }, h("option", { value: "" }, t("common.all")),
      TARGET_TYPES.map((ty) => h("option", { value: ty }, t("auditv.type." + ty)))),
    order: h("select", { id: "audit-order" }, h("option", { value: "newest" }, t("auditv.newest")),
      h("option", { value: "oldest" }, t("auditv.oldest"))),
  };
  for (const k of ["action", "actor", "target"]) if (asked.get(k)) f[k].value = asked.get(k).slice(0, 128);
  if (TARGET_TYPES.includes(asked.get("target_type"))) f.targetType.value = asked.get("target_type");
  // the datalist offers the groups and every action in words (the box takes words or a code)
  const datalist = h("datalist", { id: "audit-actions" },
    GROUPS.map((g) => h("option", { value: g + ".*" }, groupName(g))),
    [...actions.values()].map((a) => h("option", { value: actionWords(a.action) }, a.action)));
  const formError = h("div", { id: "audit-filter-error", class: "msg error hidden", role: "alert" });
  const form = h("form", { class: "auditv-filters", id: "audit-filter", role: "search" }, datalist,
    field(t("auditv.since"), f.since), field(t("auditv.until"), f.until), field(t("auditv.action"), f.action),
    field(t("auditv.actor"), f.actor), field(t("auditv.target_type"), f.targetType),
    field(t("auditv.target"), f.target), field(t("auditv.order"), f.order),
    h("div", { class: "auditv-buttons" },
      h("button", { type: "submit", class: "primary" }, t("auditv.filter")),
      h("button", { type: "button", id: "audit-reset", onclick: () => { form.reset(); offset = 0; load(); } },
        t("auditv.reset"))));
  form.addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });

  const table = h("table", { class: "table compact auditv-table", id: "audit-table" });
  const pager = h("div", { class: "auditv-pager", id: "audit-pager" });
  const failure = h("div", { id: "audit-error" });

  // export and verification
  const exportBtn = h("button", { type: "button", class: "primary", id: "audit-export", onclick: doExport },
    t("auditv.export"));
  const fileInput = h("input", { type: "file", id: "audit-verify-file", accept: ".zip,application/zip" });
  const verdict = h("div", { id: "audit-verify-result", "aria-live": "polite" });
  fileInput.addEventListener("change", () => { if (fileInput.files.length) verify(fileInput.files[0]); });
  const tools = h("div", { class: "auditv-tools" },
    can("audit.export") ? h("section", { class: "card", id: "audit-export-card" },
      h("h2", null, t("auditv.export")), h("p", { class: "muted" }, t("auditv.export_note")), exportBtn) : null,
    h("section", { class: "card", id: "audit-verify-card" },
      h("h2", null, t("auditv.verify")), h("p", { class: "muted" }, t("auditv.verify_note")),
      field(t("auditv.verify_file"), fileInput), verdict));

  const page = h("div", { class: "auditv" },
    h("div", { class: "page-head" }, h("h1", null, t("auditv.title"))),
    failure, tools,
    h("section", { class: "card" }, form, formError, h("div", { class: "auditv-wrap" }, table), pager));
  root.append(page);

  function filterParams() {
    const action = actionFilter(f.action.value, actions);
    if (action === null) throw new Error(t("auditv.unknown_action", { text: f.action.value.trim() }));
    return {
      action, actor: f.actor.value.trim(), target: f.target.value.trim(), target_type: f.targetType.value,
      since: fromLocalInput(f.since.value), until: fromLocalInput(f.until.value),
    };
  }

  const HEADS = [["seq", "auditv.seq", true], ["time", "auditv.time"], ["actor", "auditv.actor"],
    ["action", "auditv.action"], ["target", "auditv.target"], ["result", "auditv.result"], ["ip", "auditv.ip", true]];

  function row(e) {
    const tgt = names.target(e);
    const [res, kind] = resultOf(e);
    const toggle = h("button", { type: "button", class: "auditv-toggle", "aria-expanded": "false",
                                 "aria-label": t("auditv.expand"), title: t("auditv.expand") }, "▸");
    const tr = h("tr", { dataset: { action: e.action, seq: String(e.seq) } },
      h("td", { class: "auditv-seq" }, toggle, h("span", { class: "auditv-lo mono" }, " " + e.seq)),
      h("td", { class: "auditv-time" }, fmtTime(e.time)),
      h("td", { class: "auditv-actor" }, actorWords(e.actor)),
      h("td", { class: "auditv-action" }, actionWords(e.action), h("span", { class: "auditv-sub mono", dataset: { code: "action" } }, e.action)),
      h("td", { class: "auditv-target" }, tgt.name || tgt.type,
        h("span", { class: "auditv-sub" }, tgt.name ? `${tgt.type} ${tgt.id}` : tgt.id)),
      h("td", { class: "auditv-result" }, badge(t("auditv.result." + res), kind)),
      h("td", { class: "auditv-ip auditv-lo mono" }, e.client_ip || "—"));
    let detailRow = null;
    toggle.addEventListener("click", () => {
      const open = !detailRow;
      if (open) {
        const entries = Object.entries(e.detail || {});
        detailRow = h("tr", { class: "auditv-detail-row", dataset: { action: e.action, detailOf: String(e.seq) } },
          h("td", { colspan: String(HEADS.length) },
            entries.length ? kvList(entries) : h("span", { class: "muted" }, t("auditv.no_detail"))));
        tr.after(detailRow);
      } else {
        detailRow.remove();
        detailRow = null;
      }
      toggle.textContent = open ? "▾" : "▸";
      toggle.setAttribute("aria-expanded", String(open));
      const label = open ? t("auditv.collapse") : t("auditv.expand");
      toggle.setAttribute("aria-label", label);
      toggle.title = label;
    });
    return tr;
  }

  async function load() {
    formError.classList.add("hidden");
    try {
      current = filterParams();
    } catch (err) {
      formError.textContent = err.message;
      formError.classList.remove("hidden");
      return;
    }
    let r;
    try {
      r = await get("/api/audit/entries", { ...current, order: f.order.value, offset, limit });
    } catch (err) {
      clear(failure).append(message(`${t("common.error")}: ${err.message}`, "error"));
      return;
    }
    clear(failure);
    await names.load(r.items);
    if (!alive) return;
    clear(table).append(
      h("thead", null, h("tr", null, HEADS.map(([k, label, lo]) => h("th", { scope: "col",
        class: lo && k !== "seq" ? "auditv-lo" : null, dataset: { col: k } }, t(label))))),
      h("tbody", null, r.items.length ? r.items.map(row)
        : h("tr", { class: "auditv-empty" }, h("td", { colspan: String(HEADS.length), class: "muted" }, t("auditv.empty")))));
    const to = Math.min(r.total, offset + r.items.length);
    clear(pager).append(
      h("span", { class: "muted", id: "audit-count" },
        t("common.page", { from: r.total ? offset + 1 : 0, to, total: r.total })),
      h("button", { type: "button", id: "audit-prev", disabled: offset === 0,
                    onclick: () => { offset = Math.max(0, offset - limit); load(); } }, t("common.prev")),
      h("button", { type: "button", id: "audit-next", disabled: to >= r.total,
                    onclick: () => { offset += limit; load(); } }, t("common.next")));
  }

  // the bundle of the contiguous range that holds every entry the filter selects (no filter: the whole log)
  async function doExport() {
    exportBtn.disabled = true;
    const label = exportBtn.textContent;
    exportBtn.textContent = t("auditv.exporting");
    try {
      const filter = filterParams();
      const params = {};
      if (Object.values(filter).some((v) => v)) {
        const [oldest, newest] = await Promise.all([
          get("/api/audit/entries", { ...filter, order: "oldest", limit: 1 }),
          get("/api/audit/entries", { ...filter, order: "newest", limit: 1 })]);
        if (!oldest.items.length) { toast(t("auditv.export_none"), "error"); return; }
        params.from = oldest.items[0].seq;
        params.to = newest.items[0].seq;
      }
      await saveExport(params);
      toast(t("auditv.exported", { from: params.from ?? 0, to: params.to ?? "…" }), "ok");
      await load(); // the export is itself on the log
    } catch (err) {
      toast(t("auditv.export_failed", { error: err.message || String(err) }), "error");
    } finally {
      exportBtn.disabled = false;
      exportBtn.textContent = label;
    }
  }

  async function verify(file) {
    clear(verdict).append(h("p", { class: "muted" }, t("auditv.verifying")));
    let outcome;
    try {
      const vkey = await get("/api/audit/verifier-key");
      if (typeof vkey !== "string" || !vkey.trim()) throw new Failed("auditv.why.key");
      outcome = { ok: true, ...(await verifyBundle(await file.arrayBuffer(), vkey)) };
    } catch (err) {
      outcome = err instanceof Failed ? { ok: false, key: err.key, vars: err.vars }
        : { ok: false, key: "auditv.why.error", vars: { error: err.message || String(err) } };
    }
    if (!alive) return;
    const box = h("div", { class: "auditv-verdict " + (outcome.ok ? "pass" : "fail"), id: "audit-verdict",
                           dataset: { result: outcome.ok ? "pass" : "fail" } },
      h("strong", { id: "audit-verdict-title" }, t(outcome.ok ? "auditv.pass" : "auditv.fail")));
    if (outcome.ok) {
      box.append(h("div", null, t("auditv.checked")),
        h("ul", { id: "audit-verify-checks" }, outcome.checks.map(([k, v]) => h("li", null, t(k, v)))));
      for (const [k, v] of outcome.warnings) box.append(h("p", null, t(k, v)));
    } else {
      box.append(h("div", { id: "audit-verify-reason" }, t("auditv.reason"), " ", t(outcome.key, outcome.vars)));
    }
    clear(verdict).append(box);
  }

  await load();
  return () => { alive = false; };
}
