"""Webhooks: signed, durable, retried deliveries of finished requests.

- Signing: an Ed25519 key pair created on first start in the data dir (0600).
  Each delivery is signed over ``request_id \\n user_id \\n timestamp \\n
  sha256_hex(body)`` and the public key is published as a JWKS at
  ``/.well-known/jwks.json``, the scheme the provider documents, so existing
  receivers verify our webhooks unchanged.
- Durability: deliveries are rows of an outbox table in the job database.
  A sender claims due rows (a lease, so two senders never double-send and a
  crash mid-send only delays), POSTs them, and records the outcome. Retries
  back off exponentially (15 s doubling: 10 attempts span about 2 hours) and
  survive restarts because all state is in the table.
- Safety: every delivery re-checks the URL with the same SSRF rules as image
  downloads and connects to the checked address.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from fastapi import APIRouter
from sqlalchemy import Float, Index, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from ccsr.jobs.db import Base
from ccsr.jobs.models import COMPLETED
from ccsr.service.fetch import (
    BlockedAddress,
    InputError,
    check_outbound_url,
    check_url_syntax,
    make_client,
    open_pinned,
)
from ccsr.service.schemas import absolute_file_urls
from ccsr.settings import Settings

log = logging.getLogger("ccsr.webhooks")

KEY_FILE = "webhook-ed25519.pem"
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
BASE_DELAY = 15.0
PRUNE_AFTER = 7 * 24 * 3600.0  # finished deliveries are kept a week for inspection


# --- signing ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes a signature covers (provider scheme)."""
    return "\n".join([request_id, user_id, str(timestamp), hashlib.sha256(body).hexdigest()]).encode()


