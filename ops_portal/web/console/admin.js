// Administration views: users, roles and grants (permissions by level, data scope). The audit log: audit.js.
import { del, get, getAll, patch, post } from "./api.js";
import { loadChannels, normaliseTree } from "./data.js";
import { badge, clear, field, fmtTime, fromLocalInput, h, modal, toLocalInput, toast } from "./dom.js";
import { extend, getLang, serverText, t } from "./i18n.js";

// Words of the account columns and the second-factor reset (issue 16).
extend({
  "users.last_login": "最后登录",
  "users.password_changed": "密码修改时间",
  "users.never": "从未登录",
  "users.totp_on": "两步验证",
  "users.totp_reset": "重置两步验证",
  "users.totp_reset_confirm": "重置“{name}”的两步验证？该用户的所有会话将失效，下次登录无需验证码（若其角色要求，则须重新绑定）。",
  "users.totp_reset_done": "两步验证已重置，该用户的会话已全部失效",
}, {
  "users.last_login": "Last login",
  "users.password_changed": "Password changed",
  "users.never": "never",
  "users.totp_on": "two-step",
  "users.totp_reset": "Reset two-step verification",
  "users.totp_reset_confirm": "Reset two-step verification of \u201c{name}\u201d? Every session of the user ends; the next login needs no code (or a new set-up where a role requires it).",
  "users.totp_reset_done": "Two-step verification reset; every session of the user has ended",
});

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

const items = (r) => (Array.isArray(r) ? r : r.items || []);

// ------------------------------------------------------------------ users
function roleIdsOf(user) {
  if (Array.isArray(user.role_ids)) return user.role_ids;
  return (user.roles || []).map((r) => (typeof r === "object" ? r.id : r));
}

function roleNamesOf(user, roles) {
  if (Array.isArray(user.roles) && user.roles.length) return user.roles.map((r) => (typeof r === "object" ? r.name : r));
  const byId = new Map(roles.map((r) => [r.id, r.name]));
  return roleIdsOf(user).map((id) => byId.get(id) ?? (typeof id === "string" ? id : "#" + id));
}

function oneTimePassword(r) {
  if (!r || typeof r !== "object") return null;
  return r.one_time_password || r.initial_password || r.temporary_password || r.password || null;
}

function showPassword(username, pw) {
  modal(`${t("users.reset")}: ${username}`, (body) => {
    body.append(h("p", null, t("users.onetime")), h("pre", { class: "secret", id: "onetime-password" }, pw));
  }, null);
}

