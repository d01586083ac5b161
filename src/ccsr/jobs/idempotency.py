"""Idempotency keys: a submit retried with the same ``Idempotency-Key`` (by
a client that lost the answer to a transport error) returns the first
request instead of creating a second.

One row per (owner, key): the fingerprint of the first body and, once it is
queued, its request id. The row is inserted *before* the request is created
(the primary key makes concurrent submits with one key race on the insert,
and exactly one wins); the others find the row and wait for its request id.
Keys live ``ttl`` seconds (24 h by default), then the key may be reused.
A row still without a request id after :data:`STALE_PENDING` seconds belongs
to a submit that never finished (its server was killed mid-submit): the next
claim takes the key over instead of waiting on it for the whole ``ttl``.
No web framework here: the HTTP side is :mod:`ccsr.service.idempotent_submit`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import Float, String, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from ccsr.jobs.db import Base

NEW, REPLAY, CONFLICT, PENDING = "new", "replay", "conflict", "pending"
PURGE_INTERVAL = 60.0
#: Seconds after which a claim without a request id is taken to be a crashed
#: submit. Far above a live submit's time (storing the input, one insert) and
#: above the 10 s a concurrent submit waits before it answers 409.
STALE_PENDING = 30.0


class IdempotencyRecord(Base):
    """A key an owner submitted with, the body's fingerprint and the request made."""

    __tablename__ = "ccsr_idempotency_keys"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)


@dataclass(frozen=True)
class Claim:
    """What a submit with a key should do: ``new`` (create the request, then
    :meth:`IdempotencyStore.complete`), ``replay`` (return ``request_id``),
    ``conflict`` (the key was used with another body) or ``pending`` (a
    concurrent submit with this key has not finished)."""

    outcome: str
    request_id: Optional[str] = None


class IdempotencyStore:
    """The keys table on the job database's engine."""

    def __init__(self, engine: Engine, ttl: float = 24 * 3600):
        self.engine = engine
        self.ttl = ttl
        self._session = sessionmaker(engine, expire_on_commit=False)
        self._last_purge = 0.0

    def create_all(self) -> None:
        Base.metadata.create_all(self.engine, tables=[IdempotencyRecord.__table__])

    def claim(self, owner: str, key: str, fingerprint: str, now: Optional[float] = None) -> Claim:
        """Reserve ``key`` for ``owner``, or say what it already stands for."""
        now = time.time() if now is None else now
        self._maybe_purge(now)
        for _ in range(3):  # an expired row is deleted and the insert retried
            with self._session() as s:
                row = s.get(IdempotencyRecord, (owner, key))
                stale = row is not None and row.request_id is None and row.created_at < now - STALE_PENDING
                if row is not None and (row.created_at < now - self.ttl or stale):
                    s.delete(row)
                    s.commit()
                    row = None
                if row is None:
                    s.add(IdempotencyRecord(owner=owner, key=key, fingerprint=fingerprint, created_at=now))
                    try:
                        s.commit()
                        return Claim(NEW)
                    except IntegrityError:
                        s.rollback()  # a concurrent submit inserted it first: read theirs
                        continue
                if row.fingerprint != fingerprint:
                    return Claim(CONFLICT, row.request_id)
                if row.request_id is None:
                    return Claim(PENDING)
                return Claim(REPLAY, row.request_id)
        return Claim(PENDING)

    def complete(self, owner: str, key: str, request_id: str) -> None:
        """Record the request a ``new`` claim created."""
        with self._session() as s:
            row = s.get(IdempotencyRecord, (owner, key))
            if row is not None:
                row.request_id = request_id
                s.commit()

    def release(self, owner: str, key: str) -> None:
        """Forget a claim whose submit failed (or whose request is gone), so a retry may succeed."""
        with self._session() as s:
            s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.owner == owner, IdempotencyRecord.key == key))
            s.commit()

    def purge(self, now: Optional[float] = None) -> int:
        """Delete keys older than ``ttl``; returns how many."""
        now = time.time() if now is None else now
        with self._session() as s:
            result = s.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - self.ttl))
            s.commit()
            return int(result.rowcount or 0)

    def count(self) -> int:
        with self._session() as s:
            return len(s.execute(select(IdempotencyRecord.key)).all())

    def _maybe_purge(self, now: float) -> None:
        if now - self._last_purge >= PURGE_INTERVAL:
            self._last_purge = now
            self.purge(now)
