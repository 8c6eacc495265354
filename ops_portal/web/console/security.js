// Security alerts (安全告警): the live alert panel fed by the server's event stream (/api/security/stream,
// read with fetch() so that the bearer token stays in a header), open alerts acknowledged with a note, the
// blocked addresses with unblock, and the security events with their filters.  Kinds, rules and severities are
// shown in words (the API sends them in Chinese and English), never as codes.
import { ApiError, del, get, openEventStream, post } from "./api.js";
import { beep } from "./alarms.js";
import { clear, field, fmtTime, fromLocalInput, h, message, modal, toast } from "./dom.js";
import { extend, getLang, t } from "./i18n.js";
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

function detailText(d) {
  if (!d || typeof d !== "object") return "—";
  const parts = [];
  for (const [k, v] of Object.entries(d)) {
    if (v === null || v === undefined || v === "" || k.endsWith("_en") && zh() || k.endsWith("_zh") && !zh()) continue;
    parts.push(`${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  return parts.join(" · ") || "—";
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
  const kindSel = h("select", { id: "sec-kind" }, h("option", { value: "" }, t("sec.all_kinds")),
    vocab.kinds.map((k) => h("option", { value: k.kind }, zh() ? k.zh : k.en)));
  const sevSel = h("select", { id: "sec-severity" }, h("option", { value: "" }, t("sec.all_severities")),
    Object.entries(vocab.severities).map(([s, w]) => h("option", { value: s }, zh() ? w : s)));
  const ipIn = h("input", { id: "sec-ip", placeholder: t("sec.source_ip"), maxlength: 64, size: 16 });
  const userIn = h("input", { id: "sec-user", placeholder: t("sec.user"), maxlength: 64, size: 12 });
  const devIn = h("input", { id: "sec-device", placeholder: t("sec.device"), maxlength: 64, size: 22 });
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
      h("td", { class: "muted small", dataset: { code: "detail" } }, detailText(e.detail)));
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
