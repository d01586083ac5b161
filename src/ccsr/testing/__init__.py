"""Test doubles and helpers for tests and benchmarks: a fake engine, a
throw-away PostgreSQL database, a local Ray cluster (:mod:`ccsr.testing.ray_cluster`).

Kept in the package (not under tests/) so the job tests, the service tests,
``ccsr serve --engine-factory ccsr.testing:fake_engine_factory`` and the
benchmarks share one implementation. Nothing else in ``ccsr`` imports it (a
test checks).
"""

from ccsr.testing.fake_engine import DEFAULT_STEPS, FakeEngine, FakeResult, fake_engine_factory
from ccsr.testing.postgres import DEFAULT_POSTGRES_ADMIN_URL, postgres_admin_url, temporary_postgres_database

__all__ = ["DEFAULT_POSTGRES_ADMIN_URL", "DEFAULT_STEPS", "FakeEngine", "FakeResult", "fake_engine_factory",
           "postgres_admin_url", "temporary_postgres_database"]
