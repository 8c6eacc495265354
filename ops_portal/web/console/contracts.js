// 服务合同 (issue 18): the contracts list; the create / edit dialog with every field of ContractIn (name, customer,
// the service scope as a check-box list of the organisation tree plus individual channels, storage days (at least
// 7, refused here before sending), repair time limit, quality terms, the online-rate threshold and rule, validity in
// Beijing time); delete after a confirmation; and per contract its SLA report page (#/contracts/{id}): the
// /sla answer as a summary in words and the overdue tickets as a table, for a chosen period, exported as CSV
// (sla.csv fetched with the token and saved through a blob URL).
// The page's own CSS is a constructed style sheet (adoptedStyleSheets): the console's CSP allows no inline <style>.
import { ApiError, del, get, patch, post } from "./api.js";
import { orderedOrgNodes } from "./data.js";
import { badge, clear, field, fmtPercent, fmtTime, fromLocalInput, h, message, modal, pageStyle, toast, toLocalInput } from "./dom.js";
import { download } from "./devices.js";
import { extend, serverText, t } from "./i18n.js";

extend({
  "ctr.title": "服务合同",
  "ctr.add": "新建合同",
  "ctr.col.name": "合同名称",
  "ctr.col.customer": "客户",
  "ctr.col.scope": "服务范围",
  "ctr.col.storage": "录像存储",
  "ctr.col.repair": "修复时限",
  "ctr.col.threshold": "在线率考核",
  "ctr.col.valid": "有效期",
  "ctr.empty": "还没有合同",
  "ctr.days": "{n} 天",
  "ctr.hours": "{n} 小时",
  "ctr.scope_words": "{orgs} 个组织节点，{channels} 个点位",
  "ctr.scope_none": "未指定",
  "ctr.valid_range": "{from} 起",
  "ctr.valid_range_to": "{from} 至 {to}",
  "ctr.sla": "SLA 报表",
  "ctr.new_title": "新建合同",
  "ctr.edit_title": "编辑合同：{name}",
  "ctr.f.name": "合同名称",
  "ctr.f.customer": "客户",
  "ctr.f.orgs": "服务范围：组织节点（含下级）",
  "ctr.f.orgs_none": "还没有组织节点",
  "ctr.f.channels": "服务范围：单个点位（每行一个“设备编码/通道编码”）",
  "ctr.f.storage_days": "录像存储天数（至少 7 天）",
  "ctr.f.repair_limit_hours": "修复时限（小时）",
  "ctr.f.min_width": "最低分辨率：宽（像素）",
  "ctr.f.min_height": "最低分辨率：高（像素）",
  "ctr.f.max_freeze_seconds": "最长画面冻结（秒）",
  "ctr.f.max_black_seconds": "最长黑屏（秒）",
  "ctr.f.threshold": "在线率考核值（%）",
  "ctr.f.rate_rule": "在线率计算方式",
  "ctr.f.sample_minutes": "抽样间隔（分钟）",
  "ctr.f.valid_from": "生效时间（北京时间）",
  "ctr.f.valid_until": "失效时间（北京时间，可留空）",
  "ctr.quality": "质量条款",
  "ctr.rule.time_weighted": "按时长加权",
  "ctr.rule.sampled": "定时抽样",
  "ctr.rule_hint": "按时长加权：在线时长 ÷（在线 + 离线时长）；定时抽样：每隔 N 分钟统计在线点位占比后取平均。",
  "ctr.err.storage_days": "录像存储天数不得少于 7 天",
  "ctr.err.name": "请填写合同名称",
  "ctr.err.repair": "修复时限必须大于 0 小时",
  "ctr.err.threshold": "在线率考核值须在 0 到 100 之间（不含 0）",
  "ctr.err.sample": "定时抽样须填写抽样间隔（至少 1 分钟）",
  "ctr.err.valid_from": "请填写生效时间",
  "ctr.err.channel": "点位格式不正确：{entry}（应为 20 位设备编码/20 位通道编码）",
  "ctr.err.number": "{field} 须为非负数",
  "ctr.code.storage_days_too_short": "录像存储天数不得少于 7 天",
  "ctr.code.repair_limit_invalid": "修复时限必须大于 0 小时",
  "ctr.code.online_rate_threshold_invalid": "在线率考核值无效",
  "ctr.code.sample_minutes_required": "定时抽样须填写抽样间隔",
  "ctr.code.validity_invalid": "失效时间须晚于生效时间",
  "ctr.code.quality_terms_invalid": "质量条款须为非负数",
  "ctr.code.contract_name_taken": "合同名称已存在",
  "ctr.created": "已新建合同“{name}”",
  "ctr.saved": "合同“{name}”已保存",
  "ctr.delete_title": "删除合同：{name}",
  "ctr.delete_text": "删除合同“{name}”？其工单保留（不再关联合同），已有工单的修复期限不变。",
  "ctr.deleted": "合同“{name}”已删除",
  "ctr.back": "返回合同列表",
  "ctr.sla_title": "SLA 报表：{name}",
  "ctr.sla_from": "开始（北京时间）",
  "ctr.sla_to": "结束（北京时间，不含）",
  "ctr.sla_show": "查询",
  "ctr.sla_export": "导出 CSV",
  "ctr.sla_summary": "{from} 至 {to} 期间共报修 {tickets} 张工单：已修复 {repaired} 张，其中 {within} 张在 {limit} 小时时限内修复；超时 {missed} 张（超时修复或超期未修复）；{pending} 张尚未修复且未到期，暂不评判。",
  "ctr.sla_share": "时限内修复率 {share}（= 时限内修复 ÷（时限内修复 + 超时））。",
  "ctr.sla_share_none": "时限内修复率：尚无可评判的工单。",
  "ctr.sla_times": "平均修复时长 {mean}，第 95 百分位修复时长 {p95}。",
  "ctr.sla_times_none": "尚无已修复的工单，没有修复时长。",
  "ctr.sla_generated": "生成于 {time}（北京时间）。",
  "ctr.m.tickets": "报修工单",
  "ctr.m.repaired": "已修复",
  "ctr.m.within": "时限内修复",
  "ctr.m.missed": "超时",
  "ctr.m.pending": "未到期",
  "ctr.m.share": "时限内修复率",
  "ctr.m.mean": "平均修复时长",
  "ctr.m.p95": "修复时长第 95 百分位",
  "ctr.overdue": "超时工单",
  "ctr.overdue_none": "没有超时工单",
  "ctr.o.ticket": "工单",
  "ctr.o.channel": "点位",
  "ctr.o.state": "状态",
  "ctr.o.reported": "报修时间",
  "ctr.o.deadline": "修复期限",
  "ctr.o.feedback": "修复反馈时间",
  "ctr.o.overdue": "超时",
  "ctr.state.reported": "已报修",
  "ctr.state.acknowledged": "已受理",
  "ctr.state.repairing": "维修中",
  "ctr.state.repaired": "已修复待确认",
  "ctr.state.confirmed": "已确认",
  "ctr.state.reopened": "已重开",
  "ctr.dur.dhm": "{d} 天 {h} 小时 {m} 分",
  "ctr.dur.hm": "{h} 小时 {m} 分",
  "ctr.dur.m": "{m} 分",
  "ctr.download_failed": "下载失败：{error}",
  "ctr.bad_period": "请填写完整的时段，且开始早于结束",
}, {
  "ctr.title": "Service contracts",
  "ctr.add": "New contract",
  "ctr.col.name": "Contract",
  "ctr.col.customer": "Customer",
  "ctr.col.scope": "Service scope",
  "ctr.col.storage": "Video storage",
  "ctr.col.repair": "Repair limit",
  "ctr.col.threshold": "Online-rate threshold",
  "ctr.col.valid": "Validity",
  "ctr.empty": "No contracts yet",
  "ctr.days": "{n} days",
  "ctr.hours": "{n} hours",
  "ctr.scope_words": "{orgs} organisation nodes, {channels} channels",
  "ctr.scope_none": "Not set",
  "ctr.valid_range": "from {from}",
  "ctr.valid_range_to": "{from} to {to}",
  "ctr.sla": "SLA report",
  "ctr.new_title": "New contract",
  "ctr.edit_title": "Edit contract: {name}",
  "ctr.f.name": "Contract name",
  "ctr.f.customer": "Customer",
  "ctr.f.orgs": "Service scope: organisation nodes (with descendants)",
  "ctr.f.orgs_none": "No organisation nodes yet",
  "ctr.f.channels": "Service scope: single channels (one \"device ID/channel ID\" a line)",
  "ctr.f.storage_days": "Video storage days (at least 7)",
  "ctr.f.repair_limit_hours": "Repair time limit (hours)",
  "ctr.f.min_width": "Minimum resolution: width (px)",
  "ctr.f.min_height": "Minimum resolution: height (px)",
  "ctr.f.max_freeze_seconds": "Longest frozen picture (s)",
  "ctr.f.max_black_seconds": "Longest black picture (s)",
  "ctr.f.threshold": "Online-rate threshold (%)",
  "ctr.f.rate_rule": "Online-rate rule",
  "ctr.f.sample_minutes": "Sampling period (minutes)",
  "ctr.f.valid_from": "Valid from (Beijing time)",
  "ctr.f.valid_until": "Valid until (Beijing time, optional)",
  "ctr.quality": "Quality terms",
  "ctr.rule.time_weighted": "Time-weighted",
  "ctr.rule.sampled": "Sampled",
  "ctr.rule_hint": "Time-weighted: online time ÷ (online + offline time); sampled: the share of channels online every N minutes, averaged.",
  "ctr.err.storage_days": "Video storage must be at least 7 days",
  "ctr.err.name": "Enter the contract name",
  "ctr.err.repair": "The repair time limit must be more than 0 hours",
  "ctr.err.threshold": "The online-rate threshold must be above 0 and at most 100",
  "ctr.err.sample": "The sampled rule needs a sampling period (at least 1 minute)",
  "ctr.err.valid_from": "Enter the start of validity",
  "ctr.err.channel": "Invalid channel: {entry} (expected 20-digit device ID/20-digit channel ID)",
  "ctr.err.number": "{field} must be a non-negative number",
  "ctr.code.storage_days_too_short": "Video storage must be at least 7 days",
  "ctr.code.repair_limit_invalid": "The repair time limit must be positive",
  "ctr.code.online_rate_threshold_invalid": "Invalid online-rate threshold",
  "ctr.code.sample_minutes_required": "The sampled rule needs a sampling period",
  "ctr.code.validity_invalid": "Valid until must be after valid from",
  "ctr.code.quality_terms_invalid": "Quality terms must be non-negative numbers",
  "ctr.code.contract_name_taken": "A contract with this name exists",
  "ctr.created": "Contract \"{name}\" created",
  "ctr.saved": "Contract \"{name}\" saved",
  "ctr.delete_title": "Delete contract: {name}",
  "ctr.delete_text": "Delete contract \"{name}\"? Its tickets stay (without a contract); their deadlines do not change.",
  "ctr.deleted": "Contract \"{name}\" deleted",
  "ctr.back": "Back to contracts",
  "ctr.sla_title": "SLA report: {name}",
  "ctr.sla_from": "From (Beijing time)",
  "ctr.sla_to": "To (Beijing time, exclusive)",
  "ctr.sla_show": "Show",
  "ctr.sla_export": "Export CSV",
  "ctr.sla_summary": "From {from} to {to}, {tickets} tickets were reported: {repaired} repaired, {within} of them within the {limit}-hour limit; {missed} missed (repaired late or still open past the deadline); {pending} open and not yet due, not judged yet.",
  "ctr.sla_share": "Share repaired within the limit: {share} (= within ÷ (within + missed)).",
  "ctr.sla_share_none": "Share repaired within the limit: no ticket to judge yet.",
  "ctr.sla_times": "Mean repair time {mean}, 95th percentile {p95}.",
  "ctr.sla_times_none": "No ticket repaired yet, so no repair times.",
  "ctr.sla_generated": "Generated {time} (Beijing time).",
  "ctr.m.tickets": "Tickets",
  "ctr.m.repaired": "Repaired",
  "ctr.m.within": "Within the limit",
  "ctr.m.missed": "Missed",
  "ctr.m.pending": "Not yet due",
  "ctr.m.share": "Share within the limit",
  "ctr.m.mean": "Mean repair time",
  "ctr.m.p95": "95th percentile repair time",
  "ctr.overdue": "Overdue tickets",
  "ctr.overdue_none": "No overdue tickets",
  "ctr.o.ticket": "Ticket",
  "ctr.o.channel": "Channel",
  "ctr.o.state": "State",
  "ctr.o.reported": "Reported",
  "ctr.o.deadline": "Deadline",
  "ctr.o.feedback": "Repair feedback",
  "ctr.o.overdue": "Late by",
  "ctr.state.reported": "Reported",
  "ctr.state.acknowledged": "Acknowledged",
  "ctr.state.repairing": "Repairing",
  "ctr.state.repaired": "Repaired, to confirm",
  "ctr.state.confirmed": "Confirmed",
  "ctr.state.reopened": "Reopened",
  "ctr.dur.dhm": "{d} d {h} h {m} min",
  "ctr.dur.hm": "{h} h {m} min",
  "ctr.dur.m": "{m} min",
  "ctr.download_failed": "Download failed: {error}",
  "ctr.bad_period": "Fill in the whole period, the start before the end",
});

