"""The webhook sender: claims due outbox rows, POSTs them signed, records
the outcome.

A claim is a lease (compare-and-set on ``next_attempt_at``), so two senders
never double-send and a crash mid-send only delays. In the app its times are
the database's clock (:mod:`ccsr.jobs.dbclock`), so senders on servers whose
clocks disagree agree on which leases have passed. Retries back off
exponentially (15 s doubling: 10 attempts span about 2 hours). Every delivery
re-checks the URL with the same SSRF rules as image downloads and connects to
the checked address.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ccsr.jobs.dbclock import db_now
from ccsr.service.fetch import (
    BlockedAddress,
    InputError,
    check_outbound_url,
    check_url_syntax,
    make_client,
    open_pinned,
)
from ccsr.service.webhooks.outbox import DELIVERED, FAILED, PENDING, WebhookDelivery, host_of, upgrade_outbox
from ccsr.service.webhooks.signing import WebhookKeys
from ccsr.settings import Settings

log = logging.getLogger("ccsr.webhooks")

BASE_DELAY = 15.0
PRUNE_AFTER = 7 * 24 * 3600.0  # finished deliveries are kept a week for inspection


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
        timeout: Optional[float] = None,
        batch: int = 50,
        concurrency: Optional[int] = None,
        per_host: Optional[int] = None,
    ):
        self._session = session_factory
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self.backoff = backoff
        self.poll_interval = poll_interval
        #: One delivery's time limit: the setting webhook_timeout unless given.
        self.timeout = float(timeout if timeout is not None else settings.webhook_timeout)
        # A claimed delivery must outlive its send, or another server would claim it
        # again while the first still waits on a slow receiver (a duplicate).
        self.lease = max(lease, 2 * self.timeout + 30)
        self.batch = batch
        self.max_attempts = max(1, settings.webhook_max_attempts)
        self.concurrency = max(1, concurrency or settings.webhook_concurrency)
        self.per_host = max(1, per_host or settings.webhook_per_host_concurrency)
        # Sends in flight per receiver host: a host at its cap gets no new claims,
        # so a receiver that never answers holds at most per_host slots.
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._wake: Optional[asyncio.Event] = None
        self._stopping = False
        self._task: Optional[asyncio.Task] = None

    # --- claiming and recording (blocking DB work, run in a thread) -----------------
    def _claim(self, now: float, room: Optional[int] = None, busy: Optional[dict[str, int]] = None) -> list[dict]:
        """Lease up to ``room`` due rows, at most ``per_host`` in flight per host
        (``busy``: sends in flight now). Hosts at their cap are left out in the
        query itself, so any number of rows for a receiver that hangs cannot
        fill the batch and hide another host's rows (head-of-line blocking)."""
        room = self.concurrency if room is None else room
        counts = dict(busy or {})
        full = {h for h, n in counts.items() if n >= self.per_host}
        claimed: list[dict] = []
        with self._session() as s:
            # Each pass either leases rows (no longer due afterwards) or finds
            # more hosts at their cap (left out of the next pass): it ends.
            for _ in range(64):
                if room <= 0:
                    break
                query = select(WebhookDelivery).where(WebhookDelivery.status == PENDING,
                                                      WebhookDelivery.next_attempt_at <= now)
                if full:
                    query = query.where(or_(WebhookDelivery.host.is_(None), WebhookDelivery.host.not_in(sorted(full))))
                rows = s.execute(query.order_by(WebhookDelivery.next_attempt_at).limit(self.batch)).scalars().all()
                progress = False
                for row in rows:
                    if room <= 0:
                        break
                    host = row.host if row.host is not None else host_of(row.url)
                    if counts.get(host, 0) >= self.per_host:
                        continue  # (a row from before the host column) its host is at its cap
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
                    progress = True  # leased here, or by another sender: not due any more either way
                    if res.rowcount == 1:
                        room -= 1
                        counts[host] = counts.get(host, 0) + 1
                        if counts[host] >= self.per_host:
                            full.add(host)
                        claimed.append(
                            {"id": row.id, "request_id": row.request_id, "user_id": row.user_id, "url": row.url,
                             "body": row.body, "attempts": row.attempts,
                             "delivery_id": row.delivery_id or f"{row.request_id}.{row.id}", "host": host}
                        )
                if len(rows) < self.batch or not progress:
                    break  # every due row was seen, or only capped hosts' rows are left
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
            # Stable over every retry and redelivery of this webhook: receivers deduplicate on it.
            "X-Fal-Webhook-Delivery-Id": item["delivery_id"],
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
        # 410 Gone: the receiver says the endpoint is gone for good; retrying only adds load.
        permanent = response.status_code == 410
        return False, response.status_code, f"receiver answered HTTP {response.status_code}", permanent

    async def _handle(self, item: dict) -> None:
        try:
            ok, status, error, permanent = await self._deliver(item)
            await asyncio.to_thread(self._record, item, ok, status, error, permanent)
        finally:
            host = item["host"]
            self._inflight[host] -= 1
            if not self._inflight[host]:
                del self._inflight[host]
            self.notify()  # a slot is free: claim more now

    async def dispatch(self) -> list[asyncio.Task]:
        """Claim due rows for the free slots and start their sends without
        waiting for them: a slow receiver never holds up the next claim."""
        room = self.concurrency - len(self._tasks)
        if room <= 0:
            return []
        items = await asyncio.to_thread(self._claim, self.clock(), room, dict(self._inflight))
        started = []
        for item in items:
            self._inflight[item["host"]] = self._inflight.get(item["host"], 0) + 1
            task = asyncio.create_task(self._handle(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def run_once(self) -> int:
        """Deliver the rows due now that fit the caps and wait for them;
        returns how many were attempted."""
        started = await self.dispatch()
        if started:
            await asyncio.gather(*started)
        return len(started)

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
        last_prune: Optional[float] = None
        while not self._stopping:  # the flag as well as the cancel: shutdown never hangs on one lost cancel
            try:
                await self.dispatch()
                if last_prune is None or time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    await asyncio.to_thread(self.prune)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a DB hiccup must not kill the loop
                log.exception("webhook sender pass failed")
            await self._sleep()
            self._wake.clear()

    async def _sleep(self) -> None:
        """Wait for notify() or the poll interval.

        Not ``asyncio.wait_for``: on Python 3.11 it returns normally when the
        wait finishes in the same loop turn as a cancel, swallowing the cancel,
        and stop() then waited forever. ``asyncio.timeout`` keeps the cancel."""
        try:
            async with asyncio.timeout(self.poll_interval):
                await self._wake.wait()
        except TimeoutError:
            pass

    def start(self) -> asyncio.Task:
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="ccsr-webhook-sender")
        return self._task

    async def stop(self) -> None:
        self._stopping = True
        self.notify()
        for task in list(self._tasks):  # rows keep their lease and are resent after it
            task.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


# --- wiring into the app (called by ccsr.service.app) ----------------------------------


async def start_for_app(app: Any) -> WebhookSender:
    """Start the sender for an app and return it (``notify()`` wakes it).

    Expects ``app.state.settings`` and ``app.state.store`` (with ``session()``).
    """
    settings: Settings = app.state.settings
    store = app.state.store
    await asyncio.to_thread(upgrade_outbox, store.engine)
    keys = getattr(app.state, "webhook_keys", None) or WebhookKeys.load_or_create(Path(settings.data_dir))
    sender = WebhookSender(store.session, keys, settings, clock=lambda: db_now(store.engine))
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
