"""A throw-away PostgreSQL database for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

#: Server used by the tests; override with CCSR_TEST_POSTGRES_URL.
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get("CCSR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)


@contextlib.contextmanager
def temporary_postgres_database(admin_url: str | None = None) -> Iterator[str]:
    """Create a fresh database, yield its URL, drop it afterwards (also on error)."""
    import psycopg

    admin_url = admin_url or postgres_admin_url()
    name = f"ccsr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _db = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
