// 在线率报表 (issue 18): generate a report for a period (day / week / month / year / custom, Beijing time) and a
// scope (an organisation node or a contract) in the chosen formats, follow each job's progress (polled every second
// while one runs), list the generated and scheduled reports with their files (fetched with the token, saved through
// a blob URL); for the selected period a chart of the online rate over time against the threshold (an SVG drawn
// here: Beijing dates on the axis, the threshold line, points below it in red) and the per-channel table (sortable,
// paged in the browser). Every figure is explained: how the rate is computed, as the API documents it.
// The page's own CSS is a constructed style sheet (adoptedStyleSheets): the console's CSP allows no inline <style>.
import { get, post } from "./api.js";
import { orderedOrgNodes } from "./data.js";
import { badge, clear, fmtPercent, fmtTime, h, message, pageStyle, toast } from "./dom.js";
import { download } from "./devices.js";
import { extend, getLang, serverText, t } from "./i18n.js";

extend({
  "rep.title": "在线率报表",
  "rep.generate": "生成报表",
  "rep.kind": "统计周期",
  "rep.kind.day": "日报",
  "rep.kind.week": "周报",
  "rep.kind.month": "月报",
  "rep.kind.year": "年报",
  "rep.kind.custom": "自定义",
  "rep.date": "日期（北京时间）",
  "rep.month": "月份",
  "rep.year": "年份",
  "rep.from": "开始（北京时间）",
  "rep.to": "结束（北京时间，不含）",
  "rep.scope": "统计范围",
  "rep.scope.all": "本人授权范围内全部点位",
  "rep.scope.orgs": "组织节点（含下级）",
  "rep.scope.contracts": "服务合同",
  "rep.scope.contract": "服务合同：{name}",
  "rep.scope.contract_gone": "已删除的合同 #{id}",
  "rep.scope.org_gone": "组织节点 #{id}（已删除或无权查看）",
  "rep.formats": "文件格式",
  "rep.show": "查看图表与明细",
  "rep.pick_format": "请至少选择一种文件格式",
  "rep.bad_period": "统计周期无效：请填写完整的日期，且开始早于结束",
  "rep.submitted": "已提交 {n} 个报表任务",
  "rep.generating": "生成中（{i}/{n}）",
  "rep.jobs": "报表任务",
  "rep.col.label": "周期",
  "rep.col.kind": "类型",
  "rep.col.scope": "范围",
  "rep.col.trigger": "来源",
  "rep.col.state": "状态",
  "rep.col.rate": "在线率",
  "rep.col.created": "提交时间",
  "rep.col.file": "文件",
  "rep.trigger.api": "手动生成",
  "rep.trigger.schedule": "定时生成",
  "rep.trigger.other": "其他",
  "rep.state.queued": "排队中",
  "rep.state.running": "生成中 {p}",
  "rep.state.done": "已完成",
  "rep.state.failed": "失败",
  "rep.download": "下载 {fmt}",
  "rep.download_failed": "下载失败：{error}",
  "rep.no_reports": "还没有报表",
  "rep.size": "{kb} KB",
  "rep.chart": "在线率走势",
  "rep.chart_loading": "正在计算在线率……",
  "rep.chart_empty": "该时段没有可统计的数据",
  "rep.threshold": "考核值 {p}",
  "rep.legend.rate": "在线率",
  "rep.legend.threshold": "考核值",
  "rep.legend.fail": "低于考核值",
  "rep.point": "{time}：在线率 {rate}（{verdict}）",
  "rep.pass": "达标",
  "rep.fail": "不达标",
  "rep.nodata": "无数据",
  "rep.summary": "{label}：在线率 {rate}，考核值 {threshold}，{verdict}。共 {n} 个点位，在线 {online}，离线 {offline}，状态未知 {unknown}。",
  "rep.explain.time_weighted": "在线率（按时长加权）= 全部点位在线时长之和 ÷（在线时长 + 离线时长）；平台停机和状态未知的时段不计入分母。每个点位的在线率 = 该点位在线时长 ÷（在线 + 离线时长）。",
  "rep.explain.sampled": "在线率（定时抽样）= 每 {m} 分钟抽样一次“在线点位数 ÷ 点位总数”，取全部抽样的平均值；每个点位的在线率按其在线时长 ÷（在线 + 离线时长）计算。",
  "rep.explain.chart": "图中每个点是该小段时间（{step}）的在线率，按同样的规则计算；横轴为北京时间。",
  "rep.step.hour": "每小时",
  "rep.step.day": "每天",
  "rep.step.month": "每月",
  "rep.step.custom": "等分时段",
  "rep.channels": "点位明细",
  "rep.ch.name": "点位名称",
  "rep.ch.channel": "通道编码",
  "rep.ch.device": "设备编码",
  "rep.ch.rate": "在线率",
  "rep.ch.offline": "离线时长",
  "rep.ch.outages": "掉线次数",
  "rep.ch.longest": "最长离线",
  "rep.ch.verdict": "考核",
  "rep.ch.empty": "该范围内没有点位",
  "rep.ch.rate_hint": "在线时长 ÷（在线 + 离线时长）；状态未知与平台停机时段不计",
  "rep.sort_hint": "点击按此列排序",
  "rep.dur.hm": "{h} 小时 {m} 分",
  "rep.dur.m": "{m} 分",
  "rep.dur.s": "{s} 秒",
  "rep.beijing": "时间均为北京时间。",
}, {
  "rep.title": "Online-rate reports",
  "rep.generate": "Generate report",
  "rep.kind": "Period",
  "rep.kind.day": "Day",
  "rep.kind.week": "Week",
  "rep.kind.month": "Month",
  "rep.kind.year": "Year",
  "rep.kind.custom": "Custom",
  "rep.date": "Date (Beijing time)",
  "rep.month": "Month",
  "rep.year": "Year",
  "rep.from": "From (Beijing time)",
  "rep.to": "To (Beijing time, exclusive)",
  "rep.scope": "Scope",
  "rep.scope.all": "All channels within my scope",
  "rep.scope.orgs": "Organisation nodes (with descendants)",
  "rep.scope.contracts": "Service contracts",
  "rep.scope.contract": "Contract: {name}",
  "rep.scope.contract_gone": "Deleted contract #{id}",
  "rep.scope.org_gone": "Organisation node #{id} (deleted or not visible)",
  "rep.formats": "File formats",
  "rep.show": "Show chart and details",
  "rep.pick_format": "Choose at least one file format",
  "rep.bad_period": "Invalid period: fill in complete dates, the start before the end",
  "rep.submitted": "{n} report jobs submitted",
  "rep.generating": "Generating ({i}/{n})",
  "rep.jobs": "Report jobs",
  "rep.col.label": "Period",
  "rep.col.kind": "Kind",
  "rep.col.scope": "Scope",
  "rep.col.trigger": "Source",
  "rep.col.state": "State",
  "rep.col.rate": "Online rate",
  "rep.col.created": "Submitted",
  "rep.col.file": "File",
  "rep.trigger.api": "On demand",
  "rep.trigger.schedule": "Scheduled",
  "rep.trigger.other": "Other",
  "rep.state.queued": "Queued",
  "rep.state.running": "Running {p}",
  "rep.state.done": "Done",
  "rep.state.failed": "Failed",
  "rep.download": "Download {fmt}",
  "rep.download_failed": "Download failed: {error}",
  "rep.no_reports": "No reports yet",
  "rep.size": "{kb} KB",
  "rep.chart": "Online rate over time",
  "rep.chart_loading": "Computing the online rate…",
  "rep.chart_empty": "No data to count in this period",
  "rep.threshold": "Threshold {p}",
  "rep.legend.rate": "Online rate",
  "rep.legend.threshold": "Threshold",
  "rep.legend.fail": "Below the threshold",
  "rep.point": "{time}: online rate {rate} ({verdict})",
  "rep.pass": "pass",
  "rep.fail": "fail",
  "rep.nodata": "no data",
  "rep.summary": "{label}: online rate {rate}, threshold {threshold}, {verdict}. {n} channels, online {online}, offline {offline}, unknown {unknown}.",
  "rep.explain.time_weighted": "Online rate (time-weighted) = total online time of all channels ÷ (online + offline time); platform downtime and unknown periods are left out of the denominator. A channel's rate = its online time ÷ (online + offline time).",
  "rep.explain.sampled": "Online rate (sampled) = every {m} minutes the share \"channels online ÷ channels\", averaged over all samples; a channel's rate is its online time ÷ (online + offline time).",
  "rep.explain.chart": "Each point is the rate of its slice of time ({step}), by the same rule; the axis is Beijing time.",
  "rep.step.hour": "hourly",
  "rep.step.day": "daily",
  "rep.step.month": "monthly",
  "rep.step.custom": "equal slices",
  "rep.channels": "Channels",
  "rep.ch.name": "Channel name",
  "rep.ch.channel": "Channel ID",
  "rep.ch.device": "Device ID",
  "rep.ch.rate": "Online rate",
  "rep.ch.offline": "Offline time",
  "rep.ch.outages": "Outages",
  "rep.ch.longest": "Longest outage",
  "rep.ch.verdict": "Verdict",
  "rep.ch.empty": "No channels in this scope",
  "rep.ch.rate_hint": "Online time ÷ (online + offline time); unknown periods and platform downtime not counted",
  "rep.sort_hint": "Click to sort by this column",
  "rep.dur.hm": "{h} h {m} min",
  "rep.dur.m": "{m} min",
  "rep.dur.s": "{s} s",
  "rep.beijing": "All times are Beijing time.",
});

