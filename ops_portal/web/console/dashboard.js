// 首页 (issue 18): what an operations centre looks at first. The online rate now against the platform's threshold
// (达标/未达标 in words and colour), devices, channels, streams and viewers, open and overdue tickets (GET
// /api/dashboard, every 15 s); the rate per top-level organisation node; devices gone offline in the last hour;
// the last 7 days' rate as a chart drawn here in SVG (Beijing dates, the threshold line) and the 10 worst channels
// of those days (GET /api/dashboard/trend, every 2 minutes). Every card links to its page.
// The card ids stat-devices, stat-channels, stat-rate, stat-streams and stat-tickets are those of the former page.
// The page's own CSS is a constructed style sheet (adoptedStyleSheets): the console's CSP allows no inline <style>.
import { get } from "./api.js";
import { clear, dot, fmtTime, h, message, pageStyle } from "./dom.js";
import { extend, t } from "./i18n.js";
import { can } from "./session.js";

extend({
  "dash2.title": "运维概览",
  "dash2.updated": "每 15 秒自动刷新 · 最近更新 {time}（北京时间）",
  "dash2.devices": "设备 在线 / 总数",
  "dash2.channels": "通道（点位）在线 / 总数",
  "dash2.rate": "当前在线率",
  "dash2.rate_explain": "在线通道数 ÷ 通道总数（不含已删除的通道），考核值 {threshold}",
  "dash2.pass": "达标",
  "dash2.fail": "未达标",
  "dash2.no_channels": "暂无通道",
  "dash2.streams": "正在转发的视频流",
  "dash2.viewers": "观看 {n} 人",
  "dash2.no_media": "媒体服务未运行",
  "dash2.tickets": "未关闭工单",
  "dash2.overdue": "其中超期 {n} 张",
  "dash2.overdue_link": "超期工单 {n}",
  "dash2.by_org": "各组织在线率",
  "dash2.by_org_hint": "按顶层组织节点汇总当前在线的通道",
  "dash2.col.org": "组织",
  "dash2.col.online": "在线 / 总数",
  "dash2.col.rate": "在线率",
  "dash2.col.result": "考核",
  "dash2.col.channel": "通道",
  "dash2.col.device": "设备",
  "dash2.col.availability": "7 天在线率",
  "dash2.col.offline": "累计离线",
  "dash2.col.outages": "离线次数",
  "dash2.col.now": "当前",
  "dash2.col.time": "离线时间",
  "dash2.col.reason": "原因",
  "dash2.unassigned": "未分组",
  "dash2.worst": "在线率最低的 10 个通道（近 7 天）",
  "dash2.worst_none": "近 7 天没有通道离线",
  "dash2.offline": "最近一小时离线的设备",
  "dash2.offline_none": "最近一小时没有设备离线",
  "dash2.offline_more": "共 {n} 台，显示最近的 {shown} 台",
  "dash2.trend": "近 7 天在线率",
  "dash2.trend_hint": "按平台规则计算；虚线为考核值 {threshold}；日期为北京时间",
  "dash2.trend_rate": "7 天在线率 {rate}",
  "dash2.trend_none": "近 7 天没有可计算的在线记录",
  "dash2.trend_failed": "趋势暂不可用：{error}",
  "dash2.trend_label": "近 7 天在线率折线图，考核值 {threshold}",
  "dash2.threshold": "考核值 {threshold}",
  "dash2.day_rate": "{date}：{rate}",
  "dash2.view": "查看",
  "dash2.no_permission": "您没有设备查看权限，此处不显示设备概览，请使用左侧菜单。",
  "dash2.reason.keepalive_timeout": "心跳超时",
  "dash2.reason.registration_expired": "注册过期",
  "dash2.reason.platform_restart": "平台重启",
  "dash2.reason.unregistered": "设备注销",
  "dash2.reason.other": "其他原因",
  "dash2.dur.d": "{d} 天 {h} 小时",
  "dash2.dur.h": "{h} 小时 {m} 分",
  "dash2.dur.m": "{m} 分钟",
}, {
  "dash2.title": "Operations overview",
  "dash2.updated": "Refreshed every 15 s · last update {time} (Beijing time)",
  "dash2.devices": "Devices online / total",
  "dash2.channels": "Channels online / total",
  "dash2.rate": "Online rate now",
  "dash2.rate_explain": "Channels online ÷ all channels (removed channels excluded), threshold {threshold}",
  "dash2.pass": "Meets the threshold",
  "dash2.fail": "Below the threshold",
  "dash2.no_channels": "No channels yet",
  "dash2.streams": "Streams relayed",
  "dash2.viewers": "{n} viewers",
  "dash2.no_media": "Media service not running",
  "dash2.tickets": "Open tickets",
  "dash2.overdue": "{n} of them overdue",
  "dash2.overdue_link": "Overdue tickets {n}",
  "dash2.by_org": "Online rate by organisation",
  "dash2.by_org_hint": "Channels online now, per top-level organisation node",
  "dash2.col.org": "Organisation",
  "dash2.col.online": "Online / total",
  "dash2.col.rate": "Rate",
  "dash2.col.result": "Assessment",
  "dash2.col.channel": "Channel",
  "dash2.col.device": "Device",
  "dash2.col.availability": "7-day rate",
  "dash2.col.offline": "Offline for",
  "dash2.col.outages": "Outages",
  "dash2.col.now": "Now",
  "dash2.col.time": "Offline since",
  "dash2.col.reason": "Reason",
  "dash2.unassigned": "Unassigned",
  "dash2.worst": "10 channels of the lowest rate (last 7 days)",
  "dash2.worst_none": "No channel was offline in the last 7 days",
  "dash2.offline": "Devices gone offline in the last hour",
  "dash2.offline_none": "No device went offline in the last hour",
  "dash2.offline_more": "{n} in all, the {shown} latest shown",
  "dash2.trend": "Online rate, last 7 days",
  "dash2.trend_hint": "By the platform's rule; the dashed line is the threshold {threshold}; dates in Beijing time",
  "dash2.trend_rate": "7-day rate {rate}",
  "dash2.trend_none": "No presence record to compute in the last 7 days",
  "dash2.trend_failed": "Trend unavailable: {error}",
  "dash2.trend_label": "Line chart of the online rate over the last 7 days, threshold {threshold}",
  "dash2.threshold": "threshold {threshold}",
  "dash2.day_rate": "{date}: {rate}",
  "dash2.view": "View",
  "dash2.no_permission": "You may not view devices: no device overview here; please use the menu.",
  "dash2.reason.keepalive_timeout": "keepalive timeout",
  "dash2.reason.registration_expired": "registration expired",
  "dash2.reason.platform_restart": "platform restart",
  "dash2.reason.unregistered": "unregistered by the device",
  "dash2.reason.other": "other reason",
  "dash2.dur.d": "{d} d {h} h",
  "dash2.dur.h": "{h} h {m} min",
  "dash2.dur.m": "{m} min",
});

