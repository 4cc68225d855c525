"""Throwaway PostgreSQL databases, for benchmark runs (and tests) that need an empty store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

__all__ = ["libpq_url", "scratch_database"]


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy's spelling) as libpq takes it."""
    scheme, rest = url.split("://", 1)
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://...")
    return f"postgresql://{rest}"


@contextmanager
def scratch_database(url: str, *, prefix: str = "coordshard_") -> Iterator[str]:
    """Create an empty database beside the one ``url`` names; yield ``url`` pointing at
    it (same scheme, so a SQLAlchemy URL stays one); drop it afterwards."""
    name = prefix + uuid.uuid4().hex[:12]
    admin = libpq_url(url)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