const BASE = "/api/contracts";
const MIN_STORAGE_DAYS = 7;
const QUALITY = ["min_width", "min_height", "max_freeze_seconds", "max_black_seconds"];
const RULES = ["time_weighted", "sampled"];
const CHANNEL_RE = /^\d{20}(\/\d{20})?$/;

const CSS = `
.ctr .ctr-wrap { overflow-x: auto; max-width: 100%; }
.ctr .ctr-table td { white-space: nowrap; }
.ctr .ctr-table td.ctr-wrapcell { white-space: normal; min-width: 8em; }
.ctr .ctr-actions { display: flex; gap: 4px; flex-wrap: wrap; }
.ctr section.card { margin-bottom: 14px; min-width: 0; }
.ctr .ctr-period { display: flex; flex-wrap: wrap; gap: 10px 14px; align-items: flex-end; }
.ctr .ctr-period label { display: flex; flex-direction: column; gap: 4px; }
.ctr .ctr-metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; margin: 10px 0; }
.ctr .ctr-metric { border: 1px solid var(--line, #dde); border-radius: 6px; padding: 8px 10px; }
.ctr .ctr-metric b { display: block; font-size: 20px; }
.ctr .ctr-metric span { font-size: 12px; color: var(--muted, #667); }
.ctr-dialog .ctr-grid { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 14px; }
.ctr-dialog .ctr-grid .field input, .ctr-dialog .ctr-grid .field select, .ctr-dialog textarea { width: 100%; }
.ctr-dialog .ctr-wide { grid-column: 1 / -1; }
.ctr-dialog .ctr-orgs { max-height: 180px; overflow: auto; border: 1px solid var(--line, #dde); border-radius: 6px;
  padding: 6px 8px; }
.ctr-dialog .ctr-orgs label { display: flex; gap: 6px; align-items: center; padding: 2px 0; }
.ctr-dialog fieldset { border: 1px solid var(--line, #dde); border-radius: 6px; padding: 6px 10px; margin: 0; }
.ctr-dialog .ctr-q { display: grid; grid-template-columns: 1fr 1fr; gap: 6px 12px; }
@media (max-width: 700px) {
  .ctr .col-lo { display: none; }
  .ctr-dialog .ctr-grid, .ctr-dialog .ctr-q { grid-template-columns: 1fr; }
}`;