const CSS = `
.dash .stats { margin-bottom: 16px; }
.dash a.stat { display: block; color: inherit; text-decoration: none; }
.dash a.stat:hover { border-color: var(--accent, #1f6feb); }
.dash a.stat:focus-visible, .dash a:focus-visible { outline: 2px solid var(--accent, #1f6feb); outline-offset: 2px; }
.dash .stat-value.pass { color: #13653b; }
.dash .stat-value.fail { color: #b42323; }
.dash .bar-fill.fail { background: var(--bad, #d93b3b); }
.dash .stat-sub a { font-weight: 600; }
.dash .stat-sub a.late { color: #b42323; }
.dash .dash-verdict { margin-left: 6px; font-size: 13px; font-weight: 600; vertical-align: middle; }
.dash .dash-grid { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 16px; }
.dash .dash-grid > section.card { margin: 0; min-width: 0; }
.dash .dash-grid > section.wide { grid-column: 1 / -1; }
.dash .dash-card-head { display: flex; justify-content: space-between; align-items: baseline; gap: 8px; flex-wrap: wrap; }
.dash .dash-card-head h2 { font-size: 15px; margin: 0; }
.dash .dash-card-head h2 a { color: inherit; }
.dash .dash-hint { color: var(--muted, #6b7585); font-size: 12px; margin: 4px 0 8px; }
.dash .dash-table-wrap { overflow-x: auto; max-width: 100%; }
.dash .dash-table td, .dash .dash-table th { white-space: nowrap; }
.dash .dash-table td.name { white-space: normal; min-width: 7em; }
.dash .dash-mini { display: inline-block; width: 60px; height: 6px; background: #eef1f5; border-radius: 3px;
  vertical-align: middle; margin-right: 6px; overflow: hidden; }
.dash .dash-mini > span { display: block; height: 100%; background: var(--ok, #1a9f5b); }
.dash .dash-mini > span.fail { background: var(--bad, #d93b3b); }
.dash .dash-chart { width: 100%; height: auto; display: block; }
.dash .dash-chart .grid { stroke: #e2e6ec; stroke-width: 1; }
.dash .dash-chart .axis { fill: #6b7585; font-size: 11px; }
.dash .dash-chart .line { fill: none; stroke: var(--accent, #1f6feb); stroke-width: 2; }
.dash .dash-chart circle.day { stroke: #fff; stroke-width: 1.5; }
.dash .dash-chart circle.day.pass { fill: var(--ok, #1a9f5b); }
.dash .dash-chart circle.day.fail { fill: var(--bad, #d93b3b); }
.dash .dash-chart .threshold { stroke: #d93b3b; stroke-width: 1.5; stroke-dasharray: 6 4; }
.dash .dash-chart .threshold-label { fill: #b42323; font-size: 11px; }
.dash .dash-days { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 8px; padding: 0; list-style: none; }
.dash .dash-days li { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #eef1f5; }
.dash .dash-days li.pass { background: #e4f6ec; color: #13653b; }
.dash .dash-days li.fail { background: #fdecec; color: #8f1d1d; }
@media (max-width: 900px) {
  .dash .dash-grid { grid-template-columns: minmax(0, 1fr); }
}
@media (max-width: 600px) {
  .dash .col-lo { display: none; }
  .dash .stats { grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 10px; }
  .dash .stat { padding: 12px; }
  .dash .stat-value { font-size: 22px; }
}`;