export async function usersView(root) {
  const [users, roles] = await Promise.all([getAll("/api/users"), get("/api/roles").then(items).catch(() => [])]);
  const table = h("table", { class: "table", id: "users-table" });
  const add = h("button", { type: "button", class: "primary", id: "user-new", onclick: () => editUser(null) }, t("users.new"));
  root.append(pageHead(t("users.title"), add), h("section", { class: "card" }, table));

  function draw() {
    clear(table).append(
      h("thead", null, h("tr", null, ["users.username", "users.display_name", "users.phone", "users.roles",
        "users.state", "users.valid_until", "users.last_login", "users.password_changed", "common.actions"]
        .map((k) => h("th", null, t(k))))),
      h("tbody", null, users.map((u) => h("tr", { dataset: { user: u.username } },
        h("td", { class: "mono" }, u.username), h("td", null, u.display_name || ""), h("td", null, u.phone || ""),
        h("td", null, roleNamesOf(u, roles).map((n) => badge(n))),
        h("td", null, u.disabled ? badge(t("users.disabled"), "off") : badge(t("users.active"), "on"),
          u.must_change_password ? badge(t("users.must_change"), "warn") : null,
          u.totp_enabled ? badge(t("users.totp_on"), "on") : null),
        h("td", null, u.valid_until ? fmtTime(u.valid_until) : "—"),
        h("td", { class: "last-login" }, u.last_login_at ? fmtTime(u.last_login_at) : t("users.never")),
        h("td", { class: "password-changed" }, u.password_changed_at ? fmtTime(u.password_changed_at) : "—"),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "small", onclick: () => editUser(u) }, t("common.edit")),
          h("button", { type: "button", class: "small", onclick: () => toggle(u) },
            u.disabled ? t("users.enable") : t("users.disable")),
          h("button", { type: "button", class: "small", onclick: () => reset(u) }, t("users.reset")),
          h("button", { type: "button", class: "small", onclick: () => revoke(u) }, t("users.revoke")),
          u.totp_enabled ? h("button", { type: "button", class: "small totp-reset", onclick: () => resetTotp(u) },
            t("users.totp_reset")) : null,
          h("button", { type: "button", class: "small danger", onclick: () => remove(u) }, t("common.delete")))))));
  }

  async function reload() {
    users.splice(0, users.length, ...(await getAll("/api/users")));
    draw();
  }

  async function toggle(u) {
    await patch(`/api/users/${u.id}`, { disabled: !u.disabled }).catch((e) => toast(e.message, "error"));
    await reload();
  }
  async function reset(u) {
    try {
      const r = await post(`/api/users/${u.id}/password`, {});
      const pw = oneTimePassword(r);
      if (pw) showPassword(u.username, pw); else toast(t("common.saved"), "ok");
      await reload();
    } catch (e) { toast(e.message, "error"); }
  }
  async function resetTotp(u) {
    if (!confirm(t("users.totp_reset_confirm", { name: u.username }))) return;
    try {
      await post(`/api/users/${u.id}/totp/reset`, {});
      toast(t("users.totp_reset_done"), "ok");
      await reload();
    } catch (e) { toast(e.message, "error"); }
  }
  async function revoke(u) {
    try { await post(`/api/users/${u.id}/revoke`, {}); toast(t("users.revoked"), "ok"); } catch (e) { toast(e.message, "error"); }
  }
  async function remove(u) {
    if (!confirm(t("common.confirm_delete", { name: u.username }))) return;
    try { await del(`/api/users/${u.id}`); await reload(); } catch (e) { toast(e.message, "error"); }
  }

  function editUser(u) {
    const f = {
      username: h("input", { name: "username", id: "user-username", required: true, value: u ? u.username : "",
                             disabled: !!u, autocomplete: "off" }),
      display_name: h("input", { name: "display_name", id: "user-display-name", value: u ? u.display_name || "" : "" }),
      phone: h("input", { name: "phone", id: "user-phone", value: u ? u.phone || "" : "" }),
      password: h("input", { name: "password", id: "user-password", type: "password", autocomplete: "new-password" }),
      ptz_level: h("input", { name: "ptz_level", id: "user-ptz", type: "number", min: 1, max: 9,
                              value: u && u.ptz_level ? u.ptz_level : 5 }),
      valid_from: h("input", { name: "valid_from", type: "datetime-local", value: toLocalInput(u && u.valid_from) }),
      valid_until: h("input", { name: "valid_until", type: "datetime-local", value: toLocalInput(u && u.valid_until) }),
    };
    const have = new Set(u ? roleIdsOf(u) : []);
    const roleBoxes = roles.map((r) => h("label", { class: "check" },
      h("input", { type: "checkbox", value: r.id, checked: have.has(r.id), dataset: { role: r.name } }), r.name,
      r.builtin ? badge(t("roles.builtin")) : null));
    modal(u ? `${t("users.edit")}: ${u.username}` : t("users.new"), (body) => {
      body.append(h("div", { class: "form-grid" },
        field(t("users.username"), f.username), field(t("users.display_name"), f.display_name),
        field(t("users.phone"), f.phone),
        u ? null : field(t("users.password"), f.password, t("users.password_hint")),
        field(t("users.ptz_level"), f.ptz_level),
        field(t("users.valid_from"), f.valid_from), field(t("users.valid_until"), f.valid_until)),
      h("fieldset", { class: "roles-pick", id: "user-roles" }, h("legend", null, t("users.roles")), roleBoxes));
    }, async () => {
      const body = {
        display_name: f.display_name.value, phone: f.phone.value || null,
        ptz_level: Number(f.ptz_level.value) || 5,
        valid_from: fromLocalInput(f.valid_from.value), valid_until: fromLocalInput(f.valid_until.value),
        role_ids: roleBoxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => Number(i.value)),
      };
      if (u) {
        await patch(`/api/users/${u.id}`, body);
      } else {
        body.username = f.username.value.trim();
        if (f.password.value) body.password = f.password.value;
        const r = await post("/api/users", body);
        const pw = oneTimePassword(r);
        if (pw && !f.password.value) showPassword(body.username, pw);
      }
      toast(t("common.saved"), "ok");
      await reload();
    });
  }
  draw();
}

