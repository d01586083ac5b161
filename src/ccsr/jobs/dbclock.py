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

import time
from typing import Callable, Optional, Union

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


class DbClock:
    """This server's estimate of the database's clock, for decisions made in
    memory (a queued request's start deadline) without a query each time:
    ``clock() + offset``, the offset measured by :meth:`measure` (at start and
    at every heartbeat). ``clock`` is the server's own (injectable in tests)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.clock = clock
        self.offset = 0.0
        self.warned = False

    def measure(self) -> float:
        """Read the database's clock; returns (and keeps) how far it is ahead
        of this server's, the query's round trip split evenly."""
        before = self.clock()
        db = db_now(self.engine)
        after = self.clock()
        self.offset = db - (before + after) / 2
        return self.offset

    def now(self) -> float:
        """The database's time, as this server estimates it."""
        return self.clock() + self.offset

    def skew_warning(self) -> Optional[str]:
        """A warning to log when the clocks differ by more than
        :data:`SKEW_WARNING_SECONDS` (once, until they agree again)."""
        if abs(self.offset) <= SKEW_WARNING_SECONDS:
            self.warned = False
            return None
        if self.warned:
            return None
        self.warned = True
        side = "behind" if self.offset > 0 else "ahead of"
        return (f"this server's clock is {abs(self.offset):.1f} s {side} the database's: leases and start "
                "deadlines use the database's clock, but times this server shows and logs are off; "
                "synchronise the clocks (NTP)")
