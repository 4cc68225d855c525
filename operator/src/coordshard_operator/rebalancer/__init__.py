"""The rebalancer both membership sources share: members in, consumers rewritten.

``balancing`` and ``planning`` are pure (live members + the assignment in
force → a balanced assignment and its moves); ``handoff`` is the engine that
applies one to JetStream with the safe hand-off protocol, through the one
boundary that talks to the server, ``jetstream``; ``passes`` is one
observe → plan → apply pass. Nothing here imports kopf or kubernetes: the
operator (``kube``) and local mode (``local``) differ only in how they decide
who is live.
"""
