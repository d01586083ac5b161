"""Every job-store test runs on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import pytest

from ccsr.jobs.store import JobStore
from ccsr.testing import temporary_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with temporary_postgres_database() as url:
            yield url


@pytest.fixture
def store(db_url):
    s = JobStore(db_url)
    s.create_all()
    yield s
    s.close()
