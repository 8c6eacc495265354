// 时间同步 (issue 16): the platform's clock (its NTP server, synchronised or not, its offset and what it checks
// against), the requirement's measure (the share of devices whose clock stayed within 1 s over 24 h) and each
// visible device's clock (current skew, worst over 24 h, within the limit, last checked in Beijing time) with a
// 立即检测 button that samples it now (DeviceStatus).
import { get, post } from "./api.js";
import { badge, clear, fmtPercent, fmtTime, h, message, toast } from "./dom.js";
import { extend, t } from "./i18n.js";

extend({
  "nav.time": "时间同步",
  "clock.platform": "平台时钟",
  "clock.ntp_server": "NTP 服务",
  "clock.ntp_on": "运行中，{host} 端口 {port}（UDP）",
  "clock.ntp_off": "未运行",
  "clock.ntp_disabled": "已关闭（GBOPS_NTP_PORT=0）",
  "clock.sync": "同步状态",
  "clock.synced": "已同步",
  "clock.unsynced": "未同步",
  "clock.unchecked": "尚未检测",
  "clock.offset": "平台时钟偏差",
  "clock.reference": "校时基准",
  "clock.ref_local": "本机时钟（未配置上级 NTP 服务器，层级 {stratum}）",
  "clock.ref_servers": "上级 NTP 服务器：{servers}",
  "clock.checked_at": "最近检测",
  "clock.answers": "{server}：{result}",
  "clock.no_answer": "无应答",
  "clock.compliance": "时钟达标率",
  "clock.compliance_explain": "24 小时内时钟误差不超过 1 秒的设备占比",
  "clock.compliance_counts": "{within} / {measured} 台设备达标；{unmeasured} 台尚无采样",
  "clock.compliance_none": "24 小时内尚无设备时钟采样",
  "clock.devices_over": "超出 1 秒的设备：{list}",
  "clock.devices": "设备时钟",
  "clock.col.device": "设备",
  "clock.col.state": "状态",
  "clock.col.skew": "当前偏差",
  "clock.col.worst": "24 小时最大偏差",
  "clock.col.within": "是否达标",
  "clock.col.samples": "采样次数",
  "clock.col.checked": "最近检测（北京时间）",
  "clock.check": "立即检测",
  "clock.checking": "检测中…",
  "clock.checked": "{device}：偏差 {skew}",
  "clock.within": "达标",
  "clock.over": "超限",
  "clock.no_sample": "无采样",
  "clock.none": "没有可见的设备",
  "clock.limit_note": "偏差为设备时钟减平台时钟，正数表示设备超前；DeviceTime 只精确到秒，± 为估计的不确定度。限值 {limit} 秒。",
}, {
  "nav.time": "Time sync",
  "clock.platform": "Platform clock",
  "clock.ntp_server": "NTP server",
  "clock.ntp_on": "running on {host} port {port} (UDP)",
  "clock.ntp_off": "not running",
  "clock.ntp_disabled": "off (GBOPS_NTP_PORT=0)",
  "clock.sync": "Synchronisation",
  "clock.synced": "synchronised",
  "clock.unsynced": "not synchronised",
  "clock.unchecked": "not checked yet",
  "clock.offset": "Platform offset",
  "clock.reference": "Reference",
  "clock.ref_local": "the host clock (no upstream NTP servers configured; stratum {stratum})",
  "clock.ref_servers": "upstream NTP servers: {servers}",
  "clock.checked_at": "Last checked",
  "clock.answers": "{server}: {result}",
  "clock.no_answer": "no answer",
  "clock.compliance": "Clock compliance",
  "clock.compliance_explain": "share of devices whose clock error stayed within 1 s over 24 h",
  "clock.compliance_counts": "{within} / {measured} devices within; {unmeasured} not sampled yet",
  "clock.compliance_none": "no device clock samples in the last 24 h",
  "clock.devices_over": "devices beyond 1 s: {list}",
  "clock.devices": "Device clocks",
  "clock.col.device": "Device",
  "clock.col.state": "State",
  "clock.col.skew": "Current skew",
  "clock.col.worst": "Worst over 24 h",
  "clock.col.within": "Within limit",
  "clock.col.samples": "Samples",
  "clock.col.checked": "Last checked (Beijing time)",
  "clock.check": "Check now",
  "clock.checking": "checking…",
  "clock.checked": "{device}: skew {skew}",
  "clock.within": "within",
  "clock.over": "over",
  "clock.no_sample": "no sample",
  "clock.none": "no visible devices",
  "clock.limit_note": "Skew is the device clock minus the platform clock (positive: the device is ahead); DeviceTime has whole seconds only, ± is the estimate's uncertainty. Limit {limit} s.",
});

function seconds(value, uncertainty) {
  if (value === null || value === undefined) return "—";
  const s = (value >= 0 ? "+" : "") + value.toFixed(3) + " s";
  return uncertainty === null || uncertainty === undefined ? s : `${s} ± ${uncertainty.toFixed(2)}`;
}

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

function row(label, value, id) {
  return h("tr", null, h("th", null, label), h("td", { id }, value));
}

