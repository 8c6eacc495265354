// 集群节点 (issue 17): every live node of the platform (its roles in words, address, URL, load, last heartbeat in
// Beijing time and how long ago, online / draining / stale, "本节点" on the node answering), the worker jobs with
// the node holding each one's lease, and a line saying what a node and a job lease are.  Refreshes every 5 s;
// the single process shows its one node and says it runs without Redis.  Everything a node wrote is shown as
// text (h() never parses markup), and a node's URL becomes a link only when it is http(s).
import { get } from "./api.js";
import { badge, clear, fmtTime, h, message } from "./dom.js";
import { extend, serverText, t } from "./i18n.js";

extend({
  "nav.cluster": "集群节点",
  "cluster.mode_single": "单机模式（未配置 Redis）：所有角色在本进程中运行。",
  "cluster.mode_cluster": "集群模式（Redis）：共 {count} 个节点。",
  "cluster.explain": "节点是运行平台部分或全部角色（SIP 信令、媒体转发、管理门户、后台任务）的一个进程，每 {heartbeat} 秒在节点目录（集群模式下为 Redis）中登记一次心跳；超过 {stale} 秒无心跳标为心跳超时，超过 {ttl} 秒即从列表中移除。后台任务由租约保证在整个集群中同一时刻只由一个节点执行；持有租约的节点停止心跳后，其他后台任务节点在租约到期后接管。",
  "cluster.nodes": "节点",
  "cluster.jobs": "后台任务",
  "cluster.col.node": "节点",
  "cluster.col.roles": "角色",
  "cluster.col.address": "地址",
  "cluster.col.url": "访问地址",
  "cluster.col.load": "负载",
  "cluster.col.seen": "最近心跳（北京时间）",
  "cluster.col.status": "状态",
  "cluster.col.job": "任务",
  "cluster.col.lease": "租约",
  "cluster.col.holder": "执行节点",
  "cluster.role.sip": "SIP 信令",
  "cluster.role.media": "媒体转发",
  "cluster.role.portal": "管理门户",
  "cluster.role.worker": "后台任务",
  "cluster.this_node": "本节点",
  "cluster.load_streams": "流数 {n}",
  "cluster.load_encoders": "水印编码 {n}",
  "cluster.load_cpu": "CPU {cpu}",
  "cluster.online": "在线",
  "cluster.draining": "排空中",
  "cluster.stale": "心跳超时",
  "cluster.just_now": "刚刚",
  "cluster.seconds_ago": "{n} 秒前",
  "cluster.minutes_ago": "{n} 分钟前",
  "cluster.held_by": "由 {node} 执行",
  "cluster.held_by_gone": "由 {node} 执行（该节点已无心跳，租约到期后由其他节点接管）",
  "cluster.no_holder": "无节点持有（等待接管）",
  "cluster.no_nodes": "没有在线的节点",
  "cluster.no_jobs": "没有后台任务",
  "cluster.updated": "每 5 秒自动刷新 · 最近更新 {time}",
  "cluster.refresh_failed": "刷新失败：{error}",
}, {
  "nav.cluster": "Cluster nodes",
  "cluster.mode_single": "Single process (no Redis configured): every role runs in this process.",
  "cluster.mode_cluster": "Cluster mode (Redis): {count} nodes.",
  "cluster.explain": "A node is one process running some or all of the platform's roles (SIP signalling, media relay, management portal, background jobs); it writes a heartbeat to the node directory (Redis in cluster mode) every {heartbeat} s, is marked stale after {stale} s without one and leaves the list after {ttl} s. A lease makes sure each background job runs on exactly one node of the cluster at a time; when the holder stops its heartbeat, another worker node takes the job over once the lease expires.",
  "cluster.nodes": "Nodes",
  "cluster.jobs": "Background jobs",
  "cluster.col.node": "Node",
  "cluster.col.roles": "Roles",
  "cluster.col.address": "Address",
  "cluster.col.url": "URL",
  "cluster.col.load": "Load",
  "cluster.col.seen": "Last heartbeat (Beijing time)",
  "cluster.col.status": "State",
  "cluster.col.job": "Job",
  "cluster.col.lease": "Lease",
  "cluster.col.holder": "Running on",
  "cluster.role.sip": "SIP signalling",
  "cluster.role.media": "media relay",
  "cluster.role.portal": "management portal",
  "cluster.role.worker": "background jobs",
  "cluster.this_node": "this node",
  "cluster.load_streams": "streams {n}",
  "cluster.load_encoders": "encoders {n}",
  "cluster.load_cpu": "CPU {cpu}",
  "cluster.online": "online",
  "cluster.draining": "draining",
  "cluster.stale": "heartbeat overdue",
  "cluster.just_now": "just now",
  "cluster.seconds_ago": "{n} s ago",
  "cluster.minutes_ago": "{n} min ago",
  "cluster.held_by": "run by {node}",
  "cluster.held_by_gone": "run by {node} (no heartbeat from it any more: another node takes over when the lease expires)",
  "cluster.no_holder": "held by no node (waiting for a worker to take it over)",
  "cluster.no_nodes": "no node online",
  "cluster.no_jobs": "no background jobs",
  "cluster.updated": "refreshes every 5 s · last updated {time}",
  "cluster.refresh_failed": "refresh failed: {error}",
});

const REFRESH_MS = 5000;
const STATUS = { online: ["cluster.online", "on"], draining: ["cluster.draining", "warn"], stale: ["cluster.stale", "off"] };

function roleName(role) {
  const key = "cluster.role." + role;
  const word = t(key);
  return word === key ? role : word; // a role this console does not know: its code
}