const addStyle = pageStyle(CSS);

// a 0..1 ratio as a percentage: one decimal, none when whole (85%, 66.7%, 99.5%)
function fmtPercent(x) {
  if (x === null || x === undefined || isNaN(x)) return "—";
  return (x * 100).toFixed(1).replace(/\.0$/, "") + "%";
}

// t() of a key this page may not know: its fallback then
function word(key, fallback) {
  const text = t(key);
  return text === key ? fallback : text;
}

function reasonWord(reason) {
  return reason ? word("dash2.reason." + reason, t("dash2.reason.other")) : t("dash2.reason.other");
}

function duration(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return t("dash2.dur.d", { d, h: hh });
  if (hh) return t("dash2.dur.h", { h: hh, m: mm });
  return t("dash2.dur.m", { m: Math.max(mm, s > 0 ? 1 : 0) });
}

function verdict(meets) {
  if (meets === null || meets === undefined) return null;
  return h("span", { class: "badge dash-verdict " + (meets ? "on" : "off") }, meets ? t("dash2.pass") : t("dash2.fail"));
}

function mini(rate, meets) {
  const fill = h("span", { class: meets === false ? "fail" : null });
  fill.style.width = Math.max(0, Math.min(100, (rate || 0) * 100)) + "%";
  return h("span", { class: "dash-mini", "aria-hidden": "true" }, fill);
}

function card(id, title, href, hint, ...body) {
  return h("section", { class: "card", id },
    h("div", { class: "dash-card-head" }, h("h2", null, h("a", { href }, title)),
      h("a", { href, class: "muted" }, t("dash2.view") + " →")),
    hint ? h("p", { class: "dash-hint" }, hint) : null,
    ...body);
}

function table(cols, rows) {
  return h("div", { class: "dash-table-wrap" }, h("table", { class: "table compact dash-table" },
    h("thead", null, h("tr", null, cols.map(([label, lo]) => h("th", { scope: "col", class: lo ? "col-lo" : null }, label)))),
    h("tbody", null, rows)));
}

