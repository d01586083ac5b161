"""The one SQLAlchemy metadata all persistent tables share (jobs, logs,
webhook outbox), and engine creation for SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine, create_engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every table of the service."""


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL and a busy timeout so the HTTP process
    and the scheduler can write concurrently without 'database is locked'."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def upgrade_table(conn: Connection, table: str, columns: dict[str, str]) -> list[str]:
    """Add the ``columns`` (name -> SQL type and default) a table made by an
    older release lacks, on ``conn`` (in the caller's transaction); returns
    the names added. ``create_all`` only creates missing tables, so each new
    column of an existing table comes through here."""
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    missing = [name for name in columns if name not in present]
    for name in missing:
        guard = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {guard}{name} {columns[name]}"))
    return missing