class WebhookKeys:
    """The server's webhook signing key."""

    def __init__(self, private_key: Ed25519PrivateKey):
        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_raw = raw
        self.kid = _b64url(hashlib.sha256(raw).digest()[:16])

    @classmethod
    def load_or_create(cls, data_dir: Path) -> "WebhookKeys":
        """Load ``<data_dir>/webhook-ed25519.pem``, creating it (mode 0600) if absent."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                return cls(key)
            except FileExistsError:  # another process won the race: use its key
                pass
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(loaded)

    def sign(self, request_id: str, user_id: str, timestamp: str, body: bytes) -> str:
        """Hex Ed25519 signature of :func:`signed_message`."""
        return self._key.sign(signed_message(request_id, user_id, timestamp, body)).hex()

    def jwks(self) -> dict:
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.public_raw), "kid": self.kid, "use": "sig", "alg": "EdDSA"}
            ]
        }


def verify_webhook(
    jwks: dict,
    *,
    request_id: str,
    user_id: str,
    timestamp: str,
    body: bytes,
    signature_hex: str,
    now: Optional[float] = None,
    tolerance: float = 300.0,
) -> bool:
    """What a receiver does: timestamp within ``tolerance`` s, signature by a JWKS key."""
    try:
        if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
            return False
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        return False
    message = signed_message(request_id, user_id, timestamp, body)
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            continue
        x = jwk["x"]
        try:
            Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))).verify(signature, message)
            return True
        except (InvalidSignature, ValueError):
            continue
    return False


def jwks_router(*, settings: Settings, keys: Optional[WebhookKeys] = None, **_: Any) -> APIRouter:
    """``GET /.well-known/jwks.json``: the public key(s) receivers verify with."""
    keys = keys or WebhookKeys.load_or_create(Path(settings.data_dir))
    router = APIRouter()

    @router.get("/.well-known/jwks.json", tags=["webhooks"], summary="Webhook signing keys (JWKS)")
    async def jwks() -> dict:
        return keys.jwks()

    return router


# --- the outbox ---------------------------------------------------------------------------


class WebhookDelivery(Base):
    """One webhook to deliver: the exact body, and retry state."""

    __tablename__ = "ccsr_webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(128))
    url: Mapped[str] = mapped_column(Text)
    # Serialised once, so every retry signs and sends the same bytes.
    body: Mapped[str] = mapped_column(Text)
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

    ``payload`` is the whole webhook body (see :func:`webhook_body`).
    """
    now = time.time() if now is None else now
    row = WebhookDelivery(
        request_id=request_id,
        user_id=user_id or "local",
        url=url,
        body=_serialise(payload),
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(row)
    return row


def default_backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1-based): 15 s doubling, +-10 % jitter."""
    return BASE_DELAY * 2 ** (attempt - 1) * random.uniform(0.9, 1.1)


class WebhookSender:
    """Delivers due outbox rows; state lives in the database only."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        keys: WebhookKeys,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        backoff: Callable[[int], float] = default_backoff,
        lease: float = 120.0,
        poll_interval: float = 2.0,
        timeout: float = 15.0,
        batch: int = 50,
        concurrency: int = 8,
    ):
        self._session = session_factory
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.backoff = backoff
        self.lease = lease
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.batch = batch
        self.max_attempts = max(1, settings.webhook_max_attempts)
        self._sem = asyncio.Semaphore(concurrency)
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None

    # --- claiming and recording (blocking DB work, run in a thread) -----------------
    def _claim(self, now: float) -> list[dict]:
        with self._session() as s:
            rows = s.execute(
                select(WebhookDelivery)
                .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(self.batch)
            ).scalars().all()
            claimed = []
            for row in rows:
                # Compare-and-set on next_attempt_at: only one sender wins a row.
                res = s.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == row.id,
                        WebhookDelivery.status == PENDING,
                        WebhookDelivery.next_attempt_at == row.next_attempt_at,
                    )
                    .values(next_attempt_at=now + self.lease)
                )
                if res.rowcount == 1:
                    claimed.append(
                        {"id": row.id, "request_id": row.request_id, "user_id": row.user_id, "url": row.url,
                         "body": row.body, "attempts": row.attempts}
                    )
            s.commit()
            return claimed

    def _record(self, item: dict, ok: bool, status: Optional[int], error: Optional[str], permanent: bool) -> None:
        now = self.clock()
        attempts = item["attempts"] + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error}
        if ok:
            values.update(status=DELIVERED, delivered_at=now)
        elif permanent or attempts >= self.max_attempts:
            values.update(status=FAILED)
            log.warning("webhook for %s failed for good after %d attempts: %s", item["request_id"], attempts, error)
        else:
            values.update(next_attempt_at=now + self.backoff(attempts))
        with self._session() as s:
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == item["id"]).values(**values))
            s.commit()

    # --- sending ---------------------------------------------------------------------
    async def _deliver(self, item: dict) -> tuple[bool, Optional[int], Optional[str], bool]:
        """(delivered, HTTP status, error, permanent failure)."""
        body = item["body"].encode()
        try:
            check_url_syntax(item["url"], field="fal_webhook")
        except InputError as exc:
            return False, None, exc.message, True
        try:
            target = await check_outbound_url(item["url"], self.settings, field="fal_webhook")
        except BlockedAddress as exc:
            return False, None, exc.message, True
        except InputError as exc:  # e.g. DNS failure: may be temporary
            return False, None, exc.message, False
        timestamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json",
            "X-Fal-Webhook-Request-Id": item["request_id"],
            "X-Fal-Webhook-User-Id": item["user_id"],
            "X-Fal-Webhook-Timestamp": timestamp,
            "X-Fal-Webhook-Signature": self.keys.sign(item["request_id"], item["user_id"], timestamp, body),
        }
        try:
            async with asyncio.timeout(self.timeout):
                async with make_client(self.timeout) as client:
                    response = await open_pinned(client, "POST", target, headers=headers, content=body)
                    await response.aclose()
        except Exception as exc:  # noqa: BLE001 - any transport failure (timeouts included) is retried
            return False, None, f"{type(exc).__name__}: {exc}"[:500], False
        if 200 <= response.status_code < 300:
            return True, response.status_code, None, False
        return False, response.status_code, f"receiver answered HTTP {response.status_code}", False

    async def _handle(self, item: dict) -> None:
        async with self._sem:
            ok, status, error, permanent = await self._deliver(item)
        await asyncio.to_thread(self._record, item, ok, status, error, permanent)

    async def run_once(self) -> int:
        """Deliver every row due now; returns how many were attempted."""
        items = await asyncio.to_thread(self._claim, self.clock())
        if items:
            await asyncio.gather(*(self._handle(i) for i in items))
        return len(items)

    def prune(self, older_than: float = PRUNE_AFTER) -> int:
        """Delete delivered/failed rows older than ``older_than`` seconds."""
        cutoff = self.clock() - older_than
        with self._session() as s:
            res = s.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.status.in_((DELIVERED, FAILED)), WebhookDelivery.created_at < cutoff
                )
            )
            s.commit()
            return res.rowcount or 0

    def notify(self) -> None:
        """Wake the loop now (a delivery was just enqueued)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Loop forever: deliver due rows, then sleep until woken or the next poll."""
        self._wake = asyncio.Event()
        last_prune = 0.0
        while True:
            try:
                while await self.run_once():
                    pass
                if self.clock() - last_prune > 3600:
                    last_prune = self.clock()
                    await asyncio.to_thread(self.prune)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a DB hiccup must not kill the loop
                log.exception("webhook sender pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    def start(self) -> asyncio.Task:
        self._task = asyncio.create_task(self.run(), name="ccsr-webhook-sender")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


# --- wiring into the app (called by ccsr.service.app) ----------------------------------


def body_for_view(view: Any) -> dict:
    """The webhook body of a finished job view (ccsr.jobs.scheduler.JobView)."""
    base = (view.base_url or "").rstrip("/")
    if view.status == COMPLETED:
        payload = absolute_file_urls(view.result, base) if base else view.result
        return webhook_body(view.request_id, ok=True, payload=payload)
    payload = view.error_body or {"detail": view.error, "error_type": view.error_type}
    return webhook_body(view.request_id, ok=False, payload=payload, error=view.error or view.error_type)


def add_to_outbox(session: Session, view: Any) -> WebhookDelivery:
    """Add the webhook of a finished job view to the outbox in the caller's
    transaction: the scheduler calls it inside the transaction that ends the
    job, so the job's end and its webhook are written together or not at all."""
    return enqueue_webhook(session, view.request_id, view.owner, view.webhook_url, body_for_view(view))


async def start_for_app(app: Any) -> WebhookSender:
    """Start the sender for an app and return it (``notify()`` wakes it).

    Expects ``app.state.settings`` and ``app.state.store`` (with ``session()``).
    """
    settings: Settings = app.state.settings
    store = app.state.store
    keys = getattr(app.state, "webhook_keys", None) or WebhookKeys.load_or_create(Path(settings.data_dir))
    sender = WebhookSender(store.session, keys, settings)
    app.state.webhook_keys = keys
    app.state.webhook_sender = sender
    sender.start()
    return sender


async def stop_for_app(app: Any) -> None:
    sender: Optional[WebhookSender] = getattr(app.state, "webhook_sender", None)
    if sender is not None:
        await sender.stop()


def make_session_factory(engine: Any) -> Callable[[], Session]:
    return sessionmaker(engine, expire_on_commit=False)
