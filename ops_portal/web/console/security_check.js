// 安全检查 (security self-check): runs GET /api/security/check, shows the counts by severity and every finding,
// grouped by severity, with its words, the fix and what it is about (users, devices, settings); the PDF / XLSX
// report is fetched with the bearer token (never in a URL) and handed to the browser as a file.
import { ApiError, get, token } from "./api.js";
import { clear, fmtTime, h, message, toast } from "./dom.js";
import { extend, getLang, serverText, t } from "./i18n.js";

extend({
  "nav.security_check": "安全检查",
  "sc.run": "重新检查",
  "sc.running": "正在检查…",
  "sc.pdf": "下载 PDF 报告",
  "sc.xlsx": "下载 XLSX 报告",
  "sc.downloading": "正在生成报告…",
  "sc.downloaded": "报告已下载",
  "sc.checked_at": "检查时间（北京时间）",
  "sc.took": "耗时 {s} 秒",
  "sc.scope": "用户 {users} 个，设备 {devices} 台",
  "sc.none": "未发现问题",
  "sc.fix": "修复建议：",
  "sc.group": "{sev}（{n}）",
  "sc.count": "{n} 项",
  "sc.more": "另有 {n} 项，见 XLSX 报告",
  "sc.show_all": "全部显示",
  "sc.sev.critical": "严重",
  "sc.sev.warning": "警告",
  "sc.sev.info": "提示",
  "sc.kind.user": "用户",
  "sc.kind.device": "设备",
  "sc.kind.setting": "设置",
  "sc.kind.platform": "平台",
  "sc.kind.source": "数据来源",
  "sc.col.kind": "类型",
  "sc.col.id": "编号",
  "sc.col.name": "名称",
  "sc.col.detail": "说明",
  "sc.advisory": "公告",
  "sc.hint": "弱口令（用户与设备，设备口令由存储的摘要 HA1 比对，不保存明文）、长期未用的账户、过期密码、管理员双因素、设备固件漏洞、HTTPS、SIP 锁定、审计导出、备份与时钟。",
}, {
  "nav.security_check": "Security check",
  "sc.run": "Check again",
  "sc.running": "Checking…",
  "sc.pdf": "Download PDF report",
  "sc.xlsx": "Download XLSX report",
  "sc.downloading": "Generating the report…",
  "sc.downloaded": "Report downloaded",
  "sc.checked_at": "Checked at (Beijing time)",
  "sc.took": "took {s} s",
  "sc.scope": "{users} users, {devices} devices",
  "sc.none": "No finding",
  "sc.fix": "Fix: ",
  "sc.group": "{sev} ({n})",
  "sc.count": "{n} item(s)",
  "sc.more": "{n} more: see the XLSX report",
  "sc.show_all": "Show all",
  "sc.sev.critical": "Critical",
  "sc.sev.warning": "Warning",
  "sc.sev.info": "Info",
  "sc.kind.user": "User",
  "sc.kind.device": "Device",
  "sc.kind.setting": "Setting",
  "sc.kind.platform": "Platform",
  "sc.kind.source": "Fact source",
  "sc.col.kind": "Kind",
  "sc.col.id": "Id",
  "sc.col.name": "Name",
  "sc.col.detail": "Detail",
  "sc.advisory": "Advisory",
  "sc.hint": "Weak passwords (users and devices; device passwords are compared through their stored digest HA1, never kept in plain), unused accounts, old passwords, administrators' second factor, device firmware advisories, HTTPS, SIP lockout, audit export, backups and the clock.",
});

const SEVERITIES = ["critical", "warning", "info"];
const BADGE = { critical: "off", warning: "warn", info: "" };
const SHOWN = 50; // subjects shown per finding before "show all"

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

function half(obj, key) {
  return getLang() === "en" ? obj[key + "_en"] : obj[key + "_zh"];
}

function word(prefix, value) {
  const key = `${prefix}.${value}`;
  const text = t(key);
  return text === key ? String(value ?? "—") : text;
}

function subjectTable(f, limit) {
  const rows = f.subjects.slice(0, limit);
  return h("table", { class: "table compact sc-subjects" },
    h("thead", null, h("tr", null, ["sc.col.kind", "sc.col.id", "sc.col.name", "sc.col.detail"].map((k) => h("th", null, t(k))))),
    h("tbody", null, rows.map((s) => h("tr", { dataset: { kind: s.kind, id: s.id } },
      h("td", null, word("sc.kind", s.kind)),
      h("td", { class: "mono" }, s.id),
      h("td", null, s.name || "—"),
      h("td", null, s.detail ? serverText(s.detail) : "—")))));
}

