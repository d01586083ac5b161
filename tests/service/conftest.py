"""Fixtures for the service tests (helpers live in svc_helpers.py)."""

from __future__ import annotations

import pytest

from ccsr.testing import temporary_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request, tmp_path):
    """A database URL for each backend (a fresh PostgreSQL database, dropped after)."""
    if request.param == "sqlite":
        yield None  # the default: <data_dir>/ccsr.db
    else:
        with temporary_postgres_database() as url:
            yield url
