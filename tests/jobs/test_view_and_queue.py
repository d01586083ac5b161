"""JobView wraps the stored record (one copy of each durable field), the
per-app queue index answers positions in run order, and an Outcome survives
the store round trip."""

from __future__ import annotations

import asyncio
import dataclasses

from ccsr.jobs.models import COMPLETED, PRIORITY_LOW, QUEUED
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.queue_index import QueueIndex
from ccsr.jobs.store import JobRecord
from ccsr.jobs.view import JobView


def _record(rid: str, seq: int, priority: int = 0) -> JobRecord:
    fields = {f.name: None for f in dataclasses.fields(JobRecord)}
    fields.update(seq=seq, request_id=rid, app_id="some/app", status=QUEUED, priority=priority, created_at=0.0,
                  input={}, attempts=0, cancel_requested=False, store_io=True, files=[])
    return JobRecord(**fields)


def test_the_view_reads_and_writes_through_its_record():
    rec = _record("a", 1)
    view = JobView(rec)
    assert view.request_id == "a" and view.app_id == "some/app"
    view.attempts += 1
    view.status = "running"
    assert rec.attempts == 1 and rec.status == "running"  # no second copy of the field
    assert "attempts" not in vars(view) and "status" not in vars(view)
    view.progress = 0.5  # in-memory state lives on the view
    assert not hasattr(rec, "progress")


def test_an_ended_record_carries_the_outcome():
    rec = _record("a", 1)
    outcome = Outcome.completed({"image": {"url": "/files/k/x.png"}}, 1.25, ["/files/k/x.png"])
    ended = rec.ended(outcome, now=10.0, expires_at=20.0)
    assert ended.status == COMPLETED and ended.outcome == outcome and ended.expires_at == 20.0
    assert rec.status == QUEUED  # the live record is replaced, not changed
    bad = rec.ended(Outcome.invalid("scale", "too big"), now=1.0, expires_at=None)
    assert bad.outcome.field == "scale" and bad.outcome.message == "too big" and bad.error == "scale: too big"


def test_queue_positions_follow_priority_then_arrival():
    async def go():
        q = QueueIndex()
        a, b, low = JobView(_record("a", 1)), JobView(_record("b", 2)), JobView(_record("low", 3, PRIORITY_LOW))
        changed = q.changed
        for v in (low, b, a):
            q.push(v)
        assert changed.is_set() and q.ids() == ["a", "b", "low"] and q.head() == "a"
        assert [q.position(v) for v in (a, b, low)] == [0, 1, 2]
        assert q.remove(a) and not q.remove(a)
        assert q.position(b) == 0 and len(q) == 2

    asyncio.run(go())
