"""The job tables: one row per request, and its log lines in a table of their own.

The database is the source of truth for every request (a restart rebuilds the
in-memory queue from it); the HTTP process keeps a hot copy for cheap polling.
Times are unix seconds (floats) so SQLite and PostgreSQL compare them the same way.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import Boolean, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ccsr.jobs.db import Base

# Job states as stored. The protocol's three statuses are derived from these.
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
FINAL_STATES = (COMPLETED, FAILED, CANCELLED)

# Priorities: lower runs first (X-Fal-Queue-Priority: normal before low).
PRIORITY_NORMAL = 0
PRIORITY_LOW = 1


class Job(Base):
    """One request to the model, queued, running or finished."""

    __tablename__ = "ccsr_jobs"

    # seq gives FIFO order within a priority; request_id is what clients see.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    app_id: Mapped[str] = mapped_column(String(128), default="fal-ai/ccsr")
    owner: Mapped[Optional[str]] = mapped_column(String(128), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    priority: Mapped[int] = mapped_column(Integer, default=PRIORITY_NORMAL)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    finished_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    # Start timeout (X-Fal-Request-Timeout): fail if not started by then.
    start_deadline: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    input_json: Mapped[str] = mapped_column(Text)
    base_url: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    webhook_url: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Output JSON with file URLs stored relative ("/files/..."), made absolute per response.
    result_json: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    # Failure (an Outcome, ccsr.jobs.outcome): message, type, and error_body = JSON of
    # its extras ({"field": ...}). error_status is only set on rows written before
    # outcomes were typed (they stored the HTTP status and body themselves).
    error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    error_type: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    error_status: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    error_body: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    inference_time: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    # Retention: seconds results are kept after finishing, and the resulting deadline.
    ttl: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    expires_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True, index=True)
    store_io: Mapped[bool] = mapped_column(Boolean, default=True)
    delivered_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    # Files owned by this job (JSON list of paths relative to the files dir), deleted with it.
    files_json: Mapped[Optional[str]] = mapped_column(Text, nullable=True)
    # Several servers on one database (docs/scale-out.md): the node running the
    # job and until when its claim holds. The node's heartbeat renews the lease;
    # a RUNNING row whose lease has passed was left by a dead node and is queued
    # again by whichever server notices first.
    claimed_by: Mapped[Optional[str]] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    # Runs cut short by a server kill or restart; not failed attempts (those are
    # worker crashes), but capped so a request that kills its server ends.
    interruptions: Mapped[int] = mapped_column(Integer, default=0)
    # Progress and log-line count as last flushed, so other nodes see them.
    stored_progress: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    log_lines: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_ccsr_jobs_status_prio_seq", "status", "priority", "seq"),)


#: Columns added after the first release, with the DDL that adds each to an
#: existing table (create_all makes tables, not columns): db.upgrade_table.
ADDED_JOB_COLUMNS = {
    "claimed_by": "VARCHAR(128)",
    "lease_until": "FLOAT",
    "interruptions": "INTEGER NOT NULL DEFAULT 0",
    "stored_progress": "FLOAT",
    "log_lines": "INTEGER NOT NULL DEFAULT 0",
}


class JobLog(Base):
    """One log line of a request (per step progress, warnings, errors)."""

    __tablename__ = "ccsr_job_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    timestamp: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(8), default="INFO")
    message: Mapped[str] = mapped_column(Text)
