"""The webhook outbox: deliveries are rows of a table in the job database,
written in the same transaction that ends the job, so a finished job and its
webhook are stored together or not at all; the sender (sender.py) delivers
them from there and survives restarts because all state is in the table.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional
from urllib.parse import urlsplit

from sqlalchemy import Float, Index, Integer, String, Text, inspect, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from ccsr.jobs.db import Base
from ccsr.jobs.dbclock import db_now
from ccsr.jobs.models import COMPLETED
from ccsr.service.inline import without_images
from ccsr.service.schemas import absolute_file_urls

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


class WebhookDelivery(Base):
    """One webhook to deliver: the exact body, and retry state."""

    __tablename__ = "ccsr_webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text)
    # The URL's host, lower-case: the sender's per-host cap filters on it in
    # SQL, so the rows of a host at its cap never fill the claim's batch.
    host: Mapped[Optional[str]] = mapped_column(String(255), nullable=True)
    # Serialised once, so every retry signs and sends the same bytes.
    body: Mapped[str] = mapped_column(Text)
    # Sent as X-Fal-Webhook-Delivery-Id on every attempt, so receivers can deduplicate.
    delivery_id: Mapped[Optional[str]] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    delivered_at: Mapped[Optional[float]] = mapped_column(Float, nullable=True)
    last_status: Mapped[Optional[int]] = mapped_column(Integer, nullable=True)
    last_error: Mapped[Optional[str]] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_ccsr_webhook_outbox_due", "status", "next_attempt_at"),)


def webhook_body(
    request_id: str,
    *,
    ok: bool,
    payload: Any,
    error: Optional[str] = None,
    gateway_request_id: Optional[str] = None,
) -> dict:
    """The provider's webhook body: ``{request_id, gateway_request_id, status, payload[, error]}``."""
    body: dict[str, Any] = {
        "request_id": request_id,
        "gateway_request_id": gateway_request_id or request_id,
        "status": "OK" if ok else "ERROR",
        "payload": payload,
    }
    if not ok:
        body["error"] = error or "Request failed."
    return body


def host_of(url: str) -> str:
    """The per-host cap's key: the URL's host name, lower-case ("" if none)."""
    try:
        return (urlsplit(url).hostname or "").lower()[:255]
    except ValueError:
        return ""


def _serialise(body: dict) -> str:
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        # The provider's convention: null payload plus payload_error.
        fallback = {**body, "payload": None, "payload_error": f"Output could not be serialised: {exc}"}
        return json.dumps(fallback, separators=(",", ":"), default=str)


def enqueue_webhook(
    session: Session, request_id: str, user_id: Optional[str], url: str, payload: dict, *, now: Optional[float] = None
) -> WebhookDelivery:
    """Add a delivery to the outbox in the caller's transaction (commit is theirs).

    ``payload`` is the whole webhook body (see :func:`webhook_body`). Its
    times are the database's (``now`` aside): the sender's leases are.
    """
    now = db_now(session) if now is None else now
    row = WebhookDelivery(
        request_id=request_id,
        user_id=user_id or "local",
        url=url,
        host=host_of(url),
        body=_serialise(payload),
        delivery_id=uuid.uuid4().hex,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row


def body_for_view(view: Any) -> dict:
    """The webhook body of a finished job view (ccsr.jobs.scheduler.JobView)."""
    base = (view.base_url or "").rstrip("/")
    if view.status == COMPLETED:
        result = without_images(view.result)  # sync_mode: the image is never kept, here neither
        payload = absolute_file_urls(result, base) if base else result
        return webhook_body(view.request_id, ok=True, payload=payload)
    payload = view.error_body or {"detail": view.error, "error_type": view.error_type}
    return webhook_body(view.request_id, ok=False, payload=payload, error=view.error or view.error_type)


def add_to_outbox(session: Session, view: Any) -> WebhookDelivery:
    """Add the webhook of a finished job view to the outbox in the caller's
    transaction: the scheduler calls it inside the transaction that ends the
    job, so the job's end and its webhook are written together or not at all."""
    return enqueue_webhook(session, view.request_id, view.owner, view.webhook_url, body_for_view(view))


def upgrade_outbox(engine: Any) -> None:
    """Add the columns newer versions use to an outbox table made before them
    (create_all adds tables, not columns). ``delivery_id``: old rows fall back
    to ``<request_id>.<row id>``, also stable over retries. ``host``: filled
    in for the rows still to be sent."""
    table = WebhookDelivery.__tablename__
    columns = {c["name"] for c in inspect(engine).get_columns(table)}
    if not columns:
        return
    if "delivery_id" not in columns:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN delivery_id VARCHAR(64)"))
    if "host" not in columns:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN host VARCHAR(255)"))
            pending = conn.execute(text(f"SELECT id, url FROM {table} WHERE status = :s"), {"s": PENDING}).all()
            for row_id, url in pending:
                conn.execute(text(f"UPDATE {table} SET host = :h WHERE id = :i"), {"h": host_of(url), "i": row_id})