const KINDS = ["day", "week", "month", "year", "custom"];
const FORMATS = ["csv", "xlsx", "pdf"];
const FORMAT_WORDS = { csv: "CSV", xlsx: "Excel", pdf: "PDF" };
const POLL_MS = 1000;
const PAGE = 50;
const DAY = 86400e3;
const BJ = 8 * 3600e3; // Beijing is UTC+8 all year
const CHART_PARALLEL = 4;

const COLUMNS = [
  { key: "name", label: "rep.ch.name", get: (c) => c.name || c.channel_id },
  { key: "channel_id", label: "rep.ch.channel", get: (c) => c.channel_id, lo: true },
  { key: "device_id", label: "rep.ch.device", get: (c) => c.device_id },
  { key: "availability", label: "rep.ch.rate", get: (c) => c.availability ?? -1 },
  { key: "offline_s", label: "rep.ch.offline", get: (c) => c.offline_s },
  { key: "outages", label: "rep.ch.outages", get: (c) => c.outages, lo: true },
  { key: "longest_outage_s", label: "rep.ch.longest", get: (c) => c.longest_outage_s, lo: true },
  { key: "verdict", label: "rep.ch.verdict", get: (c) => (c.availability == null ? 2 : c.below_threshold ? 0 : 1) },
];