const addStyle = pageStyle(CSS);

// a percentage as people write it: 90%, 99.5% (not 90.0%)
function pct(x) { return fmtPercent(x).replace(/\.0%$/, "%"); }

function word(key, fallback) {
  const text = t(key);
  return text === key ? fallback : text;
}

function errorWords(err) {
  if (err instanceof ApiError && err.code) {
    const known = word("ctr.code." + err.code, null);
    if (known) return known;
  }
  return err.message || String(err);
}

function fmtDuration(seconds) {
  if (seconds == null) return "—";
  const mins = Math.round(seconds / 60);
  const d = Math.floor(mins / 1440), hh = Math.floor((mins % 1440) / 60), m = mins % 60;
  if (d) return t("ctr.dur.dhm", { d, h: hh, m });
  return hh ? t("ctr.dur.hm", { h: hh, m }) : t("ctr.dur.m", { m });
}

// the organisation tree in display order with depths
async function loadOrg() {
  let data = null;
  try { data = await get("/api/org/tree"); } catch (_) { return { byId: new Map(), ordered: [] }; }
  const nodes = data.nodes || [];
  return { byId: new Map(nodes.map((n) => [n.id, n])), ordered: orderedOrgNodes(nodes) };
}

// ------------------------------------------------------------------ the view
export async function contractsView(root, route) {
  addStyle();
  root.classList.add("ctr");
  const args = (route && route.args) || [];
  if (args.length && /^\d+$/.test(args[0])) return slaPage(root, Number(args[0]), route.params);
  return listPage(root);
}