function findingCard(f) {
  const body = h("div", null, subjectTable(f, SHOWN));
  if (f.subjects.length > SHOWN) {
    const more = h("button", { type: "button", class: "btn small ghost", onclick: () => {
      clear(body).append(subjectTable(f, f.subjects.length));
    } }, t("sc.show_all"));
    body.append(h("p", { class: "muted" }, t("sc.more", { n: f.subjects.length - SHOWN }), " ", more));
  }
  return h("section", { class: "card sc-finding", dataset: { code: f.code, severity: f.severity } },
    h("h3", null, h("span", { class: "badge " + BADGE[f.severity] }, word("sc.sev", f.severity)), " ",
      h("span", { class: "sc-title" }, half(f, "title")), " ",
      h("span", { class: "muted" }, t("sc.count", { n: f.count })),
      f.ref ? h("span", { class: "muted mono" }, ` · ${t("sc.advisory")} ${f.ref}`) : null),
    h("p", { class: "sc-fix" }, h("strong", null, t("sc.fix")), half(f, "fix")),
    body);
}

function fileName(r, fmt) {
  const cd = r.headers.get("content-disposition") || "";
  const m = cd.match(/filename="([^"]+)"/);
  return m ? m[1] : `security-check.${fmt}`;
}

export async function securityCheckView(root) {
  const runBtn = h("button", { type: "button", id: "sc-run", class: "primary", onclick: () => run() }, t("sc.run"));
  const pdfBtn = h("button", { type: "button", id: "sc-pdf", onclick: () => download("pdf") }, t("sc.pdf"));
  const xlsxBtn = h("button", { type: "button", id: "sc-xlsx", onclick: () => download("xlsx") }, t("sc.xlsx"));
  const summary = h("section", { class: "card", id: "sc-summary" }, message(t("sc.running")));
  const list = h("div", { id: "sc-findings" });
  root.append(pageHead(t("nav.security_check"), runBtn, pdfBtn, xlsxBtn),
    h("p", { class: "muted" }, t("sc.hint")), summary, list);
  let alive = true;

  async function run() {
    runBtn.disabled = true;
    clear(summary).append(message(t("sc.running")));
    clear(list);
    try {
      const r = await get("/api/security/check");
      if (!alive) return;
      show(r);
    } catch (err) {
      clear(summary).append(message(err instanceof ApiError ? err.message : String(err), "error"));
    } finally {
      runBtn.disabled = false;
    }
  }

  function show(r) {
    const checked = r.checked || {};
    clear(summary).append(
      h("div", { class: "stats", id: "sc-counts" }, SEVERITIES.map((sev) =>
        h("div", { class: "stat", dataset: { severity: sev } },
          h("div", { class: "stat-label" }, h("span", { class: "badge " + BADGE[sev] }, word("sc.sev", sev))),
          h("div", { class: "stat-value" }, String(r.counts[sev] ?? 0))))),
      h("p", { class: "muted", id: "sc-when" }, `${t("sc.checked_at")}: ${fmtTime(r.generated_at)}`,
        checked.users != null ? " · " + t("sc.scope", { users: checked.users, devices: checked.devices ?? "—" }) : "",
        checked.duration_s != null ? " · " + t("sc.took", { s: checked.duration_s }) : ""));
    clear(list);
    if (!r.findings.length) {
      list.append(h("section", { class: "card" }, h("p", { class: "empty", id: "sc-none" }, t("sc.none"))));
      return;
    }
    for (const sev of SEVERITIES) {
      const group = r.findings.filter((f) => f.severity === sev);
      if (!group.length) continue;
      list.append(h("div", { class: "sc-group", dataset: { severity: sev } },
        h("h2", { class: "sc-group-head" }, t("sc.group", { sev: word("sc.sev", sev), n: group.length })), group.map(findingCard)));
    }
  }

  async function download(fmt) {
    const btn = fmt === "pdf" ? pdfBtn : xlsxBtn;
    btn.disabled = true;
    toast(t("sc.downloading"));
    try {
      // the file needs the bearer token: fetch it, then hand the browser a blob
      const r = await fetch(`/api/security/check/report?format=${fmt}`, { headers: { Authorization: "Bearer " + token.get() } });
      if (!r.ok) {
        const data = await r.json().catch(() => null);
        toast(data && data.message ? serverText(data.message) : `HTTP ${r.status}`, "error");
        return;
      }
      const url = URL.createObjectURL(await r.blob());
      const a = h("a", { href: url, download: fileName(r, fmt) });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      toast(t("sc.downloaded"), "ok");
    } finally {
      btn.disabled = false;
    }
  }

  await run();
  return () => { alive = false; };
}
