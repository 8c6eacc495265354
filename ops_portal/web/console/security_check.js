// Placeholder (issue 16 scaffold): replaced by the page itself.
import { h, clear } from "./dom.js";
import { extend, t } from "./i18n.js";

extend({ "nav.security_check": "安全检查" }, { "nav.security_check": "Security check" });

export async function securityCheckView(root) {
  clear(root).append(h("h1", null, t("nav.security_check")));
}
