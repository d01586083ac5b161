"""How a request ends: a run's last event becomes its outcome, made durable.

A part of :class:`ccsr.jobs.scheduler.Scheduler` kept in its own module (the
scheduler inherits it): turning Done, Failed and WorkerLost into an
:class:`Outcome` (publishing a result, sending a run the store failed back to
the queue, retrying a lost worker) and :meth:`Endings._finish`, which writes
the ending with its log lines and webhook in one transaction and retires the
view. It uses the scheduler's store, log buffer, storage, live set, edges,
hooks and config.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ccsr.errors import InvalidParameter
from ccsr.executors.base import Done, Event, Failed, Interrupted, WorkerLost
from ccsr.jobs.models import COMPLETED, QUEUED
from ccsr.jobs.outcome import CANCELLED_RUNNING, Outcome
from ccsr.jobs.view import JobView
from ccsr.storage import BlobStoreError, StoreUnavailable

log = logging.getLogger("ccsr.jobs.scheduler")


class Endings:
    """The ending half of the scheduler (see the module doc)."""

    async def _on_ending(self, view: JobView, ev: Event) -> None:
        try:
            await self._end(view, ev)
        finally:
            if view.status != QUEUED:  # queued again: its leftovers went before (a new run may be storing its own)
                self._spawn(self.storage.drop_leftovers(view.request_id, view.input_key, view.output_key,
                                                        view.input, False))

    async def _end(self, view: JobView, ev: Event) -> None:
        if isinstance(ev, Done):
            try:
                published = await self.edges.publish(view, ev)
            except InvalidParameter as exc:  # the result breaks a limit of the request (sync_mode's size)
                await self._finish(view, Outcome.invalid(exc.field, exc.message))
                return
            except StoreUnavailable:  # the result's metadata could not be written: run it again
                await self._back_to_queue(view, "the blob store is unavailable; the result could not be stored")
                return
            except Exception as exc:  # noqa: BLE001
                log.exception("storing the result of %s failed", view.request_id)
                safe = str(exc) if isinstance(exc, BlobStoreError) else "see the server log"  # no bucket, no key
                await self._finish(view, Outcome.failed(f"Could not store the result: {safe}"))
                return
            view.output_key = None  # the result blob is a stored file now: not a leftover
            summary = f", {published.summary}" if published.summary else ""
            self.logs.add(view, "INFO", f"done in {ev.inference_time:.2f}s{summary}")
            await self._finish(view, Outcome.completed(published.result, ev.inference_time, published.files))
        elif isinstance(ev, Failed) and await self._cancel_asked(view):
            # A run that failed after its cancel was asked for (here, or on another
            # server whose word has not reached this one yet): the cancel is what ends it.
            await self._finish(view, Outcome.cancelled(CANCELLED_RUNNING))
        elif isinstance(ev, Failed) and ev.kind == Failed.UNAVAILABLE:
            # The worker could not read the input or write the result. Its store
            # (another process, maybe another machine) is likely ours: claim
            # nothing until the next check of the store passes.
            self.storage.health.down("a worker could not reach the blob store")
            await self._back_to_queue(view, "the worker could not reach the blob store")
        elif isinstance(ev, Failed):
            await self._finish(view, Outcome.of_failure(ev.kind, ev.message, ev.field))
        elif isinstance(ev, WorkerLost):
            self.logs.add(view, "ERROR", ev.message)
            if view.cancel_requested:
                await self._finish(view, Outcome.cancelled(CANCELLED_RUNNING))
            elif view.attempts < self.config.max_attempts:
                self.logs.add(view, "WARN", f"retrying (attempt {view.attempts + 1} of {self.config.max_attempts})")
                await self._drop_blobs(view)
                view.local_run, view.input_key, view.output_key = False, None, None
                if await asyncio.to_thread(self.store.requeue, view.request_id, self.node):
                    view.status = QUEUED
                    view.started_at = None
                    view.progress = 0.0
                    self._enqueue(view)
                    view.touch()
            else:
                await self._finish(view, Outcome.failed(
                    f"{ev.message}; the request was tried {view.attempts} times and failed every time, "
                    f"so it is not retried again."))
        elif isinstance(ev, Interrupted):
            # Not the request's fault (the Ray head was lost): queued again, uncounted.
            self.logs.add(view, "WARN", ev.message)
            if view.cancel_requested:
                await self._finish(view, Outcome.cancelled(CANCELLED_RUNNING))
                return
            view.local_run = False
            if await asyncio.to_thread(self.store.release, view.request_id, self.node):
                view.status, view.started_at, view.progress = QUEUED, None, 0.0
                view.attempts = max(0, view.attempts - 1)
                self._enqueue(view)
                view.touch()

    async def _cancel_asked(self, view: JobView) -> bool:
        """Whether the request's cancel was asked for, on any server: the flag
        reaches this one with its next heartbeat, so a failing run asks the
        database rather than wait for it."""
        if not view.cancel_requested:
            try:
                rec = await asyncio.to_thread(self.store.get, view.request_id)
            except Exception:  # noqa: BLE001 - the database's trouble: the run's own ending stands
                log.exception("reading the cancel flag of %s failed", view.request_id)
                return False
            if rec is not None and rec.cancel_requested:
                view.cancel_requested = True
        return view.cancel_requested

    # --- endings ---------------------------------------------------------------------------
    async def _finish(self, view: JobView, outcome: Outcome) -> None:
        if view.finished:
            return
        now = time.time()
        ttl = view.ttl if view.ttl is not None else self.config.result_ttl
        final = view.record.ended(outcome, now, now + ttl)
        if outcome.error is not None:
            self.logs.add(view, "ERROR", outcome.error)
        in_tx = None
        if view.webhook_url and self.outbox is not None:
            outbox, final_view = self.outbox, JobView(final)
            in_tx = lambda session: outbox(session, final_view)  # noqa: E731

        def persist() -> bool:
            self.store.add_logs(view.request_id, lines)
            ok = self.store.finish(view.request_id, outcome, expires_at=final.expires_at, now=now,
                                   in_transaction=in_tx, node=self.node)
            if ok and not view.store_io:
                self.store.scrub_input(view.request_id)
            return ok

        async with self.logs.lock:
            lines = self.logs.take(view.request_id)
            ok = await asyncio.to_thread(persist)
        # This server's run's blobs; when this server ended the request, also
        # the submitted input (a data URI in the blob store) and every run's
        # input (what an attempt interrupted by a restart left behind). When
        # another server holds the request (a cancel sent here while it claimed
        # it), nothing of its run is touched: it still reads its input, and
        # removes it when it ends the request. In the background: a stalled
        # store must not hold up the ending (and the slot).
        self._spawn(self.storage.drop_leftovers(view.request_id, view.input_key, view.output_key, view.input, ok))
        was_local = view.local_run
        view.local_run = False
        if not ok:
            # Ended by another server, or running there (claimed before our
            # cancel or deadline landed): take the database's word.
            rec = await asyncio.to_thread(self.store.get, view.request_id)
            if rec is None:
                self.live.drop(view.request_id)
                view.touch()
                return
            if not rec.finished:
                view.record = rec  # the node loop watches it from here
                view.touch()
                return
            final = rec
        if not view.store_io:
            final.input = {}
        view.record = final
        if final.status == COMPLETED:
            view.progress = 1.0
        self.live.retire(view)
        view.touch()
        if in_tx is not None and ok and self.on_outbox is not None:
            self.on_outbox()
        if not was_local and not ok:
            return  # counted by the server that ended it
        try:
            self.hooks.job_finished(view)
        except Exception:  # noqa: BLE001 - a hook must not break the queue
            log.exception("job_finished hook failed for %s", view.request_id)
