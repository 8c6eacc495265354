// gbops web console: shell, login and password change, hash router, and the views.
import { ApiError, api, get, post, setUnauthorizedHandler, token } from "./api.js";
import { badge, clear, fmtTime, h, message, toast } from "./dom.js";
import { extend, getLang, serverText, setLang, t } from "./i18n.js";
import { rolesView, usersView } from "./admin.js";
import { auditView } from "./audit.js";
import { channelView, deviceView, liveView, treeView } from "./views.js";
import { mapView } from "./map.js";
import { alarmsView } from "./alarms.js";
import { cascadeView } from "./cascade.js";
import { securityView } from "./security.js";
import { securityCheckView } from "./security_check.js";
import { clockView } from "./clock.js";
import { clusterView } from "./cluster.js";
import { devicesView } from "./devices.js";
import { orgView } from "./org.js";
import { mountTicketBell, ticketsView } from "./tickets.js";
import { reportsView } from "./reports.js";
import { contractsView } from "./contracts.js";
import { dashboardView as dashboardPage } from "./dashboard.js";
import { downloadsView, playbackView, recordingView } from "./history.js";
import { can, state } from "./session.js";

const NAV = [
  { route: "dashboard", label: "nav.dashboard", view: dashboardPage },
  { route: "tree", label: "nav.tree", view: treeView, perm: "device.read" },
  { route: "devices", label: "nav.devices", view: devicesView, perm: "device.read" },
  { route: "org", label: "nav.org", view: orgView, perm: "device.read" },
  { route: "live", label: "nav.live", view: liveView, perm: "live.view" },
  { route: "playback", label: "nav.playback", view: playbackView, perm: "playback.view" },
  { route: "downloads", label: "nav.downloads", view: downloadsView, perm: "download.create" },
  { route: "recording", label: "nav.recording", view: recordingView, perm: "playback.view" },
  { route: "map", label: "nav.map", view: mapView, perm: "device.read" },
  { route: "alarms", label: "nav.alarms", view: alarmsView, perm: "alarm.read" },
  { route: "tickets", label: "nav.tickets", view: ticketsView, perm: "ticket.read" },
  { route: "reports", label: "nav.reports", view: reportsView, perm: "report.read" },
  { route: "contracts", label: "nav.contracts", view: contractsView, perm: "contract.manage" },
  { route: "users", label: "nav.users", view: usersView, perm: "user.manage" },
  { route: "roles", label: "nav.roles", view: rolesView, perm: "role.manage" },
  { route: "audit", label: "nav.audit", view: auditView, perm: "audit.read" },
  { route: "cascade", label: "nav.cascade", view: cascadeView, perm: "cascade.manage" },
  { route: "security", label: "nav.security", view: securityView, perm: "security.read" },
  { route: "security-check", label: "nav.security_check", view: securityCheckView, perm: "security.read" },
  { route: "time", label: "nav.time", view: clockView, perm: "device.read" },
  { route: "cluster", label: "nav.cluster", view: clusterView, perm: "system.metrics" },
];
const HIDDEN = {
  device: deviceView,
  channel: channelView,
  account: (root) => accountView(root),
};

