// 集群节点 (issue 17): placeholder, replaced by the cluster console helper.
import { h } from "./dom.js";
import { extend, t } from "./i18n.js";

extend({ "nav.cluster": "集群节点" }, { "nav.cluster": "Cluster nodes" });

export async function clusterView(root) {
  root.append(h("h2", {}, t("nav.cluster")));
}
