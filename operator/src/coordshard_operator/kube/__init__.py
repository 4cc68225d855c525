"""The Kubernetes operator: kopf handlers over a level-based reconcile.

The only room that imports kopf or talks to the API server. ``handlers`` are
thin kopf adapters; ``reconcile`` turns a CoordinateShards and its pods into
one rebalancer pass and a status; ``pods`` (pods → membership) and
``conditions`` (the status conditions) are pure; ``spec`` parses and checks
the CR; ``runtime`` holds the pod cache, wakers and per-group engines;
``kubeapi`` and ``natsauth`` read Secrets and patch status.
"""