// Words of the second factor, the password age and idle sessions (issue 16).
extend({
  "login.otp": "两步验证码",
  "login.otp_hint": "打开手机上的验证器应用，输入当前显示的 6 位数字",
  "account.title": "我的账户",
  "totp.title": "两步验证",
  "totp.intro": "启用后，登录时除密码外还需输入手机验证器应用（如 Microsoft Authenticator、Google 身份验证器、FreeOTP）中的 6 位动态验证码。",
  "totp.state_on": "已启用",
  "totp.state_off": "未启用",
  "totp.since": "启用时间：{time}",
  "totp.required": "您的角色要求使用两步验证，不能停用；更换手机请联系管理员重置。",
  "totp.start": "绑定验证器",
  "totp.step1": "第 1 步：在验证器应用中添加账户，手工输入下面的密钥（或把链接交给支持 otpauth 的应用）。",
  "totp.secret": "密钥（每 4 位一组，输入时空格可省略）",
  "totp.uri": "otpauth 链接",
  "totp.step2": "第 2 步：输入应用中显示的 6 位验证码和您的当前密码，确认绑定。",
  "totp.code": "验证码",
  "totp.confirm": "确认并启用",
  "totp.enabled_ok": "两步验证已启用，以后登录需输入验证码",
  "totp.disable": "停用两步验证",
  "totp.disable_hint": "停用需要输入当前密码和一个验证码。",
  "totp.password": "当前密码",
  "totp.disabled_ok": "两步验证已停用",
  "totp.forced_title": "请先绑定两步验证",
  "totp.forced": "您的角色要求使用两步验证：绑定验证器应用后即可使用平台。",
}, {
  "login.otp": "Verification code",
  "login.otp_hint": "Open the authenticator app on your phone and enter the 6 digits it shows now",
  "account.title": "My account",
  "totp.title": "Two-step verification",
  "totp.intro": "Once on, logging in needs the 6-digit code of an authenticator app on your phone (Microsoft Authenticator, Google Authenticator, FreeOTP…) besides the password.",
  "totp.state_on": "On",
  "totp.state_off": "Off",
  "totp.since": "On since {time}",
  "totp.required": "Your role requires two-step verification: it cannot be turned off (ask an administrator to reset it for a new phone).",
  "totp.start": "Set up an authenticator",
  "totp.step1": "Step 1: add an account in the authenticator app by typing the key below (or give the link to an app that reads otpauth).",
  "totp.secret": "Key (groups of 4; spaces may be left out)",
  "totp.uri": "otpauth link",
  "totp.step2": "Step 2: enter the 6-digit code the app shows and your current password to confirm.",
  "totp.code": "Code",
  "totp.confirm": "Confirm and turn on",
  "totp.enabled_ok": "Two-step verification is on: logging in now needs a code",
  "totp.disable": "Turn two-step verification off",
  "totp.disable_hint": "Turning it off needs your password and a code.",
  "totp.password": "Current password",
  "totp.disabled_ok": "Two-step verification is off",
  "totp.forced_title": "Set up two-step verification first",
  "totp.forced": "Your role requires two-step verification: set up an authenticator app to use the platform.",
});


const app = () => document.getElementById("app");

// ------------------------------------------------------------------ shell
let stopBell = () => {};

function shell() {
  const bellSlot = h("span", { class: "bell-slot" });
  const nav = h("nav", { class: "sidenav", id: "sidenav", "aria-label": t("nav.main") },
    NAV.filter((n) => !n.perm || can(n.perm)).map((n) =>
      h("a", { href: "#/" + n.route, dataset: { route: n.route } }, t(n.label))));
  // a phone-width screen: the menu hides behind this button (style.css shows it at <= 700 px only)
  const toggle = h("button", { type: "button", class: "ghost menu-toggle", id: "menu-toggle",
                               "aria-controls": "sidenav", "aria-expanded": "false",
                               onclick: () => setMenu(!menuOpen()) },
    h("span", { class: "menu-icon", "aria-hidden": "true" }), t("nav.menu"));
  nav.addEventListener("click", (e) => { if (e.target.closest("a")) setMenu(false, false); });
  const who = state.user ? (state.user.display_name || state.user.username) : "";
  const header = h("header", { class: "topbar" },
    h("div", { class: "brand" }, toggle, h("span", { class: "logo" }, "GB"), h("strong", null, t("app.brand")),
      h("span", { class: "subtitle" }, t("app.title"))),
    h("div", { class: "topbar-right" },
      bellSlot,
      langButton(),
      h("a", { href: "#/account", class: "user", id: "whoami", title: who }, who),
      h("button", { type: "button", class: "ghost", id: "logout", onclick: logout }, t("nav.logout"))));
  const main = h("main", { id: "view", class: "view" });
  // a tap beside the open menu closes it
  main.addEventListener("click", () => setMenu(false, false));
  stopBell();
  clear(app()).append(header, h("div", { class: "layout" }, nav, main));
  stopBell = mountTicketBell(bellSlot);  // fault tickets waiting and overdue, in the header (issue 18)
  if (!menuKeysBound) {  // once: the shell is rebuilt on every language switch
    menuKeysBound = true;
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && menuOpen()) { e.preventDefault(); setMenu(false); }
    });
  }
}