const CSS = `
.rep .rep-form { display: flex; flex-wrap: wrap; gap: 10px 14px; align-items: flex-end; }
.rep .rep-form label.rep-f { display: flex; flex-direction: column; gap: 4px; min-width: 0; }
.rep .rep-form select, .rep .rep-form input { max-width: 100%; }
.rep .rep-form fieldset { border: 1px solid var(--line, #dde); border-radius: 6px; padding: 4px 10px; margin: 0;
  display: flex; gap: 10px; flex-wrap: wrap; }
.rep .rep-form fieldset label { display: inline-flex; gap: 4px; align-items: center; }
.rep .rep-actions { display: flex; gap: 8px; flex-wrap: wrap; }
.rep section.card { margin-bottom: 14px; min-width: 0; }
.rep .rep-wrap { overflow-x: auto; max-width: 100%; }
.rep .rep-table td { white-space: nowrap; }
.rep .rep-table td.rep-wrapcell { white-space: normal; min-width: 8em; }
.rep .rep-table th button.rep-sort { background: none; border: none; padding: 0; font: inherit; color: inherit;
  cursor: pointer; }
.rep .rep-table th[aria-sort=ascending] button.rep-sort::after { content: " ▲"; font-size: 10px; }
.rep .rep-table th[aria-sort=descending] button.rep-sort::after { content: " ▼"; font-size: 10px; }
.rep .rep-bar { display: inline-block; width: 80px; height: 6px; background: var(--line, #dde); border-radius: 3px;
  vertical-align: middle; margin-left: 6px; overflow: hidden; }
.rep .rep-bar > span { display: block; height: 100%; background: var(--accent, #1f6feb); }
.rep .rep-files { display: flex; gap: 4px; flex-wrap: wrap; }
.rep .rep-chartwrap { overflow-x: auto; max-width: 100%; }
.rep svg.rep-svg { width: 100%; min-width: 480px; height: auto; display: block; }
.rep svg.rep-svg .axis { stroke: #889; stroke-width: 1; }
.rep svg.rep-svg .grid { stroke: #e4e6ee; stroke-width: 1; }
.rep svg.rep-svg text { font-size: 11px; fill: #556; }
.rep svg.rep-svg .rate-line { fill: none; stroke: var(--accent, #1f6feb); stroke-width: 2; }
.rep svg.rep-svg .threshold-line { stroke: #d98a00; stroke-width: 1.5; stroke-dasharray: 6 4; }
.rep svg.rep-svg circle.pass { fill: var(--ok, #1a9f5b); }
.rep svg.rep-svg circle.fail { fill: var(--bad, #d93b3b); }
.rep .rep-legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; margin: 6px 0; }
.rep .rep-legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
.rep .rep-legend i.l-rate { background: var(--accent, #1f6feb); }
.rep .rep-legend i.l-thr { background: #d98a00; }
.rep .rep-legend i.l-fail { background: var(--bad, #d93b3b); height: 8px; width: 8px; border-radius: 4px; }
.rep .rep-explain { font-size: 13px; color: var(--muted, #667); margin: 4px 0; }
.rep .rep-pager { display: flex; gap: 8px; align-items: center; justify-content: flex-end; flex-wrap: wrap; margin-top: 8px; }
.rep .rep-pager .muted { margin-right: auto; }
@media (max-width: 700px) {
  .rep .col-lo { display: none; }
  .rep .rep-form { flex-direction: column; align-items: stretch; }
}`;

const addStyle = pageStyle(CSS);

// a percentage as people write it: 90%, 99.5% (not 90.0%)
function pct(x) { return fmtPercent(x).replace(/\.0%$/, "%"); }

