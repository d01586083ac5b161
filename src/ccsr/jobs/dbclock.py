"""The database's clock: the one clock every cross-server time decision reads.

Several servers share one database, and their own clocks may disagree by
seconds (a VM resumed, NTP not running). A time one server writes (a lease's
end, an idempotency key's last sign of life) and another server compares with
its own clock is then off by the skew: leases of live servers pass early, those
of dead ones late. So such times are written and compared in the database's
time: PostgreSQL's ``now()``, and for SQLite (one server, the same machine)
SQLite's own ``julianday('now')``. Unix seconds as floats, like every time
column of the service.
"""

from __future__ import annotations

from typing import Union

from sqlalchemy import Float, literal_column, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

#: SQL for "now" in unix seconds, per dialect. PostgreSQL's now() is the
#: start of the transaction: every decision of one short transaction sees one
#: instant. SQLite's julianday('now') has millisecond precision.
_NOW_SQL = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM now()) AS DOUBLE PRECISION)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}

#: Warn at start when the server's clock and the database's differ by more.
SKEW_WARNING_SECONDS = 1.0


def now_sql(dialect_name: str) -> ColumnElement:
    """The database's current time as an SQL expression (for UPDATE/WHERE)."""
    try:
        return literal_column(_NOW_SQL[dialect_name], Float)
    except KeyError:
        raise ValueError(f"no clock known for the {dialect_name!r} database") from None


def db_now(bind: Union[Engine, Connection, Session]) -> float:
    """The database's current time, read with one SELECT."""
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return db_now(conn)
    dialect = bind.get_bind().dialect.name if isinstance(bind, Session) else bind.dialect.name
    return float(bind.execute(select(now_sql(dialect))).scalar_one())