let menuKeysBound = false;

function menuOpen() {
  const layout = document.querySelector(".layout");
  return !!layout && layout.classList.contains("menu-open");
}

// Opens or closes the phone menu; focus goes to its first link on opening and back to the button on closing
// (``refocus`` false: a link or a tap elsewhere closed it, and focus stays where the user went).
function setMenu(open, refocus = true) {
  const layout = document.querySelector(".layout");
  const toggle = document.getElementById("menu-toggle");
  if (!layout || !toggle) return;
  const was = layout.classList.contains("menu-open");
  layout.classList.toggle("menu-open", open);
  toggle.setAttribute("aria-expanded", String(open));
  if (open && !was) {
    const first = layout.querySelector(".sidenav a.active") || layout.querySelector(".sidenav a");
    if (first && getComputedStyle(toggle).display !== "none") first.focus();
  } else if (!open && was && refocus) {
    toggle.focus();
  }
}

function langButton() {
  return h("button", { type: "button", class: "ghost lang", id: "lang", lang: getLang() === "zh" ? "en" : "zh",
                       onclick: () => { setLang(getLang() === "zh" ? "en" : "zh"); rerender(); } }, t("lang.switch"));
}

function markNav(route) {
  for (const a of document.querySelectorAll(".sidenav a")) {
    const active = a.dataset.route === route;
    a.classList.toggle("active", active);
    if (active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  setMenu(false, false);  // a new page: the phone menu closes
}

// ------------------------------------------------------------------ auth
function loginView(note) {
  document.title = `${t("login.title")} · gbops`;
  const error = h("div", { class: "msg error hidden", role: "alert" });
  const user = h("input", { id: "login-username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { id: "login-password", type: "password", autocomplete: "current-password", required: true });
  // the second factor: asked for once the server says this account needs it
  const otp = h("input", { id: "login-otp", inputmode: "numeric", autocomplete: "one-time-code", maxlength: 9,
                           pattern: "[0-9 ]*" });
  const otpField = h("label", { class: "field hidden", id: "login-otp-field" },
    h("span", { class: "label" }, t("login.otp")), otp, h("small", null, t("login.otp_hint")));
  const form = h("form", { class: "card login-card", id: "login-form" },
    h("div", { class: "login-brand" }, h("span", { class: "logo big" }, "GB"),
      h("div", null, h("h1", null, "gbops"), h("p", null, t("app.title")))),
    note ? message(note, "info") : null,
    h("label", { class: "field" }, h("span", { class: "label" }, t("login.username")), user),
    h("label", { class: "field" }, h("span", { class: "label" }, t("login.password")), pass),
    otpField,
    error,
    h("button", { type: "submit", class: "primary wide", id: "login-submit" }, t("login.submit")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.classList.add("hidden");
    const body = { username: user.value, password: pass.value };
    if (!otpField.classList.contains("hidden") && otp.value.trim()) body.otp = otp.value.replace(/\s+/g, "");
    try {
      const r = await api("POST", "/api/auth/login", { body, auth: false });
      token.set(r.access_token);
      if (r.must_change_password) {
        passwordPage(pass.value, r.password_change_reason);
      } else {
        await start();
      }
    } catch (err) {
      if (err.code === "totp_required" || err.code === "totp_invalid") {
        otpField.classList.remove("hidden");
        otp.required = true;
        otp.value = "";
        otp.focus();
      }
      // asking for the code is a step of the login, not a failure
      error.className = "msg " + (err.code === "totp_required" ? "info" : "error");
      error.textContent = err.message || t("login.failed");
    }
  });
  clear(app()).append(h("div", { class: "login-page" }, h("div", { class: "login-lang" }, langButton()), form));
}

function passwordPage(oldPassword, reason) {
  const root = h("div", { class: "login-page" }, h("div", { class: "login-lang" }, langButton()));
  clear(app()).append(root);
  passwordView(root, { forced: true, oldPassword, reason: reason ? serverText(reason) : null });
}

function passwordView(root, { forced, oldPassword, reason }) {
  document.title = `${t("pw.title")} · gbops`;
  const error = h("div", { class: "msg error hidden", role: "alert" });
  const old = h("input", { id: "pw-old", type: "password", autocomplete: "current-password", required: true });
  const nw = h("input", { id: "pw-new", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const again = h("input", { id: "pw-confirm", type: "password", autocomplete: "new-password", required: true });
  const form = h("form", { class: "card login-card", id: "password-form" },
    h("h1", null, t("pw.title")),
    forced ? message(reason || t("pw.forced"), "warn") : null,
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

// ------------------------------------------------------------------ my account: password and second factor
async function accountView(root) {
  document.title = `${t("account.title")} · gbops`;
  const pw = h("div", { id: "account-password" });
  const second = h("div", { id: "account-totp" });
  root.append(h("div", { class: "page-head" }, h("h1", null, t("account.title"))), pw, second);
  passwordView(pw, { forced: false });
  await totpCard(second, { forced: false });
}

function enrolPage() {
  const root = h("div", { class: "login-page" }, h("div", { class: "login-lang" }, langButton()));
  clear(app()).append(root);
  document.title = `${t("totp.forced_title")} · gbops`;
  totpCard(root, { forced: true }).catch((err) => root.append(message(err.message, "error")));
}

// The two-step verification card: state, set-up (key in groups of 4 + otpauth link, confirm with a code),
// turning it off (password + code).  ``forced``: the enrolment a role requires, then on into the console.
async function totpCard(root, { forced }) {
  const st = await get("/api/auth/totp");
  const card = h("section", { class: forced ? "card login-card" : "card", id: "totp-card" });
  root.append(card);
  const error = h("div", { class: "msg error hidden", role: "alert" });
  const fail = (err) => { error.textContent = err.message; error.classList.remove("hidden"); };
  const stateLine = h("p", { id: "totp-state" },
    st.enabled ? badge(t("totp.state_on"), "on") : badge(t("totp.state_off"), "off"), " ",
    st.enabled && st.enabled_at ? t("totp.since", { time: fmtTime(st.enabled_at) }) : "");
  card.append(h("h2", null, forced ? t("totp.forced_title") : t("totp.title")),
    forced ? message(t("totp.forced"), "warn") : h("p", null, t("totp.intro")), stateLine);

  if (!st.enabled) {
    const begin = h("button", { type: "button", class: "primary", id: "totp-start" }, t("totp.start"));
    const steps = h("div", { id: "totp-steps" });
    card.append(begin, steps, error);
    if (forced) {  // a way out for somebody who cannot set it up now
      card.append(h("p", null, h("button", { type: "button", class: "ghost", id: "totp-logout", onclick: logout },
        t("nav.logout"))));
    }
    begin.addEventListener("click", async () => {
      error.classList.add("hidden");
      let setup;
      try { setup = await post("/api/auth/totp/setup"); } catch (err) { fail(err); return; }
      begin.classList.add("hidden");
      const code = h("input", { id: "totp-code", inputmode: "numeric", autocomplete: "one-time-code", required: true,
                                maxlength: 9, pattern: "[0-9 ]*" });
      const password = h("input", { id: "totp-password", type: "password", autocomplete: "current-password",
                                    required: true });
      const form = h("form", { id: "totp-enable-form" },
        h("p", null, t("totp.step1")),
        h("label", { class: "field" }, h("span", { class: "label" }, t("totp.secret")),
          h("div", { class: "secret", id: "totp-secret" }, h("code", null, setup.secret_grouped))),
        h("label", { class: "field" }, h("span", { class: "label" }, t("totp.uri")),
          h("textarea", { class: "mono", id: "totp-uri", readonly: true, rows: 3 }, setup.otpauth_uri)),
        h("p", null, t("totp.step2")),
        h("label", { class: "field" }, h("span", { class: "label" }, t("totp.code")), code),
        h("label", { class: "field" }, h("span", { class: "label" }, t("totp.password")), password),
        h("button", { type: "submit", class: "primary", id: "totp-confirm" }, t("totp.confirm")));
      clear(steps).append(form);
      code.focus();
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        error.classList.add("hidden");
        try {
          await post("/api/auth/totp/enable", { code: code.value.replace(/\s+/g, ""), password: password.value });
        } catch (err) { fail(err); code.value = ""; return; }
        toast(t("totp.enabled_ok"), "ok");
        if (forced) { await start(); return; }
        clear(root);
        await totpCard(root, { forced: false });
      });
    });
    return;
  }

  if (st.required) {
    card.append(message(t("totp.required"), "info"));
    return;
  }
  const password = h("input", { id: "totp-off-password", type: "password", autocomplete: "current-password", required: true });
  const code = h("input", { id: "totp-off-code", inputmode: "numeric", autocomplete: "one-time-code", required: true,
                            maxlength: 9, pattern: "[0-9 ]*" });
  const form = h("form", { id: "totp-disable-form" },
    h("p", null, t("totp.disable_hint")),
    h("label", { class: "field" }, h("span", { class: "label" }, t("totp.password")), password),
    h("label", { class: "field" }, h("span", { class: "label" }, t("totp.code")), code),
    error,
    h("button", { type: "submit", class: "danger", id: "totp-disable" }, t("totp.disable")));
  card.append(form);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.classList.add("hidden");
    try {
      await post("/api/auth/totp/disable", { password: password.value, code: code.value.replace(/\s+/g, "") });
    } catch (err) { fail(err); code.value = ""; return; }
    toast(t("totp.disabled_ok"), "ok");
    clear(root);
    await totpCard(root, { forced: false });
  });
}

async function logout() {
  stopBell();
  stopBell = () => {};
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

let renders = 0;  // the number of the newest render: a view that finishes loading after the next one started is stale

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
  const mine = ++renders;
  try {
    const cleanup = (await view(root, route)) || null;
    if (mine !== renders) {  // the user went on while this view loaded: its cleanup runs now, not never
      if (cleanup) { try { await cleanup(); } catch (_) { /* view gone */ } }
      return;
    }
    state.cleanup = cleanup;
  } catch (err) {
    if (mine !== renders) return;
    // a role given meanwhile requires the second factor, or the password must be changed: those screens
    if (err.code === "totp_setup_required") { state.user = null; enrolPage(); return; }
    if (err.code === "password_change_required") { state.user = null; await start(); return; }
    clear(root).append(message(err.status === 403 ? t("common.forbidden")
      : err.status === 404 ? t("common.unavailable") : `${t("common.error")}: ${err.message}`, "error"));
  }
}

function rerender() {
  if (!state.user) {
    if (document.getElementById("password-form")) return; // keep what was typed
    if (token.get() && document.getElementById("totp-card")) { enrolPage(); return; } // the forced enrolment
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
      passwordView(root, { forced: true, reason: err.message });
      return;
    }
    if (err instanceof ApiError && err.code === "totp_setup_required") {
      enrolPage();
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

setUnauthorizedHandler((err) => {
  if (!state.user) return;
  token.clear();
  state.user = null;
  // an idle session says so ("会话空闲超时，请重新登录"); any other 401 just asks to log in again
  loginView(err && err.code === "session_idle" ? err.message : t("login.title"));
});

window.addEventListener("hashchange", render);
setLang(getLang());
if (token.get()) start(); else loginView();
