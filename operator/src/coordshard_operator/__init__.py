"""coordshard's rebalancer, its two membership sources, and the ``coordshard`` CLI.

The package is in rooms; each may import only the rooms below it (an
import-linter ``layers`` contract in pyproject.toml holds the order)::

    cli/          the ``coordshard`` command: argparse only; each subcommand
                  imports its room inside ``run``
    benchmarks/   ``coordshard bench``: suites that print tables and plots
    testing/      the API-server double the kube tests and benchmarks drive
    kube/         the kopf operator: the only room that imports kopf or talks
    local/        local mode: worker processes and an      to the API server
                  embedded nats-server as members
                  (kube and local never import each other)
    rebalancer/   shared by kube and local, no kopf, no kubernetes: balancing
                  and planning (pure), the hand-off engine and its JetStream
                  boundary, one rebalance pass, the errors

Below them all sits ``coordshard_client``, the wire contract (subjects, shard
function, consumer names) that workers and rebalancer agree on. The service
(``coordshard_service``) and this package never import each other.
"""
