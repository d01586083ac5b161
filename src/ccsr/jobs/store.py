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

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from ccsr.jobs.db import Base, make_engine
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.models import (
    CANCELLED,
    FINAL_STATES,
    QUEUED,
    RUNNING,
    Job,
    JobLog,
)


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
        Base.metadata.create_all(self.engine)

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
    def recover(self) -> list[str]:
        """At start-up: jobs left RUNNING by a dead process go back to the queue.

        Their ``attempts`` already counts the interrupted run, so a request that
        keeps killing the server is failed after ``max_attempts`` like a worker crash.
        """
        with self.session() as s, s.begin():
            ids = list(s.scalars(select(Job.request_id).where(Job.status == RUNNING)))
            if ids:
                s.execute(update(Job).where(Job.status == RUNNING).values(status=QUEUED, started_at=None))
            return ids

    def claim(self, request_id: str, now: Optional[float] = None) -> bool:
        """Move one queued job to RUNNING; False when someone else got it or it
        was cancelled meanwhile (the conditional UPDATE is the atomic check)."""
        with self.session() as s, s.begin():
            res = s.execute(
                update(Job)
                .where(Job.request_id == request_id, Job.status == QUEUED, Job.cancel_requested.is_(False))
                .values(status=RUNNING, started_at=time.time() if now is None else now, attempts=Job.attempts + 1)
            )
            return res.rowcount == 1

    def claim_next(self, now: Optional[float] = None) -> Optional[JobRecord]:
        """Claim the head of the queue (priority, then FIFO). On PostgreSQL the
        row lock with SKIP LOCKED lets several servers share one database."""
        now = time.time() if now is None else now
        with self.session() as s, s.begin():
            q = (
                select(Job)
                .where(Job.status == QUEUED, Job.cancel_requested.is_(False))
                .order_by(Job.priority, Job.seq)
                .limit(1)
            )
            if self.is_postgres:
                q = q.with_for_update(skip_locked=True)
            row = s.scalar(q)
            if row is None:
                return None
            res = s.execute(
                update(Job)
                .where(Job.seq == row.seq, Job.status == QUEUED)
                .values(status=RUNNING, started_at=now, attempts=Job.attempts + 1)
            )
            if res.rowcount != 1:
                return None
            s.refresh(row)
            return JobRecord.from_row(row)

    def requeue(self, request_id: str) -> bool:
        """A running job whose worker died goes back to the queue (same seq: it keeps its place)."""
        with self.session() as s, s.begin():
            res = s.execute(
                update(Job).where(Job.request_id == request_id, Job.status == RUNNING).values(status=QUEUED, started_at=None)
            )
            return res.rowcount == 1

    def release(self, request_id: str) -> bool:
        """A clean shutdown hands a running job back: queued again, and the
        interrupted run does not count as an attempt."""
        with self.session() as s, s.begin():
            res = s.execute(
                update(Job)
                .where(Job.request_id == request_id, Job.status == RUNNING)
                .values(status=QUEUED, started_at=None, attempts=Job.attempts - 1)
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
    ) -> bool:
        """Record how a job ended; False when it had already ended.

        ``in_transaction(session)`` runs in the same transaction when the job
        did end here (the webhook outbox row: written together or not at all)."""
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
            res = s.execute(
                update(Job).where(Job.request_id == request_id, Job.status.in_((QUEUED, RUNNING))).values(**values)
            )
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
    def add_logs(self, request_id: str, lines: Iterable[tuple[float, str, str]]) -> None:
        rows = [JobLog(request_id=request_id, timestamp=t, level=lv, message=m) for t, lv, m in lines]
        if not rows:
            return
        with self.session() as s, s.begin():
            s.add_all(rows)

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
