"""Local mode: the whole system on one machine, without Kubernetes.

An embedded nats-server, worker *processes* as members, and the very planner
and hand-off engine the operator uses. Only the membership source differs: a
worker process that is alive and ready is a member; one that exits, or stays
not-ready past the grace period, is lost.
"""
