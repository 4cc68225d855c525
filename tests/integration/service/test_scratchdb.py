"""A scratch PostgreSQL database exists inside its block, and only there."""

from __future__ import annotations

import psycopg
import pytest

from coordshard_operator.benchmarks.scratchdb import libpq_url, scratch_database

from .conftest import PG_ADMIN as ADMIN
from .conftest import require_postgres

pytestmark = pytest.mark.integration


def _databases() -> set[str]:
    with psycopg.connect(ADMIN, connect_timeout=2) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def test_the_database_is_made_empty_and_dropped() -> None:
    require_postgres()
    before = _databases()
    given = ADMIN.replace("postgresql://", "postgresql+psycopg://", 1)
    with scratch_database(given, prefix="cs_scratch_") as url:
        assert url.startswith("postgresql+psycopg://")
        name = url.rsplit("/", 1)[1]
        assert name.startswith("cs_scratch_") and name not in before
        with psycopg.connect(libpq_url(url)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchone()
            assert tables == (0,)
    assert name not in _databases()


def test_only_postgresql_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        libpq_url("sqlite:///x.db")