// ------------------------------------------------------------------ roles
function normalisePermissions(r) {
  // [{name, level, zh, en}] from whatever shape /api/permissions answers with.
  const list = Array.isArray(r) ? r : r.items || r.permissions || [];
  if (!Array.isArray(list) && typeof list === "object") {
    return Object.entries(list).map(([name, v]) => ({ name, level: v[0] ?? v.level, zh: v[1] ?? v.zh, en: v[2] ?? v.en }));
  }
  return list.map((p) => ({
    name: p.name || p.permission || p.id,
    level: p.level,
    zh: p.label_zh || p.zh || (p.label && p.label.split(" / ")[0]) || p.name,
    en: p.label_en || p.en || (p.label && p.label.split(" / ")[1]) || p.name,
  }));
}

function orgNodesFlat(roots) {
  const out = [];
  const visit = (n, depth) => {
    if (n.type !== "org" || n.id == null) return;
    out.push({ id: n.id, name: n.name, depth });
    n.children.forEach((c) => visit(c, depth + 1));
  };
  roots.forEach((n) => (n.id == null ? n.children.forEach((c) => visit(c, 0)) : visit(n, 0)));
  return out;
}

export async function rolesView(root) {
  const [roles, perms, tree] = await Promise.all([
    get("/api/roles").then(items),
    get("/api/permissions").then(normalisePermissions),
    get("/api/org/tree").then(normaliseTree).catch(() => []),
  ]);
  const nodes = orgNodesFlat(tree);
  const nodeName = new Map(nodes.map((n) => [n.id, n.name]));
  const label = (p) => (getLang() === "en" ? p.en : p.zh);
  const table = h("table", { class: "table", id: "roles-table" });
  root.append(pageHead(t("roles.title"),
    h("button", { type: "button", class: "primary", id: "role-new", onclick: () => editRole(null) }, t("roles.new"))),
    h("section", { class: "card" }, table));

  function scopeText(r) {
    if (r.full_scope || r.builtin) return t("roles.full_scope");
    const ns = r.org_node_ids || [];
    const cs = r.channels || [];
    const names = ns.map((id) => nodeName.get(id) ?? "#" + id);
    return [t("roles.scope_summary", { nodes: ns.length, channels: cs.length }), names.length ? "（" + names.join("、") + "）" : ""].join(" ");
  }

  function draw() {
    clear(table).append(
      h("thead", null, h("tr", null, ["roles.name", "roles.description", "roles.permissions", "roles.scope", "common.actions"]
        .map((k) => h("th", null, t(k))))),
      h("tbody", null, roles.map((r) => h("tr", { dataset: { role: r.name } },
        h("td", null, h("strong", null, r.name), r.builtin ? badge(t("roles.builtin")) : null),
        h("td", null, r.description ? serverText(r.description) : ""),
        h("td", null, (r.permissions || []).map((n) => badge(label(perms.find((p) => p.name === n) || { zh: n, en: n })))),
        h("td", null, scopeText(r)),
        h("td", { class: "actions" }, r.builtin ? null : [
          h("button", { type: "button", class: "small", onclick: () => editRole(r) }, t("common.edit")),
          h("button", { type: "button", class: "small danger", onclick: () => remove(r) }, t("common.delete"))])))));
  }

  async function reload() {
    roles.splice(0, roles.length, ...items(await get("/api/roles")));
    draw();
  }

  async function remove(r) {
    if (!confirm(t("common.confirm_delete", { name: r.name }))) return;
    try { await del(`/api/roles/${r.id}`); await reload(); } catch (e) { toast(e.message, "error"); }
  }

  function editRole(r) {
    const name = h("input", { id: "role-name", required: true, value: r ? r.name : "", maxlength: 64 });
    const desc = h("input", { id: "role-description", value: r ? r.description || "" : "" });
    const have = new Set(r ? r.permissions || [] : []);
    const boxes = [];
    const groups = ["admin", "function"].map((level) => h("fieldset", { class: "perm-group", dataset: { level } },
      h("legend", null, t("roles.level." + level)),
      perms.filter((p) => p.level === level).map((p) => {
        const box = h("input", { type: "checkbox", value: p.name, checked: have.has(p.name), dataset: { perm: p.name } });
        boxes.push(box);
        return h("label", { class: "check" }, box, label(p), h("small", { class: "mono" }, p.name));
      })));
    // data level: the scope
    const full = h("input", { type: "checkbox", id: "role-full-scope", checked: r ? !!r.full_scope : false });
    const haveNodes = new Set(r ? r.org_node_ids || [] : []);
    const nodeBoxes = nodes.map((n) => {
      const box = h("input", { type: "checkbox", value: n.id, checked: haveNodes.has(n.id), dataset: { org: n.id } });
      const l = h("label", { class: "check" }, box, n.name);
      l.style.paddingLeft = n.depth * 18 + "px";
      return l;
    });
    // channels as "device/channel" keys: a channel id is unique only within its device
    const chosen = new Set(r ? (r.channels || []).map((c) => `${c.device_id}/${c.channel_id}`) : []);
    const chips = h("div", { class: "chips", id: "role-channels" });
    const search = h("input", { type: "search", id: "role-channel-search", placeholder: t("roles.channel_search") });
    const results = h("div", { class: "search-results" });
    function drawChips() {
      clear(chips).append(...[...chosen].map((id) => h("span", { class: "chip", title: id }, id,
        h("button", { type: "button", class: "icon", onclick: () => { chosen.delete(id); drawChips(); } }, "✕"))));
    }
    let seq = 0;
    search.addEventListener("input", async () => {
      const q = search.value.trim();
      const mine = ++seq;
      if (!q) { clear(results); return; }
      const found = await loadChannels({ q }).catch(() => []);
      if (mine !== seq) return;
      const ql = q.toLowerCase();
      clear(results).append(...found.filter((c) => c.channel_id.includes(q) || (c.name || "").toLowerCase().includes(ql))
        .slice(0, 20).map((c) => h("button", { type: "button", class: "result",
          dataset: { channel: c.channel_id, device: c.device_id },
          onclick: () => { chosen.add(`${c.device_id}/${c.channel_id}`); drawChips(); } },
          `${c.name || ""} ${c.channel_id} @ ${c.device_id}`)));
    });
    drawChips();
    const scopeBox = h("div", { class: "scope-pick" },
      h("div", null, h("h4", null, t("roles.org_nodes")), h("div", { class: "node-list", id: "role-nodes" },
        nodeBoxes.length ? nodeBoxes : h("p", { class: "muted" }, t("common.none")))),
      h("div", null, h("h4", null, t("roles.channels")), search, results, chips));
    const syncFull = () => scopeBox.classList.toggle("disabled", full.checked);
    full.addEventListener("change", syncFull);
    syncFull();
    modal(r ? `${t("roles.edit")}: ${r.name}` : t("roles.new"), (body) => {
      body.append(h("div", { class: "form-grid" }, field(t("roles.name"), name), field(t("roles.description"), desc)),
        h("h3", null, t("roles.permissions")), h("div", { class: "perm-groups" }, groups),
        h("fieldset", { class: "perm-group", dataset: { level: "data" } }, h("legend", null, t("roles.level.data")),
          h("label", { class: "check" }, full, t("roles.full_scope")), scopeBox));
    }, async () => {
      const body = {
        name: name.value.trim(), description: desc.value,
        permissions: boxes.filter((b) => b.checked).map((b) => b.value),
        full_scope: full.checked,
        org_node_ids: full.checked ? [] : nodeBoxes.map((l) => l.querySelector("input")).filter((i) => i.checked)
          .map((i) => Number(i.value)),
        channels: full.checked ? [] : [...chosen].map((key) => {
          const [device_id, channel_id] = key.split("/");
          return { device_id, channel_id };
        }),
      };
      if (r) await patch(`/api/roles/${r.id}`, body); else await post("/api/roles", body);
      toast(t("common.saved"), "ok");
      await reload();
    }).classList.add("wide");
  }
  draw();
}