function word(key, fallback) {
  const text = t(key);
  return text === key ? fallback : text;
}

// ------------------------------------------------------------------ Beijing calendar arithmetic
// A Beijing wall time "YYYY-MM-DDTHH:MM" as an instant (ms).
const bjMs = (y, m, d) => Date.UTC(y, m - 1, d) - BJ;
// [y, m, d] of an instant's Beijing date
function bjParts(ms) {
  const b = new Date(ms + BJ);
  return [b.getUTCFullYear(), b.getUTCMonth() + 1, b.getUTCDate()];
}
const pad = (n) => String(n).padStart(2, "0");
function todayInput() { const [y, m, d] = bjParts(Date.now()); return `${y}-${pad(m)}-${pad(d)}`; }
function monthInput() { const [y, m] = bjParts(Date.now()); return `${y}-${pad(m)}`; }

// [start ms, end ms) of the chosen period, or null when the inputs are incomplete
function periodBounds(p) {
  if (p.kind === "day" || p.kind === "week") {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(p.date || "");
    if (!m) return null;
    let s = bjMs(+m[1], +m[2], +m[3]);
    if (p.kind === "day") return [s, s + DAY];
    const weekday = (new Date(s + BJ).getUTCDay() + 6) % 7; // Monday 0
    s -= weekday * DAY;
    return [s, s + 7 * DAY];
  }
  if (p.kind === "month") {
    const m = /^(\d{4})-(\d{2})$/.exec(p.month || "");
    if (!m) return null;
    return [bjMs(+m[1], +m[2], 1), bjMs(+m[1], +m[2] + 1, 1)];
  }
  if (p.kind === "year") {
    const y = Number(p.year);
    if (!Number.isInteger(y) || y < 2000 || y > 2100) return null;
    return [bjMs(y, 1, 1), bjMs(y + 1, 1, 1)];
  }
  if (!p.from || !p.to) return null;
  const s = Date.parse(p.from + ":00+08:00");
  const e = Date.parse(p.to + ":00+08:00");
  if (isNaN(s) || isNaN(e) || e <= s) return null;
  return [s, e];
}

// the chart's slices of [s, e): hours of a day, days of a week or month, months of a year
function slices(kind, s, e) {
  const out = [];
  let step = "custom";
  if (kind === "year" || (kind === "custom" && e - s > 92 * DAY)) {
    step = "month";
    let [y, m] = bjParts(s);
    let a = s;
    while (a < e) {
      const b = Math.min(e, bjMs(y, m + 1, 1));
      out.push([a, b]);
      a = b;
      m += 1;
    }
  } else if (kind === "day" || (kind === "custom" && e - s <= 2 * DAY)) {
    step = "hour";
    for (let a = s; a < e; a += 3600e3) out.push([a, Math.min(e, a + 3600e3)]);
  } else {
    step = "day";
    for (let a = s; a < e; a += DAY) out.push([a, Math.min(e, a + DAY)]);
  }
  const now = Date.now();
  return { step, all: out, parts: out.filter(([a]) => a < now) }; // the future has no figures
}

function fmtDuration(seconds) {
  if (seconds > 0 && seconds < 60) return t("rep.dur.s", { s: Math.round(seconds) });
  const mins = Math.round((seconds || 0) / 60);
  const hh = Math.floor(mins / 60);
  return hh ? t("rep.dur.hm", { h: hh, m: mins % 60 }) : t("rep.dur.m", { m: mins });
}

// an axis label in Beijing time
function axisLabel(ms, step) {
  const b = new Date(ms + BJ);
  if (step === "hour") return `${pad(b.getUTCHours())}:00`;
  if (step === "month") return `${b.getUTCFullYear()}-${pad(b.getUTCMonth() + 1)}`;
  return `${pad(b.getUTCMonth() + 1)}-${pad(b.getUTCDate())}`;
}