export async function clockView(root) {
  const platform = h("section", { class: "card", id: "clock-platform" });
  const compliance = h("section", { class: "card", id: "clock-compliance" });
  const table = h("table", { class: "table", id: "clock-devices" });
  const note = h("p", { class: "muted", id: "clock-note" });
  const refresh = h("button", { type: "button", id: "clock-refresh", onclick: () => reload().catch(report) },
    t("common.refresh"));
  root.append(pageHead(t("nav.time"), refresh), platform, compliance,
    h("section", { class: "card" }, h("h2", null, t("clock.devices")), note, table));

  function report(err) { toast(err.message || String(err), "error"); }

  function drawPlatform(st) {
    const ntp = st.ntp_server || {};
    const server = ntp.running
      ? badge(t("clock.ntp_on", { host: ntp.host, port: ntp.port }), "on")
      : h("span", null, badge(ntp.enabled ? t("clock.ntp_off") : t("clock.ntp_disabled"), ntp.enabled ? "off" : ""),
        ntp.enabled && ntp.error ? h("div", { class: "muted", id: "clock-ntp-error" }, ntp.error) : null);
    const sync = st.synchronised === null
      ? badge(t("clock.unchecked"), "warn")
      : badge(st.synchronised ? t("clock.synced") : t("clock.unsynced"), st.synchronised ? "on" : "off");
    const servers = (st.servers || []).map((s) => s.server);
    const reference = st.reference === "local"
      ? t("clock.ref_local", { stratum: st.stratum })
      : t("clock.ref_servers", { servers: servers.join("、") });
    const answers = st.reference === "servers" ? (st.servers || []).map((s) => h("div", { class: "muted" },
      t("clock.answers", { server: s.server, result: s.offset_s !== null && s.offset_s !== undefined
        ? seconds(s.offset_s) + (s.stratum ? ` (stratum ${s.stratum})` : "") : (s.error || t("clock.no_answer")) })))
      : null;
    clear(platform).append(h("h2", null, t("clock.platform")), h("table", { class: "table" }, h("tbody", null,
      row(t("clock.ntp_server"), server, "clock-ntp"),
      row(t("clock.sync"), sync, "clock-sync"),
      row(t("clock.offset"), st.offset_s === null ? "—" : seconds(st.offset_s), "clock-offset"),
      row(t("clock.reference"), h("span", null, reference, answers), "clock-reference"),
      row(t("clock.checked_at"), fmtTime(st.checked_at), "clock-checked-at"))));
  }

  function drawCompliance(c) {
    const over = (c.devices_over || []).map((d) => `${d.device_id} (${seconds(d.worst_24h_s)})`);
    clear(compliance).append(h("h2", null, t("clock.compliance")),
      h("div", { class: "stat-value", id: "clock-share" }, c.share === null ? "—" : fmtPercent(c.share)),
      h("p", null, t("clock.compliance_explain")),
      h("p", { class: "muted", id: "clock-counts" }, c.measured ? t("clock.compliance_counts", c) : t("clock.compliance_none")),
      over.length ? message(t("clock.devices_over", { list: over.join("、") }), "error") : null);
  }

  function drawDevices(list) {
    const head = ["clock.col.device", "clock.col.state", "clock.col.skew", "clock.col.worst", "clock.col.within",
      "clock.col.samples", "clock.col.checked", "common.actions"];
    const rows = list.items.map((d) => {
      const button = h("button", { type: "button", class: "small", dataset: { act: "check" }, disabled: !d.online },
        t("clock.check"));
      button.addEventListener("click", async () => {
        button.disabled = true;
        button.textContent = t("clock.checking");
        try {
          const r = await post(`/api/devices/${encodeURIComponent(d.device_id)}/clock/check`);
          toast(t("clock.checked", { device: d.device_id, skew: seconds(r.skew_s, r.uncertainty_s) }),
            r.within_limit ? "info" : "error");
          await reload();
        } catch (err) {
          report(err);
          button.disabled = false;
          button.textContent = t("clock.check");
        }
      });
      const within = d.within_limit === null ? badge(t("clock.no_sample"), "")
        : badge(d.within_limit ? t("clock.within") : t("clock.over"), d.within_limit ? "on" : "off");
      return h("tr", { dataset: { device: d.device_id } },
        h("td", null, d.name ? [h("strong", null, d.name), h("div", { class: "mono muted" }, d.device_id)]
          : h("span", { class: "mono" }, d.device_id)),
        h("td", null, badge(d.online ? t("common.online") : t("common.offline"), d.online ? "on" : "off")),
        h("td", { class: "clk-skew mono" }, seconds(d.skew_s, d.uncertainty_s)),
        h("td", { class: "clk-worst mono" }, seconds(d.worst_24h_s)),
        h("td", { class: "clk-within" }, within),
        h("td", { class: "clk-samples" }, String(d.samples)),
        h("td", { class: "clk-checked" }, fmtTime(d.last_checked)),
        h("td", { class: "actions" }, button));
    });
    clear(table).append(h("thead", null, h("tr", null, head.map((k) => h("th", null, t(k))))),
      h("tbody", null, rows.length ? rows
        : h("tr", null, h("td", { colspan: head.length, class: "empty muted" }, t("clock.none")))));
  }

  async function reload() {
    const [st, c, list] = await Promise.all([get("/api/time/status"), get("/api/time/compliance"),
      get("/api/time/devices", { limit: 500 })]);
    drawPlatform(st);
    drawCompliance(c);
    note.textContent = t("clock.limit_note", { limit: st.clock_skew_limit_s });
    drawDevices(list);
  }

  await reload();
}
