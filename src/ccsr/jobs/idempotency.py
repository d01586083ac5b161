"""Idempotency keys: a submit retried with the same ``Idempotency-Key`` (by
a client that lost the answer to a transport error) returns the first
request instead of creating a second.

One row per (owner, key): the fingerprint of the first body and, once it is
queued, its request id. The row is inserted *before* the request is created
(the primary key makes concurrent submits with one key race on the insert,
and exactly one wins); the others find the row and wait for its request id.
Keys live ``ttl`` seconds (24 h by default), then the key may be reused.

A submit killed before its request id is written (kill -9, a crash) would
leave its key pending for the whole ``ttl``, every retry answered 409. So a
pending claim carries a token and a sign of life (``touched_at``), renewed
by the submitting server while its submit runs (:meth:`IdempotencyStore.renew`);
a pending row not renewed for ``pending_timeout`` seconds belonged to a dead
submit and is taken over by the next claim. Times are the database's
(:mod:`ccsr.jobs.dbclock`), so servers with skewed clocks agree on it.
No web framework here: the HTTP side is :mod:`ccsr.service.idempotent_submit`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import Float, String, and_, delete, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from ccsr.jobs.db import Base, upgrade_table
from ccsr.jobs.dbclock import db_now

NEW, REPLAY, CONFLICT, PENDING = "new", "replay", "conflict", "pending"
PURGE_INTERVAL = 60.0
#: Default seconds a pending claim lives without renewal (setting
#: idempotency_pending_timeout): far above a live submit's time between two
#: renewals, and above the 10 s a concurrent submit waits before it answers 409.
STALE_PENDING = 30.0


class IdempotencyRecord(Base):
    """A key an owner submitted with, the body's fingerprint and the request made."""

    __tablename__ = "ccsr_idempotency_keys"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    # The claim's holder (a random token per claim) and its last sign of life,
    # while the request id is still missing; NULL on rows of older releases.
    token: Mapped[Optional[str]] = mapped_column(String(32), nullable=True)
    touched_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)


#: Columns added after the table's first release (db.upgrade_table).
ADDED_KEY_COLUMNS = {"token": "VARCHAR(32)", "touched_at": "FLOAT"}


def upgrade_keys_table(conn: Any) -> None:
    """Add the columns a keys table of an older release lacks (in ``conn``'s transaction)."""
    upgrade_table(conn, IdempotencyRecord.__tablename__, ADDED_KEY_COLUMNS)


@dataclass(frozen=True)
class Claim:
    """What a submit with a key should do: ``new`` (create the request, then
    :meth:`IdempotencyStore.complete`), ``replay`` (return ``request_id``),
    ``conflict`` (the key was used with another body) or ``pending`` (a
    concurrent submit with this key has not finished). A ``new`` claim has a
    ``token``: pass it to renew, complete and release."""

    outcome: str
    request_id: Optional[str] = None
    token: Optional[str] = None


class IdempotencyStore:
    """The keys table on the job database's engine."""

    def __init__(self, engine: Engine, ttl: float = 24 * 3600, pending_timeout: float = STALE_PENDING):
        self.engine = engine
        self.ttl = ttl
        self.pending_timeout = pending_timeout
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._last_purge = 0.0

    def create_all(self) -> None:
        with self.engine.begin() as conn:
            Base.metadata.create_all(conn, tables=[IdempotencyRecord.__table__])
            upgrade_keys_table(conn)

    @staticmethod
    def _now(s: Session, now: Optional[float]) -> float:
        return db_now(s) if now is None else now

    def _stale(self, now: float) -> Any:
        """Rows that no longer hold their key: past ``ttl``, or pending (no
        request id) without a sign of life for ``pending_timeout``."""
        R = IdempotencyRecord  # noqa: N806
        dead_submit = and_(R.request_id.is_(None),
                           func.coalesce(R.touched_at, R.created_at) < now - self.pending_timeout)
        return or_(R.created_at < now - self.ttl, dead_submit)

    def claim(self, owner: str, key: str, fingerprint: str, now: Optional[float] = None) -> Claim:
        """Reserve ``key`` for ``owner``, or say what it already stands for.
        ``now``: the database's clock unless given (tests)."""
        R = IdempotencyRecord  # noqa: N806
        for _ in range(3):  # a stale row is deleted and the insert retried
            with self._session() as s:
                t = self._now(s, now)
                self._maybe_purge(s, t)
                # Deleted only while still stale (the condition is checked again
                # by the DELETE), so a fresh claim made meanwhile is never lost.
                s.execute(delete(R).where(R.owner == owner, R.key == key, self._stale(t)))
                s.commit()
                row = s.get(R, (owner, key))
                if row is None:
                    token = uuid.uuid4().hex
                    s.add(R(owner=owner, key=key, fingerprint=fingerprint, created_at=t, token=token, touched_at=t))
                    try:
                        s.commit()
                        return Claim(NEW, token=token)
                    except IntegrityError:
                        s.rollback()  # a concurrent submit inserted it first: read theirs
                        continue
                if row.fingerprint != fingerprint:
                    return Claim(CONFLICT, row.request_id)
                if row.request_id is None:
                    return Claim(PENDING)
                return Claim(REPLAY, row.request_id)
        return Claim(PENDING)

    def _mine(self, owner: str, key: str, token: Optional[str]) -> Any:
        R = IdempotencyRecord  # noqa: N806
        cond = (R.owner == owner) & (R.key == key)
        return cond & (R.token == token) if token is not None else cond

    def renew(self, owner: str, key: str, token: str, now: Optional[float] = None) -> bool:
        """A sign of life of the submit holding a ``new`` claim; False when the
        claim is no longer this submit's (taken over, or completed)."""
        with self._session() as s:
            t = self._now(s, now)
            res = s.execute(update(IdempotencyRecord)
                            .where(self._mine(owner, key, token), IdempotencyRecord.request_id.is_(None))
                            .values(touched_at=t))
            s.commit()
            return res.rowcount == 1

    def complete(self, owner: str, key: str, request_id: str, token: Optional[str] = None) -> bool:
        """Record the request a ``new`` claim created; False when the claim
        was taken over meanwhile (the submit looked dead for ``pending_timeout``)."""
        with self._session() as s:
            res = s.execute(update(IdempotencyRecord).where(self._mine(owner, key, token))
                            .values(request_id=request_id, touched_at=None))
            s.commit()
            return res.rowcount == 1

    def release(self, owner: str, key: str, token: Optional[str] = None) -> None:
        """Forget a claim whose submit failed (or whose request is gone), so a retry may succeed."""
        with self._session() as s:
            s.execute(delete(IdempotencyRecord).where(self._mine(owner, key, token)))
            s.commit()

    def purge(self, now: Optional[float] = None) -> int:
        """Delete keys older than ``ttl`` and pending claims of dead submits; returns how many."""
        with self._session() as s:
            result = s.execute(delete(IdempotencyRecord).where(self._stale(self._now(s, now))))
            s.commit()
            return int(result.rowcount or 0)

    def count(self) -> int:
        with self._session() as s:
            return len(s.execute(select(IdempotencyRecord.key)).all())

    def _maybe_purge(self, s: Session, now: float) -> None:
        if abs(now - self._last_purge) >= PURGE_INTERVAL:
            self._last_purge = now
            s.execute(delete(IdempotencyRecord).where(self._stale(now)))
            s.commit()
