"""The cluster floor (issue 17): node directory and heartbeat, leases, the command bus between nodes.

On Redis when ``GBOPS_REDIS_URL`` is set, in memory otherwise (the single process).  Imports only the ground.
"""