async function listPage(root) {
  const org = await loadOrg();
  const table = h("table", { class: "table ctr-table", id: "ctr-table" });
  root.append(
    h("div", { class: "page-head" }, h("h1", null, t("ctr.title")),
      h("div", { class: "tools" },
        h("button", { type: "button", class: "primary", id: "ctr-add", onclick: () => editForm(null) }, t("ctr.add")),
        h("button", { type: "button", id: "ctr-refresh", onclick: () => reload() }, t("common.refresh")))),
    h("section", { class: "card" }, h("div", { class: "ctr-wrap" }, table)));

  async function reload() {
    const data = await get(BASE);
    draw(data.items || []);
  }

  function draw(items) {
    const cols = [["ctr.col.name"], ["ctr.col.customer", true], ["ctr.col.scope", true], ["ctr.col.storage"],
                  ["ctr.col.repair"], ["ctr.col.threshold"], ["ctr.col.valid", true], ["common.actions"]];
    const rows = items.map((c) => {
      const valid = c.valid_until ? t("ctr.valid_range_to", { from: fmtTime(c.valid_from), to: fmtTime(c.valid_until) })
        : t("ctr.valid_range", { from: fmtTime(c.valid_from) });
      const orgs = (c.org_node_ids || []).map((id) => (org.byId.get(id) || { name: "#" + id }).name);
      const scope = orgs.length || (c.channel_ids || []).length
        ? [orgs.join("、"), (c.channel_ids || []).length ? t("ctr.scope_words", { orgs: orgs.length,
          channels: c.channel_ids.length }) : null].filter(Boolean).join("；")
        : t("ctr.scope_none");
      return h("tr", { dataset: { contract: c.id } },
        h("td", { class: "ctr-wrapcell ctr-name" }, h("a", { href: `#/contracts/${c.id}` }, c.name)),
        h("td", { class: "col-lo ctr-wrapcell" }, c.customer || "—"),
        h("td", { class: "col-lo ctr-wrapcell ctr-scope" }, scope),
        h("td", { class: "ctr-storage" }, t("ctr.days", { n: c.storage_days })),
        h("td", null, t("ctr.hours", { n: c.repair_limit_hours })),
        h("td", { class: "ctr-threshold", title: t("ctr.rule_hint") },
          `${pct(c.online_rate_threshold)}（${word("ctr.rule." + c.rate_rule, c.rate_rule)}）`),
        h("td", { class: "col-lo ctr-wrapcell" }, valid),
        h("td", null, h("div", { class: "ctr-actions" },
          h("a", { class: "btn small ctr-sla", href: `#/contracts/${c.id}` }, t("ctr.sla")),
          h("button", { type: "button", class: "small ctr-edit", onclick: () => editForm(c) }, t("common.edit")),
          h("button", { type: "button", class: "small danger ctr-delete", onclick: () => deleteDialog(c) },
            t("common.delete")))));
    });
    clear(table).append(h("thead", null, h("tr", null, cols.map(([k, lo]) =>
      h("th", { scope: "col", class: lo ? "col-lo" : null }, t(k))))),
    h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: cols.length, class: "empty muted" },
      t("ctr.empty")))));
  }

  function editForm(c) {
    const q = (c && c.quality_terms) || {};
    const input = (name, attrs) => h("input", { id: "ctr-f-" + name, name, ...attrs });
    const inputs = {
      name: input("name", { type: "text", maxlength: 128, required: true, value: c ? c.name : "" }),
      customer: input("customer", { type: "text", maxlength: 200, value: c ? c.customer : "" }),
      storage_days: input("storage_days", { type: "number", step: 1, value: c ? c.storage_days : 30 }),
      repair_limit_hours: input("repair_limit_hours", { type: "number", step: "any", min: 0,
                                                         value: c ? c.repair_limit_hours : 48 }),
      threshold: input("threshold", { type: "number", step: "any", min: 0, max: 100,
                                      value: c ? +(c.online_rate_threshold * 100).toFixed(4) : 85 }),
      rate_rule: h("select", { id: "ctr-f-rate_rule", name: "rate_rule" },
        RULES.map((r) => h("option", { value: r }, t("ctr.rule." + r)))),
      sample_minutes: input("sample_minutes", { type: "number", step: 1, min: 1,
                                                value: c && c.sample_minutes != null ? c.sample_minutes : "" }),
      valid_from: input("valid_from", { type: "datetime-local",
                                        value: toLocalInput(c ? c.valid_from : new Date().toISOString()) }),
      valid_until: input("valid_until", { type: "datetime-local", value: c ? toLocalInput(c.valid_until) : "" }),
      channels: h("textarea", { id: "ctr-f-channels", name: "channel_ids", rows: 3 }),
    };
    inputs.rate_rule.value = c ? c.rate_rule : "time_weighted";
    inputs.channels.value = ((c && c.channel_ids) || []).join("\n");
    for (const k of QUALITY) inputs[k] = input(k, { type: "number", step: "any", min: 0, value: q[k] ?? "" });
    const chosen = new Set((c && c.org_node_ids) || []);
    const orgBoxes = org.ordered.map(([n, depth]) => h("label", { class: "ctr-org" },
      h("span", { "aria-hidden": "true" }, "\u3000".repeat(depth)),
      h("input", { type: "checkbox", class: "ctr-org-box", value: String(n.id), checked: chosen.has(n.id),
                   id: "ctr-org-" + n.id, disabled: n.in_scope === false }), n.name));
    const sampleField = field(t("ctr.f.sample_minutes"), inputs.sample_minutes);
    const syncRule = () => sampleField.classList.toggle("hidden", inputs.rate_rule.value !== "sampled");
    inputs.rate_rule.addEventListener("change", syncRule);
    syncRule();

    const dlg = modal(c ? t("ctr.edit_title", { name: c.name }) : t("ctr.new_title"), (body) => {
      body.append(h("div", { class: "ctr-grid" },
        field(t("ctr.f.name"), inputs.name),
        field(t("ctr.f.customer"), inputs.customer),
        h("fieldset", { class: "ctr-wide" }, h("legend", null, t("ctr.f.orgs")),
          h("div", { class: "ctr-orgs", id: "ctr-orgs" }, orgBoxes.length ? orgBoxes
            : h("span", { class: "muted" }, t("ctr.f.orgs_none")))),
        h("div", { class: "ctr-wide" }, field(t("ctr.f.channels"), inputs.channels)),
        field(t("ctr.f.storage_days"), inputs.storage_days),
        field(t("ctr.f.repair_limit_hours"), inputs.repair_limit_hours),
        field(t("ctr.f.threshold"), inputs.threshold),
        field(t("ctr.f.rate_rule"), inputs.rate_rule, t("ctr.rule_hint")),
        sampleField,
        field(t("ctr.f.valid_from"), inputs.valid_from),
        field(t("ctr.f.valid_until"), inputs.valid_until),
        h("fieldset", { class: "ctr-wide" }, h("legend", null, t("ctr.quality")),
          h("div", { class: "ctr-q" }, QUALITY.map((k) => field(t("ctr.f." + k), inputs[k]))))));
    }, async () => {
      const body = collect();
      try {
        const saved = c ? await patch(`${BASE}/${c.id}`, body) : await post(BASE, body);
        toast(t(c ? "ctr.saved" : "ctr.created", { name: saved.name }), "ok");
      } catch (err) {
        throw new Error(errorWords(err));
      }
      await reload();
    }, { saveLabel: c ? t("common.save") : t("common.create") });
    dlg.classList.add("ctr-dialog");
    dlg.id = c ? "ctr-edit-dialog" : "ctr-add-dialog";

    // the form's values as ContractIn; a refusal here throws the words the dialog shows
    function collect() {
      const name = inputs.name.value.trim();
      if (!name) throw new Error(t("ctr.err.name"));
      const storage = Number(inputs.storage_days.value);
      if (!Number.isInteger(storage) || storage < MIN_STORAGE_DAYS) throw new Error(t("ctr.err.storage_days"));
      const repair = Number(inputs.repair_limit_hours.value);
      if (!(repair > 0)) throw new Error(t("ctr.err.repair"));
      const pct = Number(inputs.threshold.value);
      if (inputs.threshold.value === "" || !(pct > 0 && pct <= 100)) throw new Error(t("ctr.err.threshold"));
      const rule = inputs.rate_rule.value;
      let sample = null;
      if (rule === "sampled") {
        sample = Number(inputs.sample_minutes.value);
        if (!Number.isInteger(sample) || sample < 1) throw new Error(t("ctr.err.sample"));
      }
      if (!inputs.valid_from.value) throw new Error(t("ctr.err.valid_from"));
      const channels = inputs.channels.value.split(/[\s,，]+/).map((x) => x.trim()).filter(Boolean);
      const bad = channels.find((x) => !CHANNEL_RE.test(x));
      if (bad) throw new Error(t("ctr.err.channel", { entry: bad }));
      const quality = {};
      for (const k of QUALITY) {
        const v = inputs[k].value.trim();
        if (!v) continue;
        const n = Number(v);
        if (!(n >= 0)) throw new Error(t("ctr.err.number", { field: t("ctr.f." + k) }));
        quality[k] = k.startsWith("min_") ? Math.round(n) : n;
      }
      return {
        name, customer: inputs.customer.value.trim(),
        org_node_ids: [...dlg.querySelectorAll("input.ctr-org-box:checked")].map((b) => Number(b.value)),
        channel_ids: [...new Set(channels)], storage_days: storage, repair_limit_hours: repair,
        quality_terms: quality, online_rate_threshold: Math.round(pct * 100) / 10000, rate_rule: rule,
        sample_minutes: sample, valid_from: fromLocalInput(inputs.valid_from.value),
        valid_until: fromLocalInput(inputs.valid_until.value),
      };
    }
  }

  function deleteDialog(c) {
    const dlg = modal(t("ctr.delete_title", { name: c.name }), (body) => {
      body.append(h("p", null, t("ctr.delete_text", { name: c.name })));
    }, async () => {
      try { await del(`${BASE}/${c.id}`); } catch (err) { throw new Error(errorWords(err)); }
      toast(t("ctr.deleted", { name: c.name }), "ok");
      await reload();
    }, { saveLabel: t("common.delete") });
    dlg.classList.add("ctr-dialog");
    dlg.id = "ctr-delete-dialog";
    const btn = dlg.querySelector("button[type=submit]");
    if (btn) { btn.classList.remove("primary"); btn.classList.add("danger"); btn.id = "ctr-delete-confirm"; }
  }

  await reload();
}

