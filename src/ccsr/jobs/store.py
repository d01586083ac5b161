"""JobStore: every durable change to a request goes through here.

Blocking SQLAlchemy calls, made from worker threads of the HTTP process. Each
method is one short transaction, so a submit is committed before it is answered
and a crash at any point leaves the rows consistent. State changes are guarded
(``WHERE status IN ...``) so two writers (say, a cancel racing a completion, or
two servers sharing one PostgreSQL) cannot both win.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Callable, Iterable, Optional

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ccsr.jobs.config import MAX_LEASE_SECONDS
from ccsr.jobs.db import Base, make_engine, upgrade_table
from ccsr.jobs.dbclock import now_sql
from ccsr.jobs.idempotency import upgrade_keys_table
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.models import (
    ADDED_JOB_COLUMNS,
    CANCELLED,
    FINAL_STATES,
    QUEUED,
    RUNNING,
    Job,
    JobLog,
)


#: Advisory lock key (any constant) serialising schema changes between servers.
_SCHEMA_LOCK = 0x63637372  # "ccsr"


@dataclasses.dataclass
class JobRecord:
    """A detached snapshot of one job row."""

    seq: int
    request_id: str
    app_id: str
    owner: Optional[str]
    status: str
    priority: int
    created_at: float
    started_at: Optional[float]
    finished_at: Optional[float]
    start_deadline: Optional[float]
    input: dict
    base_url: Optional[str]
    webhook_url: Optional[str]
    attempts: int
    cancel_requested: bool
    result: Optional[dict]
    error: Optional[str]
    error_type: Optional[str]
    error_status: Optional[int]
    error_body: Optional[dict]
    inference_time: Optional[float]
    ttl: Optional[float]
    expires_at: Optional[float]
    store_io: bool
    delivered_at: Optional[float]
    files: list[str]
    claimed_by: Optional[str] = None
    lease_until: Optional[float] = None
    interruptions: int = 0
    stored_progress: Optional[float] = None
    log_lines: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATES

    @property
    def error_field(self) -> Optional[str]:
        """The input field at fault of an invalid request."""
        body = self.error_body or {}
        if "field" in body:
            return body["field"]
        detail = body.get("detail")  # rows written before Outcome: FastAPI's 422 body
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = detail[0].get("loc") or []
            return str(loc[-1]) if len(loc) > 1 else None
        return None

    @property
    def outcome(self) -> Optional[Outcome]:
        """How the request ended (None while it runs)."""
        if not self.finished:
            return None
        return Outcome(self.status, self.result, self.error, self.error_type, self.error_field,
                       self.inference_time, tuple(self.files))

    def ended(self, outcome: Outcome, now: float, expires_at: Optional[float]) -> "JobRecord":
        """A copy of this record as :meth:`JobStore.finish` stores ``outcome``."""
        return dataclasses.replace(
            self, status=outcome.status, finished_at=now, result=outcome.result, error=outcome.error,
            error_type=outcome.error_type, error_status=None, error_body=_error_body(outcome),
            inference_time=outcome.inference_time, expires_at=expires_at, files=list(outcome.files),
        )

    @classmethod
    def from_row(cls, r: Job) -> "JobRecord":
        return cls(
            seq=r.seq,
            request_id=r.request_id,
            app_id=r.app_id,
            owner=r.owner,
            status=r.status,
            priority=r.priority,
            created_at=r.created_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            start_deadline=r.start_deadline,
            input=json.loads(r.input_json) if r.input_json else {},
            base_url=r.base_url,
            webhook_url=r.webhook_url,
            attempts=r.attempts or 0,
            cancel_requested=bool(r.cancel_requested),
            result=json.loads(r.result_json) if r.result_json else None,
            error=r.error,
            error_type=r.error_type,
            error_status=r.error_status,
            error_body=json.loads(r.error_body) if r.error_body else None,
            inference_time=r.inference_time,
            ttl=r.ttl,
            expires_at=r.expires_at,
            store_io=bool(r.store_io) if r.store_io is not None else True,
            delivered_at=r.delivered_at,
            files=json.loads(r.files_json) if r.files_json else [],
            claimed_by=r.claimed_by,
            lease_until=r.lease_until,
            interruptions=r.interruptions or 0,
            stored_progress=r.stored_progress,
            log_lines=r.log_lines or 0,
        )


def _error_body(outcome: Outcome) -> Optional[dict]:
    # The error_body column keeps what an outcome adds to its message (the
    # field at fault); how an error looks over HTTP is the service's business.
    return {"field": outcome.field} if outcome.field else None


@dataclasses.dataclass
class LogRecord:
    timestamp: float
    level: str
    message: str


class JobStore:
    """Durable job state on SQLite (WAL) or PostgreSQL."""

    def __init__(self, url_or_engine: str | Engine):
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self.is_postgres = self.engine.dialect.name == "postgresql"

    def create_all(self) -> None:
        """Create missing tables and add the columns older releases lack.

        On PostgreSQL under a transaction-scoped advisory lock: servers started
        together on one database would otherwise race creating the same tables."""
        with self.engine.begin() as conn:
            if self.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            Base.metadata.create_all(conn)
            upgrade_table(conn, Job.__tablename__, ADDED_JOB_COLUMNS)
            upgrade_keys_table(conn)

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return self._session()

    # --- creation and reads ------------------------------------------------
    def add(
        self,
        request_id: str,
        input: dict,
        *,
        owner: Optional[str] = None,
        app_id: str = "fal-ai/ccsr",
        priority: int = 0,
        base_url: Optional[str] = None,
        webhook_url: Optional[str] = None,
        start_deadline: Optional[float] = None,
        ttl: Optional[float] = None,
        store_io: bool = True,
        now: Optional[float] = None,
    ) -> JobRecord:
        """Insert a queued job and commit it (the submit is durable on return)."""
        row = Job(
            request_id=request_id,
            app_id=app_id,
            owner=owner,
            status=QUEUED,
            priority=priority,
            created_at=time.time() if now is None else now,
            start_deadline=start_deadline,
            input_json=json.dumps(input),
            base_url=base_url,
            webhook_url=webhook_url,
            attempts=0,
            cancel_requested=False,
            ttl=ttl,
            store_io=store_io,
        )
        with self.session() as s, s.begin():
            s.add(row)
            s.flush()
            return JobRecord.from_row(row)

    def get(self, request_id: str) -> Optional[JobRecord]:
        with self.session() as s:
            row = s.scalar(select(Job).where(Job.request_id == request_id))
            return JobRecord.from_row(row) if row else None

    def unfinished(self) -> list[JobRecord]:
        """Queued and running jobs in run order (priority, then FIFO)."""
        with self.session() as s:
            rows = s.scalars(
                select(Job).where(Job.status.in_((QUEUED, RUNNING))).order_by(Job.priority, Job.seq)
            ).all()
            return [JobRecord.from_row(r) for r in rows]

    def count_by_status(self) -> dict[str, int]:
        with self.session() as s:
            return {st: n for st, n in s.execute(select(Job.status, func.count()).group_by(Job.status))}

    # --- state changes -------------------------------------------------------
    def _clock(self, now: Optional[float]) -> Any:
        """``now`` when given (tests), else the database's clock as SQL: every
        lease is written and compared in the database's time, so servers whose
        clocks disagree still agree on which leases have passed."""
        return now_sql(self.engine.dialect.name) if now is None else now

    def recover(self, now: Optional[float] = None) -> list[str]:
        """Jobs left RUNNING by a dead node go back to the queue: those whose
        lease has passed (or that have none: rows of an older release).

        Called at start-up and periodically by every server; a job another live
        server runs keeps its lease and is left alone. The cut-short run is an
        interruption, not an attempt: ``attempts`` is given back and
        ``interruptions`` counts it (the scheduler fails a request only after
        ``max_interruptions`` of them). A lease ending further ahead than
        :data:`MAX_LEASE_SECONDS` (written by an older release, with a longer
        lease or by its own clock) is first cut to that: a live holder renews
        it, a dead one's jobs come back that much later at most."""
        t = self._clock(now)
        expired = (Job.status == RUNNING) & (Job.lease_until.is_(None) | (Job.lease_until < t))
        with self.session() as s, s.begin():
            s.execute(update(Job).where(Job.status == RUNNING, Job.lease_until > t + MAX_LEASE_SECONDS)
                      .values(lease_until=t + MAX_LEASE_SECONDS))
            q = select(Job.seq, Job.request_id).where(expired)
            if self.is_postgres:
                q = q.with_for_update(skip_locked=True)
            rows = s.execute(q).all()
            if not rows:
                return []
            s.execute(
                update(Job)
                .where(Job.seq.in_([r.seq for r in rows]), expired)
                .values(status=QUEUED, started_at=None, claimed_by=None, lease_until=None,
                        attempts=Job.attempts - 1,
                        interruptions=Job.interruptions + 1)
            )
            return [r.request_id for r in rows]

    def _claim_values(self, now: Optional[float], node: Optional[str], lease: float) -> dict[str, Any]:
        # started_at is for people (the claimant's clock); the lease is the database's.
        return dict(status=RUNNING, started_at=time.time() if now is None else now, attempts=Job.attempts + 1,
                    claimed_by=node, lease_until=self._clock(now) + min(lease, MAX_LEASE_SECONDS))

    def claim(self, request_id: str, now: Optional[float] = None, *, node: Optional[str] = None,
              lease: float = 30.0) -> bool:
        """Move one queued job to RUNNING; False when someone else got it or it
        was cancelled meanwhile (the conditional UPDATE is the atomic check)."""
        with self.session() as s, s.begin():
            res = s.execute(
                update(Job)
                .where(Job.request_id == request_id, Job.status == QUEUED, Job.cancel_requested.is_(False))
                .values(**self._claim_values(now, node, lease))
            )
            return res.rowcount == 1

    def claim_next(self, now: Optional[float] = None, *, app_id: Optional[str] = None,
                   node: Optional[str] = None, lease: float = 30.0) -> Optional[JobRecord]:
        """Claim the head of the queue (priority, then FIFO), of one app when
        ``app_id`` is given, for ``node`` with a lease of ``lease`` seconds. On
        PostgreSQL the row lock with SKIP LOCKED lets several servers claim at
        once without waiting on each other or taking the same row. The lease
        (at most :data:`MAX_LEASE_SECONDS`) runs on the database's clock."""
        with self.session() as s, s.begin():
            q = select(Job).where(Job.status == QUEUED, Job.cancel_requested.is_(False))
            if app_id is not None:
                q = q.where(Job.app_id == app_id)
            q = q.order_by(Job.priority, Job.seq).limit(1)
            if self.is_postgres:
                q = q.with_for_update(skip_locked=True)
            row = s.scalar(q)
            if row is None:
                return None
            res = s.execute(
                update(Job).where(Job.seq == row.seq, Job.status == QUEUED).values(**self._claim_values(now, node, lease))
            )
            if res.rowcount != 1:
                return None
            s.refresh(row)
            return JobRecord.from_row(row)

    def heartbeat(self, node: str, request_ids: list[str], lease: float,
                  now: Optional[float] = None) -> tuple[list[str], list[str]]:
        """Renew ``node``'s lease on the jobs it runs. Returns the ids whose
        cancel was requested (possibly through another server) and the ids this
        node no longer holds (ended or re-queued elsewhere: stop running them)."""
        if not request_ids:
            return [], []
        mine = (Job.claimed_by == node) & (Job.status == RUNNING)
        until = self._clock(now) + min(lease, MAX_LEASE_SECONDS)
        with self.session() as s, s.begin():
            s.execute(update(Job).where(Job.request_id.in_(request_ids), mine).values(lease_until=until))
            rows = s.execute(
                select(Job.request_id, Job.status, Job.claimed_by, Job.cancel_requested)
                .where(Job.request_id.in_(request_ids))
            ).all()
        held = {r.request_id: r for r in rows if r.status == RUNNING and r.claimed_by == node}
        cancels = [rid for rid, r in held.items() if r.cancel_requested]
        lost = [rid for rid in request_ids if rid not in held]
        return cancels, lost

    def get_many(self, request_ids: list[str]) -> list[JobRecord]:
        """The rows of these requests (missing ones left out)."""
        out: list[JobRecord] = []
        with self.session() as s:
            for i in range(0, len(request_ids), 500):
                rows = s.scalars(select(Job).where(Job.request_id.in_(request_ids[i:i + 500]))).all()
                out.extend(JobRecord.from_row(r) for r in rows)
        return out

    def late(self, now: Optional[float] = None, limit: int = 200) -> list[str]:
        """Queued jobs whose start deadline has passed (whichever server they
        were submitted to, also before a restart). Deadlines are in the
        database's time (the scheduler writes them so)."""
        t = self._clock(now)
        with self.session() as s:
            return list(s.scalars(
                select(Job.request_id)
                .where(Job.status == QUEUED, Job.start_deadline.is_not(None), Job.start_deadline <= t)
                .limit(limit)
            ))

    def queued_keys(self) -> dict[str, list[tuple[int, int, str]]]:
        """Every queued job as ``(priority, seq, request_id)`` per app, in run
        order: the queue of all servers, from which positions are counted."""
        out: dict[str, list[tuple[int, int, str]]] = {}
        with self.session() as s:
            rows = s.execute(
                select(Job.app_id, Job.priority, Job.seq, Job.request_id)
                .where(Job.status == QUEUED).order_by(Job.priority, Job.seq)
            ).all()
        for r in rows:
            out.setdefault(r.app_id, []).append((r.priority, r.seq, r.request_id))
        return out

    @staticmethod
    def _held(request_id: str, node: Optional[str]) -> Any:
        cond = (Job.request_id == request_id) & (Job.status == RUNNING)
        return cond & (Job.claimed_by == node) if node is not None else cond

    def requeue(self, request_id: str, node: Optional[str] = None) -> bool:
        """A running job whose worker died goes back to the queue (same seq: it
        keeps its place). The crashed run stays counted in ``attempts``."""
        with self.session() as s, s.begin():
            res = s.execute(
                update(Job).where(self._held(request_id, node))
                .values(status=QUEUED, started_at=None, claimed_by=None, lease_until=None)
            )
            return res.rowcount == 1

    def release(self, request_id: str, node: Optional[str] = None) -> bool:
        """A clean shutdown hands a running job back: queued again, and the
        interrupted run does not count as an attempt."""
        with self.session() as s, s.begin():
            res = s.execute(
                update(Job)
                .where(self._held(request_id, node))
                .values(status=QUEUED, started_at=None, attempts=Job.attempts - 1, claimed_by=None, lease_until=None)
            )
            return res.rowcount == 1

    def finish(
        self,
        request_id: str,
        outcome: Outcome,
        *,
        expires_at: Optional[float] = None,
        now: Optional[float] = None,
        in_transaction: Optional[Callable[[Session], None]] = None,
        node: Optional[str] = None,
    ) -> bool:
        """Record how a job ended; False when it had already ended.

        ``in_transaction(session)`` runs in the same transaction when the job
        did end here (the webhook outbox row: written together or not at all).
        With ``node``, a RUNNING job ends only while that node still holds it
        (a run whose lease passed and was re-queued elsewhere cannot end it)."""
        assert outcome.status in FINAL_STATES
        body = _error_body(outcome)
        values: dict[str, Any] = dict(
            status=outcome.status,
            finished_at=time.time() if now is None else now,
            result_json=json.dumps(outcome.result) if outcome.result is not None else None,
            error=outcome.error,
            error_type=outcome.error_type,
            error_status=None,
            error_body=json.dumps(body) if body is not None else None,
            inference_time=outcome.inference_time,
            expires_at=expires_at,
            files_json=json.dumps(list(outcome.files)),
        )
        with self.session() as s, s.begin():
            cond = (Job.request_id == request_id) & Job.status.in_((QUEUED, RUNNING))
            if node is not None:
                cond = cond & ((Job.status == QUEUED) | (Job.claimed_by == node))
            res = s.execute(update(Job).where(cond).values(**values))
            if res.rowcount == 1 and in_transaction is not None:
                in_transaction(s)
            return res.rowcount == 1

    def request_cancel(self, request_id: str) -> Optional[str]:
        """Flag a job for cancellation; returns its status before the flag (None if unknown)."""
        with self.session() as s, s.begin():
            row = s.scalar(select(Job).where(Job.request_id == request_id))
            if row is None:
                return None
            if row.status in (QUEUED, RUNNING):
                s.execute(update(Job).where(Job.seq == row.seq).values(cancel_requested=True))
            return row.status

    def mark_delivered(self, request_id: str, now: float, expires_at: Optional[float] = None) -> None:
        values: dict[str, Any] = {"delivered_at": now}
        if expires_at is not None:
            values["expires_at"] = expires_at
        with self.session() as s, s.begin():
            s.execute(update(Job).where(Job.request_id == request_id).values(**values))

    def scrub_input(self, request_id: str) -> None:
        """Forget a request's input (X-Fal-Store-IO: 0)."""
        with self.session() as s, s.begin():
            s.execute(update(Job).where(Job.request_id == request_id).values(input_json="{}"))

    def set_files(self, request_id: str, files: Iterable[str]) -> None:
        with self.session() as s, s.begin():
            s.execute(update(Job).where(Job.request_id == request_id).values(files_json=json.dumps(list(files))))

    # --- logs ------------------------------------------------------------------
    def add_logs(self, request_id: str, lines: Iterable[tuple[float, str, str]],
                 progress: Optional[float] = None) -> None:
        """Append log lines (and, when given, the progress they reached), so
        every server answers a request's status and logs alike."""
        rows = [JobLog(request_id=request_id, timestamp=t, level=lv, message=m) for t, lv, m in lines]
        if not rows:
            return
        values: dict[str, Any] = {"log_lines": Job.log_lines + len(rows)}
        if progress is not None:
            values["stored_progress"] = progress
        with self.session() as s, s.begin():
            s.add_all(rows)
            s.execute(update(Job).where(Job.request_id == request_id).values(**values))

    def logs(self, request_id: str) -> list[LogRecord]:
        with self.session() as s:
            rows = s.scalars(select(JobLog).where(JobLog.request_id == request_id).order_by(JobLog.id)).all()
            return [LogRecord(r.timestamp, r.level, r.message) for r in rows]

    # --- retention -------------------------------------------------------------
    def expired(self, now: Optional[float] = None, limit: int = 500) -> list[JobRecord]:
        now = time.time() if now is None else now
        with self.session() as s:
            rows = s.scalars(
                select(Job).where(Job.expires_at.is_not(None), Job.expires_at <= now).order_by(Job.expires_at).limit(limit)
            ).all()
            return [JobRecord.from_row(r) for r in rows]

    def delete(self, request_id: str) -> None:
        with self.session() as s, s.begin():
            s.execute(delete(JobLog).where(JobLog.request_id == request_id))
            s.execute(delete(Job).where(Job.request_id == request_id))


__all__ = ["JobStore", "JobRecord", "LogRecord", "CANCELLED"]
