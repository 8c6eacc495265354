"""The cluster floor (issue 17): node directory and heartbeat, leases, the command bus between nodes.

On Redis when ``GBOPS_REDIS_URL`` is set, in memory otherwise (the single process).  Imports only the ground.

* :mod:`cluster.keys` -- every Redis key is ``prefix + name`` (``RedisKeys(prefix)("node", id)``);
* :mod:`cluster.client` -- ``connect(url)``, ``blocking_client`` for BLPOP/BRPOP, ``redacted_url`` for logs;
* :mod:`cluster.nodes` -- ``NodeInfo``/``NodeLoad``, ``NodeDirectory`` (Redis, Local), ``Heartbeat``;
* :mod:`cluster.lease` -- ``Leases`` (Redis with compare-and-set in Lua, Local with a shared ``LeaseTable``);
* :mod:`cluster.leader` -- ``LeasedRole``: run a service only on the node holding a lease;
* :mod:`cluster.bus` -- ``CommandBus`` (Redis, Local): request/reply between nodes, broadcasts;
* :mod:`cluster.runtime` -- ``open_cluster(settings) -> Cluster``.
"""
