// 级联平台: the upper platforms this platform registers with (issue 15). The list with live status (refreshed every
// few seconds), the add/edit form, enable/disable, delete; for the selected platform the share editor (organisation
// nodes with check boxes, single channels with upward id / name / civil code overrides), the catalog preview and
// the recent requests from the audit log. The password is write-only: the API never returns it.
import { ApiError, del, get, patch, post, put } from "./api.js";
import { loadChannels, normaliseTree } from "./data.js";
import { badge, clear, field, fmtTime, h, message, modal, toast } from "./dom.js";
import { getLang, serverText, t } from "./i18n.js";
import { loadRegions, regionEl } from "./regions.js";

const BASE = "/api/cascade/platforms";
const REFRESH_MS = 5000;
const STATE_KIND = { registered: "on", registering: "warn", offline: "off", disabled: "", other_node: "" };
const FIELDS = ["name", "server_id", "server_domain", "host", "port", "transport", "local_id", "username", "password",
                "expires", "keepalive_s", "charset", "gb_version", "ptz_level", "watermark", "enabled"];

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

export function stateLabel(state) {
  const key = "cascade.state." + state;
  const text = t(key);
  return text === key ? String(state || "—") : text;
}

function word(prefix, value) {
  const key = `${prefix}.${value}`;
  const text = t(key);
  return text === key ? String(value ?? "—") : text;
}

// a 422 from the API: name the fields by their labels
function formError(err) {
  if (err instanceof ApiError && err.code === "validation_error" && err.body && Array.isArray(err.body.details)) {
    const names = err.body.details.map((d) => {
      const loc = d.loc || [];
      const name = String(loc[loc.length - 1] ?? "");
      return FIELDS.includes(name) ? t("cascade.f." + name) : name;
    });
    return new Error(t("cascade.check_fields", { fields: [...new Set(names)].join("、") }));
  }
  return err;
}

// ------------------------------------------------------------------ the request list's words
function requestWords(e) {
  const d = e.detail || {};
  switch (e.action) {
    case "cascade.invite": return word("cascade.req.invite", d.kind || "live");
    case "cascade.bye": return t("cascade.req.bye");
    case "cascade.catalog": return t("cascade.req.catalog");
    case "cascade.query": return word("cascade.req.query", d.cmd_type || "DeviceInfo");
    case "cascade.control": return d.command ? `${t("cascade.req.control")}（${d.command}）` : t("cascade.req.control");
    case "cascade.register": return `${t("cascade.req.register")}：${stateLabel(d.state)}`;
    case "cascade.refused": return `${t("cascade.req.refused")}${d.method ? "（" + d.method + "）" : ""}`;
    default: return getLang() === "en" ? e.label_en : e.label_zh;
  }
}

function requestChannel(e) {
  const d = e.detail || {};
  if (d.channel_id) return d.device_id ? `${d.channel_id} @ ${d.device_id}` : d.channel_id;
  if (d.upward_id) return d.upward_id;
  if (d.device_id) return d.device_id;
  if (d.target && typeof d.target === "string") return d.target;
  return e.target && e.target.type === "channel" ? e.target.id : "—";
}

function requestResult(e) {
  const d = e.detail || {};
  if (e.action.startsWith("cascade.platform_") || e.action === "cascade.share") {
    return h("span", { class: "muted" }, t("cascade.req.by", { name: (e.actor && e.actor.name) || "—" }));
  }
  let ok = null;
  const r = typeof d.result === "string" ? d.result.toLowerCase() : d.result;
  if (r === "ok" || r === "success" || r === true) ok = true;
  else if (r === "error" || r === "failed" || r === "refused" || r === false) ok = false;
  else if (typeof d.status === "number") ok = d.status < 300;
  if (e.action === "cascade.refused") ok = false;
  const parts = [ok === null ? (d.result != null ? String(d.result) : "—") : t(ok ? "cascade.req.ok" : "cascade.req.failed")];
  if (typeof d.status === "number" && d.status >= 300) parts.push(`SIP ${d.status}`);
  if (d.items != null) parts.push(t("cascade.req.items", { n: d.items }));
  const reason = d.reason || d.error || "";
  return h("span", { title: reason }, ok === null ? parts.join(" · ") : badge(parts.join(" · "), ok ? "on" : "off"),
    reason ? h("div", { class: "muted" }, serverText(String(reason))) : null);
}

