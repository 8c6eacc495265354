// Placeholder (issue 16 scaffold): replaced by the page itself.
import { h, clear } from "./dom.js";
import { extend, t } from "./i18n.js";

extend({ "nav.time": "时间同步" }, { "nav.time": "Time sync" });

export async function clockView(root) {
  clear(root).append(h("h1", null, t("nav.time")));
}
