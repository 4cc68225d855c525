"""``python -m coordshard_service``: run one worker.

Every setting is a ``--flag`` or a ``COORDSHARD_*`` environment variable
(flags win). Logging is configured here, once.

The worker's libraries (nats-py with aiohttp, SQLAlchemy, pydantic) are
imported inside ``main``, with the garbage collector off: what they allocate
lives as long as the process, so collections during the imports found nothing
and cost ~10% of a worker's start (docs/benchmarks.md, spawn → Ready). Once
they are in, ``main`` freezes them and turns the collector back on.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coordshard_service.settings import ServiceSettings

__all__ = ["main"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": self.formatTime(record),
                "level": record.levelname,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def build_parser(*, describe: bool = True) -> argparse.ArgumentParser:
    """The worker's flags; with ``describe``, each with its setting's docstring as help."""
    from coordshard_service.settings import ServiceSettings, field_docs

    # argparse %-formats help strings: a docstring's "8%" must reach it as "8%%".
    docs = {k: v.replace("%", "%%") for k, v in field_docs().items()} if describe else {}
    parser = argparse.ArgumentParser(
        prog="coordshard worker",
        description="Run one Coordinate Service worker. Each flag is also an "
        "environment variable COORDSHARD_<NAME> (e.g. COORDSHARD_POD_NAME).",
    )
    for name, info in ServiceSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if info.annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=docs.get(name)
            )
        else:
            parser.add_argument(flag, default=None, help=docs.get(name))
    return parser


def settings_from(argv: Sequence[str] | None) -> ServiceSettings:
    """Settings from the environment, overridden by flags that were given."""
    from coordshard_service.settings import ServiceSettings

    argv = sys.argv[1:] if argv is None else list(argv)
    describe = "-h" in argv or "--help" in argv  # the help text is read from source
    args = build_parser(describe=describe).parse_args(argv)
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    return ServiceSettings(**given)


def _loop_factory(settings: ServiceSettings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked for and installed; else asyncio's own (None)."""
    if not settings.uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    gc.disable()
    try:
        return _main(argv)
    except ModuleNotFoundError as e:  # coordshard installed without its service extra
        if (e.name or "").startswith("coordshard_"):
            raise
        raise SystemExit(
            f"coordshard worker: needs the Python module {e.name!r}, which is not installed; "
            "install the service extra: pip install 'coordshard[service]'"
        ) from e
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    from pydantic import ValidationError

    from coordshard_service import app
    from coordshard_service.errors import ServiceError

    try:
        settings = settings_from(argv)
    except ValidationError as e:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in e.errors()
        )
        print(f"coordshard worker: invalid settings: {errors}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
        )
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    # Everything imported so far (pydantic schemas, SQLAlchemy, nats-py) lives
    # as long as the process. Frozen, a full collection no longer walks it:
    # the worker's gen-2 pauses fell from up to 71 ms to up to 25 ms under the
    # throughput benchmark (docs/benchmarks.md).
    gc.freeze()
    gc.enable()
    try:
        with asyncio.Runner(loop_factory=_loop_factory(settings)) as runner:
            runner.run(app.run(settings))
    except ServiceError as e:
        logging.getLogger("coordshard_service").error("worker failed: %s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