// CPU as whole percent of the node's cores ("0%" under half a percent).
function cpuPercent(cpu) {
  const x = Number(cpu);
  return Number.isFinite(x) ? `${Math.round(x * 100)}%` : "—";
}

function ago(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  if (s < 1) return t("cluster.just_now");
  if (s < 120) return t("cluster.seconds_ago", { n: s });
  return t("cluster.minutes_ago", { n: Math.floor(s / 60) });
}

// A node's URL as a link only when it is plain http(s); anything else (javascript:, data:…) stays text.
function urlCell(url) {
  if (!url) return "—";
  let ok = false;
  try { ok = ["http:", "https:"].includes(new URL(url).protocol); } catch (_) { ok = false; }
  return ok ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer", class: "mono" }, url)
    : h("span", { class: "mono" }, url);
}

function pageHead(title, ...tools) {
  return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "tools" }, tools));
}

export async function clusterView(root) {
  const mode = h("p", { id: "cluster-mode" });
  const explain = h("p", { class: "muted", id: "cluster-explain" });
  const nodes = h("table", { class: "table", id: "cluster-nodes" });
  const jobs = h("table", { class: "table", id: "cluster-jobs" });
  const updated = h("p", { class: "muted", id: "cluster-updated" });
  const failure = h("div", { id: "cluster-error" });
  const refresh = h("button", { type: "button", id: "cluster-refresh", onclick: () => reload() }, t("common.refresh"));
  root.append(pageHead(t("nav.cluster"), refresh), failure,
    h("section", { class: "card" }, mode, explain),
    h("section", { class: "card" }, h("h2", null, t("cluster.nodes")), nodes),
    h("section", { class: "card" }, h("h2", null, t("cluster.jobs")), jobs),
    updated);

  function drawNodes(data) {
    const head = ["cluster.col.node", "cluster.col.roles", "cluster.col.address", "cluster.col.url", "cluster.col.load",
      "cluster.col.seen", "cluster.col.status"];
    // this node first, the others in the directory's order (by node id)
    const items = [...data.items].sort((a, b) => (b.node_id === data.this_node) - (a.node_id === data.this_node));
    const rows = items.map((n) => {
      const mine = n.node_id === data.this_node;
      const [label, kind] = STATUS[n.status] || STATUS.online;
      const load = n.load || {};
      return h("tr", { dataset: { node: n.node_id }, class: mine ? "this-node" : null },
        h("td", { class: "cl-node" }, h("span", { class: "mono" }, n.node_id),
          mine ? [" ", badge(t("cluster.this_node"), "on")] : null),
        h("td", { class: "cl-roles" }, (n.roles || []).map((r) => badge(roleName(r)))),
        h("td", { class: "cl-address mono" }, n.address || "—"),
        h("td", { class: "cl-url" }, urlCell(n.http_url)),
        h("td", { class: "cl-load" }, badge(t("cluster.load_streams", { n: load.streams ?? 0 })), " ",
          badge(t("cluster.load_encoders", { n: load.encoders ?? 0 })), " ",
          badge(t("cluster.load_cpu", { cpu: cpuPercent(load.cpu) }))),
        h("td", { class: "cl-seen" }, fmtTime(n.last_seen), h("div", { class: "muted cl-ago" }, ago(n.age_s))),
        h("td", { class: "cl-status" }, badge(t(label), kind)));
    });
    clear(nodes).append(h("thead", null, h("tr", null, head.map((k) => h("th", null, t(k))))),
      h("tbody", null, rows.length ? rows
        : h("tr", null, h("td", { colspan: head.length, class: "empty muted" }, t("cluster.no_nodes")))));
  }

  function drawJobs(data) {
    const live = new Set(data.items.map((n) => n.node_id));
    const head = ["cluster.col.job", "cluster.col.lease", "cluster.col.holder"];
    const rows = data.jobs.map((j) => {
      const holder = !j.holder ? badge(t("cluster.no_holder"), "warn")
        : live.has(j.holder) ? t("cluster.held_by", { node: j.holder })
          : badge(t("cluster.held_by_gone", { node: j.holder }), "off");
      return h("tr", { dataset: { job: j.name } },
        h("td", { class: "cl-job" }, serverText(j.label)),
        h("td", { class: "cl-lease mono" }, j.name),
        h("td", { class: "cl-holder" }, holder));
    });
    clear(jobs).append(h("thead", null, h("tr", null, head.map((k) => h("th", null, t(k))))),
      h("tbody", null, rows.length ? rows
        : h("tr", null, h("td", { colspan: head.length, class: "empty muted" }, t("cluster.no_jobs")))));
  }

  function draw(data) {
    mode.textContent = data.clustered ? t("cluster.mode_cluster", { count: data.items.length })
      : t("cluster.mode_single");
    explain.textContent = t("cluster.explain", { heartbeat: data.heartbeat_s, stale: data.stale_after_s,
                                                 ttl: data.node_ttl_s });
    drawNodes(data);
    drawJobs(data);
    updated.textContent = t("cluster.updated", { time: fmtTime(data.now) });
  }

  let busy = false;
  let first = true;
  async function reload() {
    if (busy) return;
    busy = true;
    try {
      const data = await get("/api/cluster/nodes");
      clear(failure);
      draw(data);
    } catch (err) {
      if (first) throw err; // the router says why the page cannot be shown (403, 503…)
      clear(failure).append(message(t("cluster.refresh_failed", { error: err.message || String(err) }), "error"));
    } finally {
      busy = false;
      first = false;
    }
  }

  await reload();
  const timer = setInterval(() => { reload(); }, REFRESH_MS);
  return () => clearInterval(timer);
}