// ------------------------------------------------------------------ the SLA report of one contract
async function slaPage(root, id, params) {
  const c = await get(`${BASE}/${id}`);
  const now = Date.now();
  const from = h("input", { type: "datetime-local", id: "ctr-sla-from",
                            value: toLocalInput((params && params.get("from")) || new Date(now - 30 * 86400e3).toISOString()) });
  const to = h("input", { type: "datetime-local", id: "ctr-sla-to",
                          value: toLocalInput((params && params.get("to")) || new Date(now + 60e3).toISOString()) });
  const failure = h("div", { id: "ctr-sla-error" });
  const summary = h("div", { id: "ctr-sla-summary" });
  const metrics = h("div", { class: "ctr-metrics", id: "ctr-sla-metrics" });
  const overdue = h("table", { class: "table ctr-table", id: "ctr-sla-overdue" });
  const period = () => {
    const a = fromLocalInput(from.value), b = fromLocalInput(to.value);
    if (!a || !b || Date.parse(b) <= Date.parse(a)) return null;
    return { start: a, end: b };
  };
  root.append(
    h("div", { class: "page-head" }, h("h1", null, t("ctr.sla_title", { name: c.name })),
      h("div", { class: "tools" }, h("a", { class: "btn", href: "#/contracts", id: "ctr-back" }, t("ctr.back")),
        h("button", { type: "button", id: "ctr-sla-export", onclick: exportCsv }, t("ctr.sla_export")))),
    h("section", { class: "card" },
      h("div", { class: "ctr-period" },
        h("label", null, h("span", null, t("ctr.sla_from")), from),
        h("label", null, h("span", null, t("ctr.sla_to")), to),
        h("button", { type: "button", class: "primary", id: "ctr-sla-show", onclick: () => load() }, t("ctr.sla_show"))),
      failure, summary, metrics),
    h("section", { class: "card" }, h("h2", null, t("ctr.overdue")), h("div", { class: "ctr-wrap" }, overdue)));

  async function load() {
    clear(failure);
    const p = period();
    if (!p) { failure.append(message(t("ctr.bad_period"), "error")); return; }
    let r;
    try { r = await get(`${BASE}/${id}/sla`, p); } catch (err) {
      failure.append(message(`${t("common.error")}: ${errorWords(err)}`, "error"));
      return;
    }
    clear(summary).append(
      h("p", { id: "ctr-sla-words" }, t("ctr.sla_summary", { from: fmtTime(r.start), to: fmtTime(r.end), tickets: r.tickets,
        repaired: r.repaired, within: r.within_limit, limit: r.repair_limit_hours, missed: r.missed, pending: r.pending }),
      " ", r.share_within_limit == null ? t("ctr.sla_share_none") : t("ctr.sla_share", { share: pct(r.share_within_limit) }),
      " ", r.mean_repair_seconds == null ? t("ctr.sla_times_none")
        : t("ctr.sla_times", { mean: fmtDuration(r.mean_repair_seconds), p95: fmtDuration(r.p95_repair_seconds) })),
      h("p", { class: "muted" }, t("ctr.sla_generated", { time: fmtTime(r.generated_at) })));
    const metric = (key, value) => h("div", { class: "ctr-metric" }, h("b", null, value), h("span", null, t(key)));
    clear(metrics).append(
      metric("ctr.m.tickets", r.tickets), metric("ctr.m.repaired", r.repaired), metric("ctr.m.within", r.within_limit),
      metric("ctr.m.missed", r.missed), metric("ctr.m.pending", r.pending),
      metric("ctr.m.share", pct(r.share_within_limit)), metric("ctr.m.mean", fmtDuration(r.mean_repair_seconds)),
      metric("ctr.m.p95", fmtDuration(r.p95_repair_seconds)));
    const cols = ["ctr.o.ticket", "ctr.o.channel", "ctr.o.state", "ctr.o.reported", "ctr.o.deadline", "ctr.o.feedback",
                  "ctr.o.overdue"];
    const lo = new Set([3, 5]);
    const rows = (r.overdue || []).map((o) => h("tr", { dataset: { ticket: o.ticket_id } },
      h("td", null, h("a", { href: `#/tickets/${o.ticket_id}` }, "#" + o.ticket_id)),
      h("td", { class: "mono" }, [o.device_id, o.channel_id].filter(Boolean).join("/") || "—"),
      h("td", null, badge(word("ctr.state." + o.state, serverText(o.state)))),
      h("td", { class: "col-lo" }, fmtTime(o.reported_at)),
      h("td", null, fmtTime(o.deadline)),
      h("td", { class: "col-lo" }, fmtTime(o.feedback_at)),
      h("td", null, fmtDuration(o.overdue_seconds))));
    clear(overdue).append(h("thead", null, h("tr", null, cols.map((k, i) =>
      h("th", { scope: "col", class: lo.has(i) ? "col-lo" : null }, t(k))))),
    h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: cols.length, class: "empty muted" },
      t("ctr.overdue_none")))));
  }

  async function exportCsv() {
    const p = period();
    if (!p) { clear(failure).append(message(t("ctr.bad_period"), "error")); return; }
    const qs = new URLSearchParams(p).toString();
    try { await download(`${BASE}/${id}/sla.csv?${qs}`, `sla-contract-${id}.csv`); } catch (err) {
      toast(t("ctr.download_failed", { error: err.message || String(err) }), "error");
    }
  }

  await load();
}
