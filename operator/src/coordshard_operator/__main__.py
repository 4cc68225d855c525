"""``python -m coordshard_operator`` is the ``coordshard`` command."""

import sys

from coordshard_operator.cli.main import main

sys.exit(main())