// ------------------------------------------------------------------ the 7-day chart (SVG drawn here)
const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// Beijing midnight of a YYYY-MM-DD date, in epoch ms
const dayStart = (iso) => Date.parse(iso + "T00:00:00+08:00");

export function trendChart(trend) {
  const W = 640, H = 220, L = 44, R = 12, T = 12, B = 28;
  const t0 = Date.parse(trend.start), t1 = Date.parse(trend.end);
  const end = Math.max(t1, dayStart(trend.days[trend.days.length - 1].date) + 86400e3);
  const rates = [...trend.series, ...trend.days].map((p) => p.rate).filter((r) => r !== null && r !== undefined);
  let lo = Math.min(trend.threshold, ...rates);
  lo = Math.max(0, Math.floor((lo - 0.05) * 10) / 10);
  const x = (ms) => L + ((ms - t0) / (end - t0)) * (W - L - R);
  const y = (r) => T + (1 - (r - lo) / (1 - lo || 1)) * (H - T - B);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "dash-chart", role: "img",
                         "aria-label": t("dash2.trend_label", { threshold: fmtPercent(trend.threshold) }) });
  const steps = Math.round((1 - lo) / 0.1) > 5 ? 0.2 : 0.1;
  for (let r = 1; r >= lo - 1e-9; r -= steps) {
    svg.append(s("line", { class: "grid", x1: L, x2: W - R, y1: y(r), y2: y(r) }),
      s("text", { class: "axis", x: L - 6, y: y(r) + 4, "text-anchor": "end" }, fmtPercent(r)));
  }
  for (const d of trend.days) {
    const a = dayStart(d.date);
    svg.append(s("line", { class: "grid", x1: x(a), x2: x(a), y1: T, y2: H - B }),
      s("text", { class: "axis", x: x(a + 43200e3), y: H - 8, "text-anchor": "middle" }, d.date.slice(5)));
  }
  let path = "";
  let pen = false;
  for (const p of trend.series) {
    if (p.rate === null || p.rate === undefined) { pen = false; continue; }
    path += `${pen ? "L" : "M"}${x(Date.parse(p.at)).toFixed(1)},${y(p.rate).toFixed(1)}`;
    pen = true;
  }
  if (path) svg.append(s("path", { class: "line", d: path }));
  // each day's rate (its own computation) at the middle of the day, coloured against the threshold
  for (const d of trend.days) {
    if (d.rate === null || d.rate === undefined) continue;
    const mid = Math.min(dayStart(d.date) + 43200e3, t1);
    svg.append(s("circle", { class: "day " + (d.rate >= trend.threshold ? "pass" : "fail"), cx: x(mid).toFixed(1),
                             cy: y(d.rate).toFixed(1), r: 4 },
      s("title", null, t("dash2.day_rate", { date: d.date.slice(5), rate: fmtPercent(d.rate) }))));
  }
  const ty = y(trend.threshold);
  svg.append(s("line", { class: "threshold", x1: L, x2: W - R, y1: ty, y2: ty }),
    s("text", { class: "threshold-label", x: W - R - 4, y: ty - 4, "text-anchor": "end" },
      t("dash2.threshold", { threshold: fmtPercent(trend.threshold) })));
  return svg;
}