// ------------------------------------------------------------------ the chart (SVG drawn here)
const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function drawChart(points, ticks, threshold, step, [start, end]) {
  const W = 760, H = 260, L = 46, R = 12, T = 12, B = 34;
  const known = points.filter((p) => p.rate != null);
  const lo = Math.max(0, Math.floor(Math.min(threshold, ...known.map((p) => p.rate)) * 10) / 10 - 0.1);
  const x = (ms) => L + ((ms - start) / (end - start)) * (W - L - R);
  const y = (r) => T + (1 - (r - lo) / (1 - lo || 1)) * (H - T - B);
  const svg = s("svg", { class: "rep-svg", id: "rep-chart-svg", viewBox: `0 0 ${W} ${H}`, role: "img",
                         "aria-label": t("rep.chart") });
  svg.append(s("title", null, t("rep.chart")));
  // y grid and labels
  for (let i = 0; i <= 4; i++) {
    const r = lo + ((1 - lo) * i) / 4;
    svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: y(r), y2: y(r) }),
      s("text", { x: L - 6, y: y(r) + 4, "text-anchor": "end" }, pct(r)));
  }
  svg.append(s("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
    s("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  // x labels over the whole period (the future too): at most 8, in Beijing time
  const every = Math.max(1, Math.ceil(ticks.length / 8));
  ticks.forEach(([a], i) => {
    if (i % every) return;
    svg.append(s("line", { class: "axis", x1: x(a), x2: x(a), y1: H - B, y2: H - B + 4 }),
      s("text", { x: x(a), y: H - B + 16, "text-anchor": "middle" }, axisLabel(a, step)));
  });
  // the threshold
  svg.append(s("line", { class: "threshold-line", id: "rep-threshold-line", x1: L, x2: W - R, y1: y(threshold),
                         y2: y(threshold) }, s("title", null, t("rep.threshold", { p: pct(threshold) }))),
  s("text", { x: W - R - 4, y: y(threshold) - 5, "text-anchor": "end" }, t("rep.threshold", { p: pct(threshold) })));
  // the rate: a line through the known points (a gap where a slice has no data), pass/fail points
  let d = "";
  let pen = false;
  for (const p of points) {
    const mid = (p.start + p.end) / 2;
    if (p.rate == null) { pen = false; continue; }
    d += `${pen ? "L" : "M"}${x(mid).toFixed(1)},${y(p.rate).toFixed(1)} `;
    pen = true;
  }
  if (d) svg.append(s("path", { class: "rate-line", d: d.trim() }));
  for (const p of points) {
    if (p.rate == null) continue;
    const fail = p.rate < threshold;
    const verdict = fail ? t("rep.fail") : t("rep.pass");
    svg.append(s("circle", { class: fail ? "fail" : "pass", cx: x((p.start + p.end) / 2), cy: y(p.rate), r: 3.5 },
      s("title", null, t("rep.point", { time: fmtTime(p.start), rate: pct(p.rate), verdict }))));
  }
  return svg;
}

// ------------------------------------------------------------------ the view
export async function reportsView(root) {
  addStyle();
  root.classList.add("rep");
  let alive = true;
  let pollTimer = null;
  const [tree, contracts] = await Promise.all([
    get("/api/org/tree").catch(() => ({ nodes: [] })),
    get("/api/contracts").catch(() => ({ items: [] })),
  ]);
  const nodes = tree.nodes || [];
  const orgById = new Map(nodes.map((n) => [n.id, n]));
  const contractById = new Map((contracts.items || []).map((c) => [c.id, c]));

  // ---------------------------------------------------------------- the form
  const kind = h("select", { id: "rep-kind" }, KINDS.map((k) => h("option", { value: k }, t("rep.kind." + k))));
  kind.value = "month";
  const date = h("input", { type: "date", id: "rep-date", value: todayInput() });
  const month = h("input", { type: "month", id: "rep-month", value: monthInput() });
  const year = h("input", { type: "number", id: "rep-year", min: 2000, max: 2100, value: bjParts(Date.now())[0] });
  const from = h("input", { type: "datetime-local", id: "rep-from" });
  const to = h("input", { type: "datetime-local", id: "rep-to" });
  const scope = h("select", { id: "rep-scope" },
    h("option", { value: "" }, t("rep.scope.all")),
    nodes.length ? h("optgroup", { label: t("rep.scope.orgs") }, orderedOrgNodes(nodes).map(([n, depth]) =>
      h("option", { value: "org:" + n.id, disabled: n.in_scope === false }, "\u3000".repeat(depth) + n.name))) : null,
    contractById.size ? h("optgroup", { label: t("rep.scope.contracts") }, [...contractById.values()].map((c) =>
      h("option", { value: "contract:" + c.id }, c.name))) : null);
  const formatBoxes = FORMATS.map((f) => h("input", { type: "checkbox", id: "rep-fmt-" + f, value: f, checked: true }));
  const dateField = h("label", { class: "rep-f" }, h("span", null, t("rep.date")), date);
  const monthField = h("label", { class: "rep-f" }, h("span", null, t("rep.month")), month);
  const yearField = h("label", { class: "rep-f" }, h("span", null, t("rep.year")), year);
  const fromField = h("label", { class: "rep-f" }, h("span", null, t("rep.from")), from);
  const toField = h("label", { class: "rep-f" }, h("span", null, t("rep.to")), to);
  const formError = h("div", { id: "rep-form-error" });
  const genBtn = h("button", { type: "submit", class: "primary", id: "rep-generate" }, t("rep.generate"));
  const showBtn = h("button", { type: "button", id: "rep-show", onclick: () => showPeriod() }, t("rep.show"));
  const form = h("form", { class: "rep-form", id: "rep-form" },
    h("label", { class: "rep-f" }, h("span", null, t("rep.kind")), kind),
    dateField, monthField, yearField, fromField, toField,
    h("label", { class: "rep-f" }, h("span", null, t("rep.scope")), scope),
    h("fieldset", null, h("legend", null, t("rep.formats")),
      formatBoxes.map((b) => h("label", null, b, FORMAT_WORDS[b.value]))),
    h("div", { class: "rep-actions" }, genBtn, showBtn));

  function syncFields() {
    const k = kind.value;
    dateField.classList.toggle("hidden", k !== "day" && k !== "week");
    monthField.classList.toggle("hidden", k !== "month");
    yearField.classList.toggle("hidden", k !== "year");
    fromField.classList.toggle("hidden", k !== "custom");
    toField.classList.toggle("hidden", k !== "custom");
  }
  kind.addEventListener("change", syncFields);
  syncFields();

  function params() {
    return { kind: kind.value, date: date.value, month: month.value, year: year.value, from: from.value, to: to.value };
  }
  function scopeIds() {
    const [what, id] = scope.value.split(":");
    return { org_node_id: what === "org" ? Number(id) : undefined, contract_id: what === "contract" ? Number(id) : undefined };
  }
  function scopeWords(r) {
    if (r.contract_id != null) {
      const c = contractById.get(r.contract_id);
      return c ? t("rep.scope.contract", { name: c.name }) : t("rep.scope.contract_gone", { id: r.contract_id });
    }
    if (r.org_node_id != null) {
      const n = orgById.get(r.org_node_id);
      return n ? n.name : t("rep.scope.org_gone", { id: r.org_node_id });
    }
    return t("rep.scope.all");
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clear(formError);
    const p = params();
    const bounds = periodBounds(p);
    if (!bounds) { formError.append(message(t("rep.bad_period"), "error")); return; }
    const formats = formatBoxes.filter((b) => b.checked).map((b) => b.value);
    if (!formats.length) { formError.append(message(t("rep.pick_format"), "error")); return; }
    const body = { kind: p.kind, ...scopeIds() };
    if (p.kind === "day" || p.kind === "week") body.date = p.date;
    if (p.kind === "month") body.month = p.month;
    if (p.kind === "year") body.year = Number(p.year);
    if (p.kind === "custom") { body.from = p.from + ":00+08:00"; body.to = p.to + ":00+08:00"; }
    genBtn.disabled = true;
    try {
      // one job at a time: each file waits for the one before (concurrent jobs contend for the database)
      toast(t("rep.submitted", { n: formats.length }), "ok");
      showPeriod();
      for (const [i, format] of formats.entries()) {
        genBtn.textContent = t("rep.generating", { i: i + 1, n: formats.length });
        const job = await post("/api/reports", { ...body, format });
        await loadJobs();
        await finished(job.id);
      }
    } catch (err) {
      formError.append(message(`${t("common.error")}: ${err.message || err}`, "error"));
    } finally {
      genBtn.disabled = false;
      genBtn.textContent = t("rep.generate");
    }
  });
  // resolves when the job is done or failed (or the page is left)
  async function finished(id) {
    for (;;) {
      if (!alive) return;
      const r = await get(`/api/reports/${encodeURIComponent(id)}`);
      if (r.state === "done" || r.state === "failed") return;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  // ---------------------------------------------------------------- the jobs
  const jobs = h("table", { class: "table rep-table", id: "rep-jobs" });
  async function loadJobs() {
    let data;
    try { data = await get("/api/reports", { limit: 50 }); } catch (err) {
      clear(jobs).append(h("tbody", null, h("tr", null, h("td", null, message(err.message || String(err), "error")))));
      return;
    }
    if (!alive) return;
    drawJobs(data.items || []);
    clearTimeout(pollTimer);
    if ((data.items || []).some((r) => r.state === "queued" || r.state === "running")) {
      pollTimer = setTimeout(() => { if (alive) loadJobs(); }, POLL_MS);
    }
  }
  function stateCell(r) {
    if (r.state === "running" || r.state === "queued") {
      const pct = Math.round((r.progress || 0) * 100);
      return h("td", { class: "rep-state", dataset: { state: r.state } },
        r.state === "queued" ? t("rep.state.queued") : t("rep.state.running", { p: pct + "%" }),
        h("span", { class: "rep-bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct },
          h("span", { style: null, dataset: { w: pct } })));
    }
    if (r.state === "failed") {
      return h("td", { class: "rep-state rep-wrapcell", dataset: { state: r.state } },
        h("span", { title: r.error ? serverText(r.error) : null }, badge(t("rep.state.failed"), "off")));
    }
    return h("td", { class: "rep-state", dataset: { state: r.state } }, badge(t("rep.state.done"), "on"));
  }
  function drawJobs(items) {
    const head = h("tr", null,
      ["rep.col.label", "rep.col.kind", "rep.col.scope", "rep.col.trigger", "rep.col.state", "rep.col.rate",
       "rep.col.created", "rep.col.file"].map((k, i) =>
        h("th", { scope: "col", class: [1, 2, 3, 6].includes(i) ? "col-lo" : null }, t(k))));
    const rows = items.map((r) => {
      const rate = r.summary ? r.summary.rate : null;
      const thr = r.summary ? r.summary.threshold : null;
      const file = r.state === "done"
        ? h("button", { type: "button", class: "small rep-dl", dataset: { format: r.format },
                        onclick: () => save(r) }, t("rep.download", { fmt: FORMAT_WORDS[r.format] || r.format }))
        : "—";
      return h("tr", { dataset: { report: r.id, format: r.format } },
        h("td", { class: "rep-wrapcell" }, r.label),
        h("td", { class: "col-lo" }, word("rep.kind." + r.kind, r.kind)),
        h("td", { class: "col-lo rep-wrapcell" }, scopeWords(r)),
        h("td", { class: "col-lo" }, word("rep.trigger." + r.trigger, t("rep.trigger.other"))),
        stateCell(r),
        h("td", { class: "rep-jobrate", title: thr != null ? t("rep.threshold", { p: pct(thr) }) : null },
          rate == null ? "—" : `${pct(rate)} ${rate < thr ? t("rep.fail") : t("rep.pass")}`),
        h("td", { class: "col-lo" }, fmtTime(r.created_at)),
        h("td", { class: "rep-files" }, file, r.size ? h("span", { class: "muted" },
          " " + t("rep.size", { kb: Math.max(1, Math.round(r.size / 1024)) })) : null));
    });
    clear(jobs).append(h("thead", null, head), h("tbody", null, rows.length ? rows
      : h("tr", null, h("td", { colspan: 8, class: "empty muted" }, t("rep.no_reports")))));
    // the progress bars' widths: set through the CSSOM (an inline style attribute is refused by the CSP)
    for (const bar of jobs.querySelectorAll(".rep-bar > span")) bar.style.width = bar.dataset.w + "%";
  }
  async function save(r) {
    try { await download(`/api/reports/${encodeURIComponent(r.id)}/file`, `report-${r.id}.${r.format}`); } catch (err) {
      toast(t("rep.download_failed", { error: err.message || String(err) }), "error");
    }
  }

  // ---------------------------------------------------------------- the chart and the channels
  const chartBox = h("div", { id: "rep-chart" });
  const summaryLine = h("p", { id: "rep-summary" });
  const explain = h("div", { id: "rep-explain" });
  const chTable = h("table", { class: "table rep-table", id: "rep-channels" });
  const pager = h("div", { class: "rep-pager", id: "rep-pager" });
  const tableState = { rows: [], sort: "availability", order: "asc", offset: 0, threshold: 0.85 };
  let showSeq = 0;

  async function showPeriod() {
    const mine = ++showSeq;
    const p = params();
    const bounds = periodBounds(p);
    clear(formError);
    if (!bounds) { formError.append(message(t("rep.bad_period"), "error")); return; }
    const ids = scopeIds();
    const iso = (ms) => new Date(ms).toISOString();
    clear(chartBox).append(h("p", { class: "muted" }, t("rep.chart_loading")));
    clear(summaryLine);
    clear(explain);
    let whole;
    try {
      whole = await get("/api/availability/channels", { from: iso(bounds[0]), to: iso(bounds[1]), ...ids, limit: 5000 });
    } catch (err) {
      if (mine === showSeq) clear(chartBox).append(message(`${t("common.error")}: ${err.message || err}`, "error"));
      return;
    }
    if (mine !== showSeq || !alive) return;
    const sm = whole.summary || {};
    const threshold = sm.threshold ?? 0.85;
    tableState.rows = whole.items || [];
    tableState.threshold = threshold;
    tableState.offset = 0;
    drawChannels();
    const verdict = sm.rate == null ? t("rep.nodata") : sm.breach ? t("rep.fail") : t("rep.pass");
    summaryLine.append(t("rep.summary", { label: sm.label || "", rate: pct(sm.rate),
      threshold: pct(threshold), verdict, n: sm.channels ?? tableState.rows.length,
      online: fmtDuration(sm.online_s), offline: fmtDuration(sm.offline_s), unknown: fmtDuration(sm.unknown_s) }));
    const { step, all, parts } = slices(p.kind, bounds[0], bounds[1]);
    explain.append(
      h("p", { class: "rep-explain", id: "rep-explain-rule" }, sm.rule === "sampled"
        ? t("rep.explain.sampled", { m: sm.sample_minutes ?? 5 }) : t("rep.explain.time_weighted")),
      h("p", { class: "rep-explain" }, t("rep.explain.chart", { step: t("rep.step." + step) }), " ", t("rep.beijing")));
    // one figure per slice, a few requests at a time
    const points = parts.map(([a, b]) => ({ start: a, end: b, rate: null }));
    let next = 0;
    async function worker() {
      while (next < points.length && mine === showSeq && alive) {
        const pt = points[next++];
        try {
          const r = await get("/api/availability/channels", { from: iso(pt.start), to: iso(pt.end), ...ids, limit: 1 });
          pt.rate = r.summary ? r.summary.rate : null;
        } catch (_) { pt.rate = null; }
      }
    }
    await Promise.all(Array.from({ length: CHART_PARALLEL }, worker));
    if (mine !== showSeq || !alive) return;
    const legend = h("div", { class: "rep-legend" },
      h("span", null, h("i", { class: "l-rate" }), t("rep.legend.rate")),
      h("span", null, h("i", { class: "l-thr" }), t("rep.legend.threshold")),
      h("span", null, h("i", { class: "l-fail" }), t("rep.legend.fail")));
    clear(chartBox).append(legend, h("div", { class: "rep-chartwrap" }, drawChart(points, all, threshold, step, bounds)));
    if (!points.some((x) => x.rate != null)) chartBox.append(h("p", { class: "muted" }, t("rep.chart_empty")));
  }

  function headCell(col) {
    const th = h("th", { scope: "col", class: col.lo ? "col-lo" : null, dataset: { col: col.key },
                         title: col.key === "availability" ? t("rep.ch.rate_hint") : null });
    if (tableState.sort === col.key) th.setAttribute("aria-sort", tableState.order === "asc" ? "ascending" : "descending");
    th.append(h("button", { type: "button", class: "rep-sort", title: t("rep.sort_hint"), onclick: () => {
      if (tableState.sort === col.key) tableState.order = tableState.order === "asc" ? "desc" : "asc";
      else { tableState.sort = col.key; tableState.order = "asc"; }
      tableState.offset = 0;
      drawChannels();
    } }, t(col.label)));
    return th;
  }
  function drawChannels() {
    const col = COLUMNS.find((c) => c.key === tableState.sort) || COLUMNS[3];
    const dir = tableState.order === "asc" ? 1 : -1;
    const locale = getLang() === "en" ? "en" : "zh-CN";
    const rows = [...tableState.rows].sort((a, b) => {
      const x = col.get(a), y = col.get(b);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y), locale);
      return c * dir || a.device_id.localeCompare(b.device_id) || a.channel_id.localeCompare(b.channel_id);
    });
    const pageRows = rows.slice(tableState.offset, tableState.offset + PAGE).map((c) => {
      const verdict = c.availability == null ? badge(t("rep.nodata"))
        : c.below_threshold ? badge(t("rep.fail"), "off") : badge(t("rep.pass"), "on");
      return h("tr", { dataset: { channel: `${c.device_id}/${c.channel_id}` } },
        h("td", { class: "rep-wrapcell rep-ch-name" }, c.name || c.channel_id),
        h("td", { class: "col-lo mono" }, c.channel_id),
        h("td", { class: "mono" }, c.device_id),
        h("td", { class: "rep-ch-rate", title: t("rep.ch.rate_hint") }, pct(c.availability)),
        h("td", { class: "rep-ch-offline" }, fmtDuration(c.offline_s)),
        h("td", { class: "col-lo" }, String(c.outages)),
        h("td", { class: "col-lo" }, fmtDuration(c.longest_outage_s)),
        h("td", null, verdict));
    });
    clear(chTable).append(h("thead", null, h("tr", null, COLUMNS.map(headCell))),
      h("tbody", null, pageRows.length ? pageRows
        : h("tr", null, h("td", { colspan: COLUMNS.length, class: "empty muted" }, t("rep.ch.empty")))));
    const total = rows.length;
    const a = total ? tableState.offset + 1 : 0;
    const b = Math.min(total, tableState.offset + PAGE);
    clear(pager).append(
      h("span", { class: "muted" }, t("common.page", { from: a, to: b, total })),
      h("button", { type: "button", id: "rep-prev", disabled: tableState.offset <= 0, onclick: () => {
        tableState.offset = Math.max(0, tableState.offset - PAGE); drawChannels(); } }, t("common.prev")),
      h("button", { type: "button", id: "rep-next", disabled: b >= total, onclick: () => {
        tableState.offset += PAGE; drawChannels(); } }, t("common.next")));
  }

  root.append(
    h("div", { class: "page-head" }, h("h1", null, t("rep.title")),
      h("div", { class: "tools" }, h("button", { type: "button", id: "rep-refresh", onclick: () => loadJobs() },
        t("common.refresh")))),
    h("section", { class: "card" }, form, formError),
    h("section", { class: "card" }, h("h2", null, t("rep.jobs")), h("div", { class: "rep-wrap" }, jobs)),
    h("section", { class: "card" }, h("h2", null, t("rep.chart")), summaryLine, chartBox, explain),
    h("section", { class: "card" }, h("h2", null, t("rep.channels")), h("div", { class: "rep-wrap" }, chTable), pager));

  await loadJobs();
  showPeriod();
  return () => { alive = false; clearTimeout(pollTimer); };
}