// ------------------------------------------------------------------ the page
export async function cascadeView(root) {
  const platforms = [];
  let selected = null; // platform id
  let tab = "share";
  const table = h("table", { class: "table", id: "cascade-table" });
  const detail = h("section", { class: "card hidden", id: "cascade-detail" });
  const add = h("button", { type: "button", class: "primary", id: "cascade-new", onclick: () => edit(null) },
    t("cascade.new"));
  const refresh = h("button", { type: "button", id: "cascade-refresh", onclick: () => reload().catch(report) },
    t("common.refresh"));
  root.append(pageHead(t("nav.cascade"), refresh, add), h("section", { class: "card" }, table), detail);

  function report(err) { toast(err.message || String(err), "error"); }

  function draw() {
    const head = ["cascade.col.platform", "cascade.col.address", "cascade.col.state", "cascade.col.keepalive",
      "cascade.col.until", "cascade.col.streams", "cascade.col.error", "common.actions"];
    const rows = platforms.map((p) => {
      const s = p.status || {};
      const state = p.enabled ? s.state || "offline" : "disabled";
      return h("tr", { dataset: { platform: p.id }, class: p.id === selected ? "selected" : "" },
        h("td", null, h("strong", null, p.name), h("div", { class: "mono muted" }, p.server_id)),
        h("td", { class: "mono" }, `${p.host}:${p.port}`, h("div", { class: "muted" }, word("cascade.transport", p.transport))),
        h("td", null, badge(stateLabel(state), STATE_KIND[state] ?? ""),
          state === "other_node" && s.node_id
            ? h("div", { class: "mono muted cas-node" }, t("cascade.on_node", { node: s.node_id })) : null,
          p.warnings && p.warnings.length
          ? h("div", { class: "muted", title: p.warnings.map(serverText).join("\n") }, t("cascade.has_warning")) : null),
        h("td", null, fmtTime(s.last_keepalive)),
        h("td", null, fmtTime(s.registered_until)),
        h("td", { class: "cas-streams" }, String(s.streams ?? 0)),
        h("td", { class: "cas-error" }, s.last_error ? serverText(s.last_error) : "—"),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "small", dataset: { act: "edit" }, onclick: () => edit(p) }, t("common.edit")),
          h("button", { type: "button", class: "small", dataset: { act: "toggle" }, onclick: () => toggle(p) },
            p.enabled ? t("cascade.disable") : t("cascade.enable")),
          h("button", { type: "button", class: "small", dataset: { act: "share" }, onclick: () => open(p.id, "share") },
            t("cascade.tab.share")),
          h("button", { type: "button", class: "small", dataset: { act: "preview" }, onclick: () => open(p.id, "preview") },
            t("cascade.tab.preview")),
          h("button", { type: "button", class: "small", dataset: { act: "requests" }, onclick: () => open(p.id, "requests") },
            t("cascade.tab.requests")),
          h("button", { type: "button", class: "small danger", dataset: { act: "delete" }, onclick: () => remove(p) },
            t("common.delete"))));
    });
    clear(table).append(h("thead", null, h("tr", null, head.map((k) => h("th", null, t(k))))),
      h("tbody", null, rows.length ? rows
        : h("tr", null, h("td", { colspan: head.length, class: "empty muted" }, t("cascade.none")))));
  }

  async function reload() {
    const r = await get(BASE);
    platforms.splice(0, platforms.length, ...r.items);
    if (selected !== null && !platforms.some((p) => p.id === selected)) { selected = null; clear(detail).classList.add("hidden"); }
    draw();
  }

  async function toggle(p) {
    try {
      await patch(`${BASE}/${p.id}`, { enabled: !p.enabled });
      toast(p.enabled ? t("cascade.disabled_done") : t("cascade.enabled_done"), "ok");
      await reload();
    } catch (err) { report(err); }
  }

  async function remove(p) {
    if (!confirm(t("cascade.confirm_delete", { name: p.name }))) return;
    try {
      await del(`${BASE}/${p.id}`);
      toast(t("cascade.deleted"), "ok");
      await reload();
    } catch (err) { report(err); }
  }

  // ---------------------------------------------------------------- add / edit
  function edit(p) {
    const v = (k, dflt) => (p && p[k] !== undefined && p[k] !== null ? p[k] : dflt);
    const input = (name, attrs = {}) => h("input", { name, id: "cas-" + name.replace("_", "-"), value: v(name, ""), ...attrs });
    const select = (name, options, dflt) => {
      const sel = h("select", { name, id: "cas-" + name.replace("_", "-") },
        options.map((o) => h("option", { value: o }, word("cascade." + name, o))));
      sel.value = String(v(name, dflt));
      return sel;
    };
    const f = {
      name: input("name", { required: true, maxlength: 64 }),
      server_id: input("server_id", { required: true, pattern: "[0-9]{20}", maxlength: 20, class: "mono" }),
      server_domain: input("server_domain", { maxlength: 64, class: "mono" }),
      host: input("host", { required: true, maxlength: 253 }),
      port: input("port", { type: "number", min: 1, max: 65535, required: true, value: v("port", 5060) }),
      transport: select("transport", ["udp", "tcp", "tls"], "udp"),
      local_id: input("local_id", { pattern: "[0-9]{20}", maxlength: 20, class: "mono" }),
      username: input("username", { maxlength: 64, autocomplete: "off" }),
      password: h("input", { name: "password", id: "cas-password", type: "password", autocomplete: "new-password",
                             maxlength: 128, required: !p, placeholder: p ? t("cascade.keep_password") : "" }),
      expires: input("expires", { type: "number", min: 30, max: 86400, required: true, value: v("expires", 3600) }),
      keepalive_s: input("keepalive_s", { type: "number", min: 5, max: 3600, required: true, value: v("keepalive_s", 60) }),
      charset: select("charset", ["GB2312", "GB18030", "UTF-8"], "GB2312"),
      gb_version: select("gb_version", ["2016", "2022"], "2016"),
      ptz_level: input("ptz_level", { type: "number", min: 1, max: 9, required: true, value: v("ptz_level", 5) }),
      watermark: select("watermark", ["tag", "visible"], "tag"),
      enabled: h("input", { type: "checkbox", name: "enabled", id: "cas-enabled", checked: v("enabled", true) }),
    };
    const hint = (k) => (k === "password" && p ? t("cascade.keep_password") : t("cascade.h." + k));
    const grid = h("div", { class: "form-grid" },
      FIELDS.filter((k) => k !== "enabled").map((k) => field(t("cascade.f." + k), f[k], hint(k))));
    modal(p ? `${t("cascade.edit")}：${p.name}` : t("cascade.new"), (body) => {
      body.append(grid, h("label", { class: "check" }, f.enabled, t("cascade.f.enabled"), h("small", null, t("cascade.h.enabled"))),
        p && p.has_password ? h("p", { class: "muted" }, t("cascade.password_set")) : null);
    }, async () => {
      const data = {};
      for (const k of FIELDS) {
        const el = f[k];
        let value = k === "enabled" ? el.checked : el.value.trim();
        if (["port", "expires", "keepalive_s", "ptz_level"].includes(k)) value = Number(value);
        if (k === "password") { if (el.value) data.password = el.value; continue; }
        if (["server_domain", "username", "local_id"].includes(k) && value === "") { if (!p) continue; value = p[k]; }
        if (p && p[k] === value) continue; // PATCH: only what changed
        data[k] = value;
      }
      let r;
      try {
        if (p) {
          if (!Object.keys(data).length) return true;
          r = await patch(`${BASE}/${p.id}`, data);
        } else {
          r = await post(BASE, data);
        }
      } catch (err) { throw formError(err); }
      toast(t("common.saved"), "ok");
      for (const w of r.warnings || []) toast(serverText(w), "error");
      await reload();
      return true;
    }).classList.add("wide");
  }

  // ---------------------------------------------------------------- the selected platform
  async function open(id, which) {
    selected = id;
    tab = which;
    draw();
    await drawDetail();
  }

  async function drawDetail() {
    const p = platforms.find((x) => x.id === selected);
    if (!p) return;
    const tabs = ["share", "preview", "requests"].map((k) => h("button", { type: "button", class: "seg-btn" + (k === tab ? " active" : ""),
      dataset: { tab: k }, onclick: () => { tab = k; drawDetail().catch(report); } }, t("cascade.tab." + k)));
    const body = h("div", { id: "cascade-tab-body" }, message(t("common.loading")));
    clear(detail).append(h("div", { class: "page-head" }, h("h2", null, p.name, " ", h("span", { class: "mono muted" }, p.server_id)),
      h("div", { class: "tools" }, h("span", { class: "seg-group", role: "group" }, tabs),
        h("button", { type: "button", class: "small", onclick: () => { selected = null; clear(detail).classList.add("hidden"); draw(); } },
          t("common.close")))), body);
    detail.classList.remove("hidden");
    detail.dataset.platform = p.id;
    detail.dataset.tab = tab;
    try {
      if (tab === "share") await shareEditor(body, p);
      else if (tab === "preview") await preview(body, p);
      else await requests(body, p);
    } catch (err) {
      clear(body).append(message(err.message || String(err), "error"));
    }
  }

  // ---------------------------------------------------------------- share editor
  async function shareEditor(body, p) {
    const [share, roots] = await Promise.all([get(`${BASE}/${p.id}/share`),
      get("/api/org/tree").then(normaliseTree).catch(() => [])]);
    const nodes = [];
    const visit = (n, depth, parent) => {
      if (n.type !== "org" || n.id == null) return;
      const item = { id: n.id, name: n.name, code: n.code, depth, parent };
      nodes.push(item);
      n.children.forEach((c) => visit(c, depth + 1, item));
    };
    roots.forEach((n) => (n.id == null ? n.children.forEach((c) => visit(c, 0, null)) : visit(n, 0, null)));
    const chosen = new Set(share.org_nodes);
    const boxes = new Map();
    const nodeRows = nodes.map((n) => {
      const box = h("input", { type: "checkbox", value: n.id, checked: chosen.has(n.id), dataset: { org: n.id } });
      boxes.set(n.id, box);
      const row = h("label", { class: "check" }, box, n.name, n.code ? h("small", { class: "mono" }, n.code) : null,
        h("small", { class: "cas-included hidden" }, t("cascade.included")));
      row.style.paddingLeft = n.depth * 18 + "px";
      box.addEventListener("change", syncNodes);
      return row;
    });
    function ancestorChecked(n) {
      for (let a = n.parent; a; a = a.parent) if (boxes.get(a.id).checked) return true;
      return false;
    }
    function syncNodes() {  // a ticked node includes its descendants: show them included
      for (const n of nodes) {
        const box = boxes.get(n.id);
        const inherited = ancestorChecked(n);
        box.disabled = inherited;
        box.parentElement.querySelector(".cas-included").classList.toggle("hidden", !inherited);
      }
    }
    syncNodes();

    // single channels with their overrides
    const rows = new Map(); // "device/channel" -> {c, inputs}
    const list = h("tbody", { id: "cas-share-channels" });
    function addChannel(c) {
      const key = `${c.device_id}/${c.channel_id}`;
      if (rows.has(key)) return;
      const inputs = {
        upward_id: h("input", { class: "mono", maxlength: 20, pattern: "[0-9]{20}", size: 22, value: c.upward_id || "",
                                placeholder: t("cascade.same_as_ours"), dataset: { k: "upward_id" } }),
        name: h("input", { maxlength: 64, value: c.name || "", placeholder: c.channel_name || t("cascade.same_as_ours"),
                           dataset: { k: "name" } }),
        civil_code: h("input", { class: "mono", maxlength: 12, size: 10, value: c.civil_code || "", dataset: { k: "civil_code" } }),
      };
      const tr = h("tr", { dataset: { channel: c.channel_id, device: c.device_id } },
        h("td", null, c.channel_name || "", h("div", { class: "mono muted" }, `${c.channel_id} @ ${c.device_id}`)),
        h("td", null, inputs.upward_id), h("td", null, inputs.name), h("td", null, inputs.civil_code),
        h("td", null, h("button", { type: "button", class: "small", onclick: () => { rows.delete(key); tr.remove(); } },
          t("cascade.remove"))));
      rows.set(key, { c, inputs });
      list.append(tr);
    }
    share.channels.forEach(addChannel);
    const search = h("input", { type: "search", id: "cas-channel-search", placeholder: t("cascade.channel_search") });
    const results = h("div", { class: "search-results", id: "cas-channel-results" });
    let seq = 0;
    search.addEventListener("input", async () => {
      const q = search.value.trim();
      const mine = ++seq;
      if (!q) { clear(results); return; }
      const found = await loadChannels({ q }).catch(() => []);
      if (mine !== seq) return;
      clear(results).append(...found.slice(0, 20).map((c) => h("button", { type: "button", class: "result",
        dataset: { channel: c.channel_id, device: c.device_id },
        onclick: () => addChannel({ device_id: c.device_id, channel_id: c.channel_id, channel_name: c.name }) },
        `${c.name || ""} ${c.channel_id} @ ${c.device_id}`)));
    });
    const summary = h("p", { id: "cas-share-summary" }, t("cascade.resolved", { n: share.resolved }));
    const conflictBox = h("div", { id: "cas-share-conflicts" });
    function showConflicts(list) {  // channels left out: their upward ids collide
      clear(conflictBox).append(...(list || []).length ? [message(t("cascade.conflicts", {
        list: list.map((c) => `${c.channel_id || ""}@${c.device_id || ""} → ${c.upward_id || ""}`).join("、") }), "warn")] : []);
    }
    showConflicts(share.conflicts);
    const save = h("button", { type: "button", class: "primary", id: "cas-share-save", onclick: async () => {
      const channels = [...rows.values()].map(({ c, inputs }) => {
        const item = { device_id: c.device_id, channel_id: c.channel_id };
        for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) item[k] = el.value.trim();
        return item;
      });
      const orgNodes = nodes.filter((n) => boxes.get(n.id).checked && !ancestorChecked(n)).map((n) => n.id);
      save.disabled = true;
      try {
        const r = await put(`${BASE}/${p.id}/share`, { org_nodes: orgNodes, channels });
        summary.textContent = t("cascade.resolved", { n: r.resolved });
        showConflicts(r.conflicts);
        toast(t("cascade.share_saved", { n: r.resolved }), "ok");
      } catch (err) {
        report(formError(err));
      } finally {
        save.disabled = false;
      }
    } }, t("common.save"));
    clear(body).append(
      h("p", { class: "muted" }, t("cascade.share_hint")),
      h("div", { class: "grid2 cas-share" },
        h("div", null, h("h4", null, t("cascade.org_nodes")),
          h("div", { class: "node-list cas-nodes", id: "cas-share-nodes" }, nodeRows.length ? nodeRows : h("p", { class: "muted" }, t("common.none")))),
        h("div", null, h("h4", null, t("cascade.channels")), search, results,
          h("table", { class: "table compact" }, h("thead", null, h("tr", null,
            ["cascade.col.channel", "cascade.f.upward_id", "cascade.f.upward_name", "cascade.f.civil_code", "common.actions"]
              .map((k) => h("th", null, t(k))))), list))),
      conflictBox, h("div", { class: "tools" }, summary, save));
  }

  // ---------------------------------------------------------------- catalog preview
  async function preview(body, p) {
    const [r] = await Promise.all([get(`${BASE}/${p.id}/catalog`), loadRegions()]);
    const rows = r.items.map((e, i) => h("tr", { dataset: { id: e.device_id, kind: e.kind } },
      h("td", { class: "muted" }, i + 1),
      h("td", { class: "mono" }, e.device_id),
      h("td", null, e.name, e.source_channel_id && e.source_channel_id !== e.device_id
        ? h("div", { class: "mono muted" }, t("cascade.ours", { id: `${e.source_channel_id} @ ${e.source_device_id}` })) : null),
      h("td", null, word("cascade.kind", e.kind)),
      h("td", { class: "mono" }, e.parent_id || "—", e.business_group_id ? h("div", { class: "muted" }, e.business_group_id) : null),
      h("td", null, e.civil_code ? regionEl(e.civil_code) : "—"),  // in words, with the code
      h("td", null, badge(word("cascade.item_status", e.status), e.status === "ON" ? "on" : "off")),
      h("td", { class: "mono" }, e.longitude != null && e.latitude != null ? `${e.longitude}, ${e.latitude}` : "—")));
    clear(body).append(
      h("p", { id: "cas-preview-summary" }, t("cascade.preview_summary", { total: r.total, channels: r.channels })),
      h("table", { class: "table compact", id: "cascade-preview" },
        h("thead", null, h("tr", null, ["cascade.col.no", "cascade.col.id", "cascade.col.name", "cascade.col.kind",
          "cascade.col.parent", "cascade.f.civil_code", "cascade.col.item_status", "cascade.col.position"].map((k) => h("th", null, t(k))))),
        h("tbody", null, rows)));
  }

  // ---------------------------------------------------------------- recent requests
  async function requests(body, p) {
    const r = await get(`${BASE}/${p.id}/requests`, { limit: 100 });
    const rows = r.items.map((e) => h("tr", { dataset: { action: e.action, seq: e.seq } },
      h("td", null, fmtTime(e.time)),
      h("td", { title: e.action }, requestWords(e)),
      h("td", { class: "mono" }, requestChannel(e)),
      h("td", null, requestResult(e))));
    clear(body).append(h("table", { class: "table compact", id: "cascade-requests" },
      h("thead", null, h("tr", null, ["field.time", "cascade.col.request", "cascade.col.channel", "cascade.col.result"]
        .map((k) => h("th", null, t(k))))),
      h("tbody", null, rows.length ? rows : h("tr", null, h("td", { colspan: 4, class: "empty muted" }, t("cascade.no_requests"))))));
  }

  try {
    await reload();
  } catch (err) {
    if (err instanceof ApiError && err.status === 403) throw err;
    root.append(message(err.message, "error"));
  }
  // live status: the list every few seconds (the open requests tab with it)
  const timer = setInterval(() => {
    if (document.querySelector("dialog.modal[open]")) return; // an open form keeps the table still
    reload().then(() => {
      if (selected !== null && tab === "requests") {
        const body = document.getElementById("cascade-tab-body");
        const p = platforms.find((x) => x.id === selected);
        if (body && p) requests(body, p).catch(() => {});
      }
    }).catch(() => {});
  }, REFRESH_MS);
  return () => clearInterval(timer);
}
