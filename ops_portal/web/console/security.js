// Placeholder (issue 16 scaffold): replaced by the page itself.
import { h, clear } from "./dom.js";
import { extend, t } from "./i18n.js";

extend({ "nav.security": "安全告警" }, { "nav.security": "Security alerts" });

export async function securityView(root) {
  clear(root).append(h("h1", null, t("nav.security")));
}
