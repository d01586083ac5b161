"""JobStore: durable submit, FIFO-within-priority claiming, guarded state changes,
restart recovery, logs and retention, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

from ccsr.jobs.models import CANCELLED, COMPLETED, FAILED, QUEUED, RUNNING
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.store import JobStore


def _add(store, rid, prio=0, **kw):
    return store.add(rid, {"image_url": f"data:{rid}"}, priority=prio, **kw)


def test_add_is_durable_and_readable_from_a_new_engine(store, db_url):
    rec = _add(store, "a", owner="k1", webhook_url="http://x/hook", ttl=5.0, store_io=False)
    assert rec.status == QUEUED and rec.seq > 0
    other = JobStore(db_url)  # a second connection pool sees the committed row
    got = other.get("a")
    other.close()
    assert got.input == {"image_url": "data:a"}
    assert got.owner == "k1" and got.webhook_url == "http://x/hook" and got.ttl == 5.0 and got.store_io is False
    assert store.get("missing") is None


def test_claim_next_is_fifo_within_priority(store):
    _add(store, "low1", prio=1)
    _add(store, "n1")
    _add(store, "low2", prio=1)
    _add(store, "n2")
    order = []
    while (rec := store.claim_next()) is not None:
        assert rec.status == RUNNING and rec.attempts == 1
        order.append(rec.request_id)
    assert order == ["n1", "n2", "low1", "low2"]
    assert [r.request_id for r in store.unfinished()] == ["n1", "n2", "low1", "low2"]


def test_claim_is_atomic_under_concurrency(store):
    for i in range(20):
        _add(store, f"j{i}")
    won: list[str] = []
    lock = threading.Lock()

    def grab():
        while (rec := store.claim_next()) is not None:
            with lock:
                won.append(rec.request_id)

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(f"j{i}" for i in range(20))  # each exactly once


def test_claim_by_id_refuses_cancelled_and_running(store):
    _add(store, "a")
    _add(store, "b")
    assert store.request_cancel("b") == QUEUED
    assert store.claim("b") is False
    assert store.claim("a") is True
    assert store.claim("a") is False  # already running


def test_finish_only_once(store):
    _add(store, "a")
    store.claim("a")
    assert store.finish("a", Outcome.completed({"seed": 1}, 1.5, ["r/x.png"]), expires_at=10.0)
    assert not store.finish("a", Outcome.failed("late"))
    rec = store.get("a")
    assert rec.status == COMPLETED and rec.result == {"seed": 1} and rec.inference_time == 1.5
    assert rec.files == ["r/x.png"] and rec.finished
    assert store.request_cancel("a") == COMPLETED  # no flag on a finished job
    assert store.get("a").cancel_requested is False


def test_failure_keeps_its_outcome(store):
    _add(store, "a")
    outcome = Outcome.invalid("image_url", "not an image")
    store.finish("a", outcome)
    rec = store.get("a")
    assert rec.status == FAILED and rec.outcome == outcome
    assert rec.outcome.field == "image_url" and rec.outcome.message == "not an image"


def test_recover_puts_running_back_in_place(store):
    for rid in ("a", "b", "c"):
        _add(store, rid)
    assert store.claim_next(now=1000.0, node="n1", lease=10.0).request_id == "a"
    assert store.recover(now=1005.0) == []  # its lease still holds: another server may run it
    assert store.recover(now=1011.0) == ["a"]
    rec = store.get("a")
    # The interrupted run is an interruption, not a failed attempt.
    assert rec.status == QUEUED and rec.attempts == 0 and rec.interruptions == 1 and rec.claimed_by is None
    assert store.claim_next().request_id == "a"  # and it keeps its place at the head
    assert store.requeue("a") and store.get("a").status == QUEUED


def test_logs_and_counts(store):
    _add(store, "a")
    _add(store, "b")
    store.add_logs("a", [(1.0, "INFO", "step 1/4"), (2.0, "INFO", "step 2/4")])
    assert [l.message for l in store.logs("a")] == ["step 1/4", "step 2/4"]
    assert store.logs("b") == []
    store.request_cancel("b")
    store.finish("b", Outcome.cancelled("cancelled"))
    assert store.count_by_status() == {QUEUED: 1, CANCELLED: 1}


def test_expiry_and_delete(store):
    _add(store, "old")
    _add(store, "new")
    store.finish("old", Outcome.completed({}, None), expires_at=100.0)
    store.finish("new", Outcome.completed({}, None), expires_at=1e12)
    store.add_logs("old", [(1.0, "INFO", "x")])
    assert [r.request_id for r in store.expired(now=200.0)] == ["old"]
    store.delete("old")
    assert store.get("old") is None and store.logs("old") == []
    store.mark_delivered("new", 5.0, expires_at=50.0)
    assert store.get("new").delivered_at == 5.0
    assert [r.request_id for r in store.expired(now=60.0)] == ["new"]
    store.scrub_input("new")
    assert store.get("new").input == {}


def test_finish_runs_the_outbox_write_in_its_transaction(store):
    from ccsr.jobs.models import Job

    _add(store, "a")
    _add(store, "b")
    seen = []
    assert store.finish("a", Outcome.completed({}, None), in_transaction=lambda s: seen.append(s.get(Job, 1).status))
    assert seen == [COMPLETED]  # it sees the job already ended, inside the transaction

    def boom(_s):
        raise RuntimeError("outbox write failed")

    try:
        store.finish("b", Outcome.completed({}, None), in_transaction=boom)
    except RuntimeError:
        pass
    assert store.get("b").status == QUEUED  # all or nothing
    assert not store.finish("a", Outcome.failed("x"), in_transaction=boom)  # not called when the job had ended


def test_release_requeues_without_counting_the_attempt(store):
    _add(store, "a")
    store.claim("a")
    assert store.get("a").attempts == 1
    assert store.release("a")
    rec = store.get("a")
    assert rec.status == QUEUED and rec.attempts == 0
    assert not store.release("a")  # only running jobs
