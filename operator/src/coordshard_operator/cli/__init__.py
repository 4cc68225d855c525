"""The ``coordshard`` command: ``main`` wires argparse, one module per subcommand."""