// ------------------------------------------------------------------ the view
export async function dashboardView(root) {
  addStyle();
  const page = h("div", { class: "dash" });
  const refresh = h("button", { type: "button", id: "dash-refresh" }, t("common.refresh"));
  const updated = h("p", { class: "muted", id: "dash-updated" });
  const failure = h("div", { id: "dash-error" });
  const stats = h("div", { class: "stats", id: "dash-stats" }, message(t("common.loading")));
  const trendBox = h("div", { id: "dash-trend-body" }, message(t("common.loading")));
  const worstBox = h("div", { id: "dash-worst-body" }, message(t("common.loading")));
  const orgBox = h("div", { id: "dash-org-body" });
  const offlineBox = h("div", { id: "dash-offline-body" });
  page.append(h("div", { class: "page-head" }, h("h1", null, t("dash2.title")), h("div", { class: "tools" }, refresh)),
    failure, stats);
  root.append(page);
  if (!can("device.read")) {  // the figures are device figures: not asked for (a refusal is a security event)
    clear(stats).append(message(t("dash2.no_permission")));
    refresh.disabled = true;
    return undefined;
  }
  page.append(h("div", { class: "dash-grid" },
    card("dash-trend", t("dash2.trend"), "#/reports", null, trendBox),
    card("dash-org", t("dash2.by_org"), "#/org", t("dash2.by_org_hint"), orgBox),
    card("dash-worst", t("dash2.worst"), "#/reports", null, worstBox),
    card("dash-offline", t("dash2.offline"), "#/devices?online=false", null, offlineBox)),
  updated);

  let alive = true;
  const stat = (id, href, label, value, { sub, ratio, cls, extra } = {}) => {
    const attrs = { class: "stat", id };
    const el = href ? h("a", { ...attrs, href }) : h("div", attrs);
    el.append(h("div", { class: "stat-label" }, label),
      h("div", { class: "stat-value" + (cls ? " " + cls : "") }, value, extra || null));
    if (sub) el.append(h("div", { class: "stat-sub" }, sub));
    if (ratio !== undefined && ratio !== null && !isNaN(ratio)) {
      const bar = h("div", { class: "bar-fill" + (cls === "fail" ? " fail" : "") });
      bar.style.width = Math.max(0, Math.min(100, ratio * 100)) + "%";
      el.append(h("div", { class: "bar" }, bar));
    }
    return el;
  };

  function drawStats(d) {
    const rate = d.online_rate;
    const cls = d.meets_threshold === true ? "pass" : d.meets_threshold === false ? "fail" : null;
    const cards = [
      stat("stat-devices", "#/devices", t("dash2.devices"), `${d.devices_online} / ${d.devices_total}`,
           { ratio: d.devices_total ? d.devices_online / d.devices_total : null }),
      stat("stat-channels", "#/tree", t("dash2.channels"), `${d.channels_online} / ${d.channels_total}`,
           { ratio: d.channels_total ? d.channels_online / d.channels_total : null }),
      stat("stat-rate", "#/reports", t("dash2.rate"), rate === null ? t("dash2.no_channels") : fmtPercent(rate),
           { cls, extra: verdict(d.meets_threshold), ratio: rate,
             sub: t("dash2.rate_explain", { threshold: fmtPercent(d.threshold) }) }),
      stat("stat-streams", "#/live", t("dash2.streams"), d.streams === null ? "—" : String(d.streams),
           { sub: d.streams === null ? t("dash2.no_media") : t("dash2.viewers", { n: d.viewers ?? 0 }) }),
    ];
    if (d.open_tickets !== null && d.open_tickets !== undefined) {
      const late = d.overdue_tickets ?? 0;
      cards.push(h("div", { class: "stat", id: "stat-tickets" },
        h("div", { class: "stat-label" }, h("a", { href: "#/tickets?open=true" }, t("dash2.tickets"))),
        h("div", { class: "stat-value" }, h("a", { href: "#/tickets?open=true", id: "dash-open-link" },
          String(d.open_tickets))),
        h("div", { class: "stat-sub" }, h("a", { href: "#/tickets?overdue=true", id: "dash-overdue-link",
                                                 class: late ? "late" : null }, t("dash2.overdue_link", { n: late })))));
    }
    clear(stats).append(...cards);
  }

  function drawOrg(d) {
    if (!d.by_org.length) { clear(orgBox).append(message(t("dash2.no_channels"))); return; }
    clear(orgBox).append(table(
      [[t("dash2.col.org")], [t("dash2.col.online")], [t("dash2.col.rate")], [t("dash2.col.result"), true]],
      d.by_org.map((o) => h("tr", { dataset: { org: o.org_node_id ?? "" } },
        h("td", { class: "name" }, o.org_node_id === null ? t("dash2.unassigned") : o.name || "—"),
        h("td", null, `${o.channels_online} / ${o.channels_total}`),
        h("td", null, mini(o.rate, o.meets_threshold), fmtPercent(o.rate)),
        h("td", { class: "col-lo" }, verdict(o.meets_threshold) || "—")))));
  }

  function drawOffline(d) {
    if (!d.offline_recent.length) { clear(offlineBox).append(message(t("dash2.offline_none"))); return; }
    clear(offlineBox);
    if (d.offline_recent_total > d.offline_recent.length) {
      offlineBox.append(h("p", { class: "dash-hint" },
        t("dash2.offline_more", { n: d.offline_recent_total, shown: d.offline_recent.length })));
    }
    offlineBox.append(table([[t("dash2.col.device")], [t("dash2.col.time")], [t("dash2.col.reason")]],
        d.offline_recent.map((r) => h("tr", { dataset: { device: r.device_id } },
          h("td", { class: "name" }, dot(false), " ",
            h("a", { href: `#/device/${encodeURIComponent(r.device_id)}` }, r.name || r.device_id)),
          h("td", null, fmtTime(r.offline_at)),
          h("td", null, reasonWord(r.reason))))));
  }

  function drawTrend(tr) {
    const known = [...tr.series, ...tr.days].some((p) => p.rate !== null && p.rate !== undefined);
    clear(trendBox).append(
      h("p", { class: "dash-hint" }, t("dash2.trend_hint", { threshold: fmtPercent(tr.threshold) }),
        tr.rate !== null && tr.rate !== undefined ? [" · ", t("dash2.trend_rate", { rate: fmtPercent(tr.rate) }), " ",
          verdict(tr.rate >= tr.threshold)] : null),
      known ? trendChart(tr) : message(t("dash2.trend_none")),
      h("ul", { class: "dash-days", id: "dash-days" }, tr.days.map((d) => h("li", {
        class: d.rate === null ? null : d.rate >= tr.threshold ? "pass" : "fail" },
        t("dash2.day_rate", { date: d.date.slice(5), rate: fmtPercent(d.rate) })))));
    if (!tr.worst.length) { clear(worstBox).append(message(t("dash2.worst_none"))); return; }
    clear(worstBox).append(table(
      [[t("dash2.col.channel")], [t("dash2.col.availability")], [t("dash2.col.offline"), true],
       [t("dash2.col.outages"), true], [t("dash2.col.now")]],
      tr.worst.map((w) => h("tr", { dataset: { channel: w.channel_id, device: w.device_id } },
        h("td", { class: "name" }, h("a", { href: `#/channel/${encodeURIComponent(w.channel_id)}?device=${
          encodeURIComponent(w.device_id)}`, title: `${w.device_id} / ${w.channel_id}` }, w.name || w.channel_id)),
        h("td", null, mini(w.availability, w.availability >= tr.threshold), fmtPercent(w.availability)),
        h("td", { class: "col-lo" }, duration(w.offline_s)),
        h("td", { class: "col-lo" }, String(w.outages)),
        h("td", null, dot(w.online), " ", w.online ? t("common.online") : t("common.offline"))))));
  }

  async function fill() {
    try {
      const d = await get("/api/dashboard");
      if (!alive) return;
      clear(failure);
      drawStats(d);
      drawOrg(d);
      drawOffline(d);
      updated.textContent = t("dash2.updated", { time: fmtTime(new Date()) });
    } catch (err) {
      if (alive) clear(failure).append(message(`${t("common.error")}: ${err.message || err}`, "error"));
    }
  }

  async function fillTrend() {
    try {
      const tr = await get("/api/dashboard/trend");
      if (alive) drawTrend(tr);
    } catch (err) {
      if (!alive) return;
      const text = t("dash2.trend_failed", { error: err.message || String(err) });
      clear(trendBox).append(message(text, "error"));
      clear(worstBox).append(message(text, "error"));
    }
  }

  refresh.addEventListener("click", () => { fill(); fillTrend(); });
  await fill();
  fillTrend();
  const timers = [setInterval(fill, 15000), setInterval(fillTrend, 120000)];
  return () => { alive = false; timers.forEach(clearInterval); };
}
