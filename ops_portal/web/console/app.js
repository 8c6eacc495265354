// gbops web console: shell, login and password change, hash router, and the views.
import { ApiError, api, get, post, setUnauthorizedHandler, token } from "./api.js";
import { clear, h, message, toast } from "./dom.js";
import { getLang, setLang, t } from "./i18n.js";
import { auditView, rolesView, usersView } from "./admin.js";
import { channelView, dashboardView, deviceView, liveView, treeView } from "./views.js";
import { mapView } from "./map.js";
import { alarmsView } from "./alarms.js";
import { cascadeView } from "./cascade.js";
import { securityView } from "./security.js";
import { securityCheckView } from "./security_check.js";
import { clockView } from "./clock.js";
import { downloadsView, playbackView, recordingView } from "./history.js";
import { can, state } from "./session.js";

const NAV = [
  { route: "dashboard", label: "nav.dashboard", view: dashboardView },
  { route: "tree", label: "nav.tree", view: treeView, perm: "device.read" },
  { route: "live", label: "nav.live", view: liveView, perm: "live.view" },
  { route: "playback", label: "nav.playback", view: playbackView, perm: "playback.view" },
  { route: "downloads", label: "nav.downloads", view: downloadsView, perm: "download.create" },
  { route: "recording", label: "nav.recording", view: recordingView, perm: "playback.view" },
  { route: "map", label: "nav.map", view: mapView, perm: "device.read" },
  { route: "alarms", label: "nav.alarms", view: alarmsView, perm: "alarm.read" },
  { route: "users", label: "nav.users", view: usersView, perm: "user.manage" },
  { route: "roles", label: "nav.roles", view: rolesView, perm: "role.manage" },
  { route: "audit", label: "nav.audit", view: auditView, perm: "audit.read" },
  { route: "cascade", label: "nav.cascade", view: cascadeView, perm: "cascade.manage" },
  { route: "security", label: "nav.security", view: securityView, perm: "security.read" },
  { route: "security-check", label: "nav.security_check", view: securityCheckView, perm: "security.read" },
  { route: "time", label: "nav.time", view: clockView, perm: "device.read" },
];
const HIDDEN = {
  device: deviceView,
  channel: channelView,
  account: (root) => passwordView(root, { forced: false }),
};


const app = () => document.getElementById("app");

// ------------------------------------------------------------------ shell
function shell() {
  const nav = h("nav", { class: "sidenav", "aria-label": "main" },
    NAV.filter((n) => !n.perm || can(n.perm)).map((n) =>
      h("a", { href: "#/" + n.route, dataset: { route: n.route } }, t(n.label))));
  const who = state.user ? (state.user.display_name || state.user.username) : "";
  const header = h("header", { class: "topbar" },
    h("div", { class: "brand" }, h("span", { class: "logo" }, "GB"), h("strong", null, t("app.brand")),
      h("span", { class: "subtitle" }, t("app.title"))),
    h("div", { class: "topbar-right" },
      langButton(),
      h("a", { href: "#/account", class: "user", id: "whoami" }, who),
      h("button", { type: "button", class: "ghost", id: "logout", onclick: logout }, t("nav.logout"))));
  const main = h("main", { id: "view", class: "view" });
  clear(app()).append(header, h("div", { class: "layout" }, nav, main));
}

function langButton() {
  return h("button", { type: "button", class: "ghost lang", id: "lang",
                       onclick: () => { setLang(getLang() === "zh" ? "en" : "zh"); rerender(); } }, t("lang.switch"));
}

function markNav(route) {
  for (const a of document.querySelectorAll(".sidenav a")) a.classList.toggle("active", a.dataset.route === route);
}

// ------------------------------------------------------------------ auth
function loginView(note) {
  document.title = `${t("login.title")} · gbops`;
  const error = h("div", { class: "msg error hidden", role: "alert" });
  const user = h("input", { id: "login-username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { id: "login-password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", { class: "card login-card", id: "login-form" },
    h("div", { class: "login-brand" }, h("span", { class: "logo big" }, "GB"),
      h("div", null, h("h1", null, "gbops"), h("p", null, t("app.title")))),
    note ? message(note, "info") : null,
    h("label", { class: "field" }, h("span", { class: "label" }, t("login.username")), user),
    h("label", { class: "field" }, h("span", { class: "label" }, t("login.password")), pass),
    error,
    h("button", { type: "submit", class: "primary wide", id: "login-submit" }, t("login.submit")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.classList.add("hidden");
    try {
      const r = await api("POST", "/api/auth/login", { body: { username: user.value, password: pass.value }, auth: false });
      token.set(r.access_token);
      if (r.must_change_password) {
        passwordPage(pass.value);
      } else {
        await start();
      }
    } catch (err) {
      error.textContent = err.message || t("login.failed");
      error.classList.remove("hidden");
    }
  });
  clear(app()).append(h("div", { class: "login-page" }, h("div", { class: "login-lang" }, langButton()), form));
}

function passwordPage(oldPassword) {
  const root = h("div", { class: "login-page" }, h("div", { class: "login-lang" }, langButton()));
  clear(app()).append(root);
  passwordView(root, { forced: true, oldPassword });
}

function passwordView(root, { forced, oldPassword }) {
  document.title = `${t("pw.title")} · gbops`;
  const error = h("div", { class: "msg error hidden", role: "alert" });
  const old = h("input", { id: "pw-old", type: "password", autocomplete: "current-password", required: true });
  const nw = h("input", { id: "pw-new", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const again = h("input", { id: "pw-confirm", type: "password", autocomplete: "new-password", required: true });
  const form = h("form", { class: "card login-card", id: "password-form" },
    h("h1", null, t("pw.title")),
    forced ? message(t("pw.forced"), "warn") : null,
    oldPassword ? null : h("label", { class: "field" }, h("span", { class: "label" }, t("pw.old")), old),
    h("label", { class: "field" }, h("span", { class: "label" }, t("pw.new")), nw, h("small", null, t("pw.rules"))),
    h("label", { class: "field" }, h("span", { class: "label" }, t("pw.confirm")), again),
    error,
    h("button", { type: "submit", class: "primary wide", id: "pw-submit" }, t("pw.submit")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.classList.add("hidden");
    if (nw.value !== again.value) {
      error.textContent = t("pw.mismatch");
      error.classList.remove("hidden");
      return;
    }
    try {
      await post("/api/auth/password", { old_password: oldPassword || old.value, new_password: nw.value });
      toast(t("pw.done"), "ok");
      if (forced) await start(); else location.hash = "#/dashboard";
    } catch (err) {
      error.textContent = err.message;
      error.classList.remove("hidden");
    }
  });
  root.append(form);
}

async function logout() {
  try { await api("POST", "/api/auth/logout"); } catch (_) { /* the token may be gone already */ }
  token.clear();
  state.user = null;
  state.permissions = null;
  loginView();
}

// ------------------------------------------------------------------ routing
function currentRoute() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "dashboard", args: parts.slice(1), params: new URLSearchParams(qs || "") };
}

async function render() {
  if (!state.user) return;
  if (state.cleanup) { try { await state.cleanup(); } catch (_) { /* view gone */ } state.cleanup = null; }
  const route = currentRoute();
  const entry = NAV.find((n) => n.route === route.name);
  const view = entry ? entry.view : HIDDEN[route.name];
  markNav(entry ? entry.route : (route.name === "device" || route.name === "channel" ? "tree" : ""));
  const root = document.getElementById("view");
  if (!root) return;
  clear(root);
  root.dataset.view = route.name;
  document.title = `${entry ? t(entry.label) : t("app.title")} · gbops`;
  if (!view) { location.hash = "#/dashboard"; return; }
  try {
    state.cleanup = (await view(root, route)) || null;
  } catch (err) {
    clear(root).append(message(err.status === 403 ? t("common.forbidden")
      : err.status === 404 ? t("common.unavailable") : `${t("common.error")}: ${err.message}`, "error"));
  }
}

function rerender() {
  if (!state.user) {
    if (document.getElementById("password-form")) return; // keep what was typed
    loginView();
    return;
  }
  shell();
  render();
}

async function start() {
  try {
    state.user = await get("/api/auth/me");
  } catch (err) {
    if (err instanceof ApiError && err.code === "password_change_required") {
      const root = h("div", { class: "login-page" }, h("div", { class: "login-lang" }, langButton()));
      clear(app()).append(root);
      passwordView(root, { forced: true });
      return;
    }
    token.clear();
    loginView();
    return;
  }
  try {  // what the console should offer: the caller's permissions (union over roles)
    const access = await get("/api/access/me");
    state.permissions = new Set(access.permissions || []);
    state.access = access;
  } catch (_) {
    state.permissions = null; // an older server: offer everything, the API still decides
  }
  shell();
  if (!location.hash || location.hash === "#" || location.hash === "#/") location.hash = "#/dashboard";
  await render();
}

setUnauthorizedHandler(() => {
  if (!state.user) return;
  token.clear();
  state.user = null;
  loginView(t("login.title"));
});

window.addEventListener("hashchange", render);
setLang(getLang());
if (token.get()) start(); else loginView();
