"""Leases of running jobs (several servers on one database): renewal by
heartbeat, recovery of expired leases only, interruptions counted apart from
attempts, guarded endings, cancels seen by the running node, and the upgrade
of a table made by an older release. On SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import MetaData, Table, text

from ccsr.jobs.models import ADDED_JOB_COLUMNS, COMPLETED, QUEUED, RUNNING, Job
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.store import JobStore


def _add(store, rid, prio=0):
    return store.add(rid, {"image_url": f"data:{rid}"}, priority=prio, now=1.0)


def test_heartbeat_renews_and_recovery_takes_only_expired_leases(store):
    _add(store, "a")
    _add(store, "b")
    assert store.claim_next(now=1000.0, node="n1", lease=10.0).request_id == "a"
    assert store.claim_next(now=1000.0, node="n2", lease=10.0).request_id == "b"
    rec = store.get("a")
    assert rec.claimed_by == "n1" and rec.lease_until == 1010.0
    assert store.heartbeat("n1", ["a"], lease=10.0, now=1008.0) == ([], [])
    assert store.get("a").lease_until == 1018.0
    # n2 stopped renewing (killed): only its job goes back, n1's is left running
    assert store.recover(now=1015.0) == ["b"]
    assert store.get("a").status == RUNNING and store.get("b").status == QUEUED
    assert store.recover(now=1019.0) == ["a"]


def test_interruptions_are_counted_apart_from_attempts(store):
    _add(store, "a")
    for i in range(1, 4):
        rec = store.claim_next(now=1000.0 * i, node=f"n{i}", lease=10.0)
        assert rec.request_id == "a" and rec.attempts == 1 and rec.interruptions == i - 1
        assert store.recover(now=1000.0 * i + 11) == ["a"]
    rec = store.get("a")
    assert rec.status == QUEUED and rec.attempts == 0 and rec.interruptions == 3
    # a worker crash (requeue) still counts as an attempt
    store.claim_next(now=5000.0, node="n9", lease=10.0)
    assert store.requeue("a", "n9")
    rec = store.get("a")
    assert rec.attempts == 1 and rec.interruptions == 3 and rec.claimed_by is None


def test_a_node_that_lost_its_lease_cannot_end_or_requeue_the_job(store):
    _add(store, "a")
    store.claim_next(now=1000.0, node="n1", lease=10.0)
    assert store.recover(now=1011.0) == ["a"]  # n1 stalled past its lease
    store.claim_next(now=1012.0, node="n2", lease=10.0)
    # n1 wakes up: its heartbeat says the job is no longer its own
    assert store.heartbeat("n1", ["a"], lease=10.0, now=1013.0) == ([], ["a"])
    assert not store.finish("a", Outcome.completed({"x": 1}, 0.1), node="n1")
    assert not store.requeue("a", "n1") and not store.release("a", "n1")
    assert store.get("a").status == RUNNING and store.get("a").claimed_by == "n2"
    assert store.finish("a", Outcome.completed({"x": 2}, 0.1), node="n2")
    rec = store.get("a")
    assert rec.status == COMPLETED and rec.result == {"x": 2}


def test_heartbeat_reports_a_cancel_sent_to_another_server(store, db_url):
    _add(store, "a")
    store.claim_next(now=1000.0, node="n1", lease=10.0)
    other = JobStore(db_url)  # the server the cancel was sent to
    try:
        assert other.request_cancel("a") == RUNNING
    finally:
        other.close()
    assert store.heartbeat("n1", ["a"], lease=10.0, now=1001.0) == (["a"], [])


def test_claim_next_per_app_and_queued_keys(store):
    store.add("c1", {}, app_id="fal-ai/ccsr", now=1.0)
    store.add("e1", {}, app_id="fal-ai/esrgan", now=1.0)
    store.add("c2", {}, app_id="fal-ai/ccsr", priority=1, now=1.0)
    keys = store.queued_keys()
    assert [k[2] for k in keys["fal-ai/ccsr"]] == ["c1", "c2"] and [k[2] for k in keys["fal-ai/esrgan"]] == ["e1"]
    assert store.claim_next(app_id="fal-ai/esrgan", node="n").request_id == "e1"
    assert store.claim_next(app_id="fal-ai/esrgan", node="n") is None
    assert store.claim_next(app_id="fal-ai/ccsr", node="n").request_id == "c1"
    assert [k[2] for k in store.queued_keys()["fal-ai/ccsr"]] == ["c2"]


def test_progress_and_log_count_are_persisted_with_the_lines(store):
    _add(store, "a")
    store.add_logs("a", [(1.0, "INFO", "step 1/4"), (2.0, "INFO", "step 2/4")], progress=0.5)
    rec = store.get("a")
    assert rec.stored_progress == 0.5 and rec.log_lines == 2
    assert [r.request_id for r in store.get_many(["a", "missing"])] == ["a"]


def test_a_table_of_an_older_release_is_upgraded(db_url):
    """A database made before leases: create_all adds the columns, and a job
    the old server left RUNNING (no lease) is recovered as an interruption."""
    store = JobStore(db_url)
    try:
        md = MetaData()
        Table(Job.__tablename__, md, *[c._copy() for c in Job.__table__.columns if c.name not in ADDED_JOB_COLUMNS])
        md.create_all(store.engine)
        with store.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO ccsr_jobs (request_id, app_id, status, priority, created_at, started_at, input_json, "
                "attempts, cancel_requested, store_io) VALUES ('old', 'fal-ai/ccsr', 'running', 0, 1.0, 2.0, '{}', 1, "
                ":f, :t)"), {"f": False, "t": True})
        store.create_all()
        store.create_all()  # a second server starting: nothing left to add
        rec = store.get("old")
        assert rec.status == RUNNING and rec.claimed_by is None and rec.interruptions == 0 and rec.log_lines == 0
        assert store.recover() == ["old"]
        rec = store.get("old")
        assert rec.status == QUEUED and rec.attempts == 0 and rec.interruptions == 1
    finally:
        store.close()


def test_servers_starting_together_create_the_schema_once():
    """Several servers started at once on one fresh PostgreSQL database (the
    shared case; SQLite serves one server): no one fails on a table or column
    another is creating (an advisory lock serialises them)."""
    from ccsr.testing import temporary_postgres_database

    with temporary_postgres_database() as url:
        _start_together(url)


def _start_together(db_url: str) -> None:
    import threading

    stores = [JobStore(db_url) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def start(store: JobStore) -> None:
        try:
            barrier.wait()
            store.create_all()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        stores[0].add("a", {})
        assert stores[1].get("a").interruptions == 0
    finally:
        for s in stores:
            s.close()


def test_late_lists_queued_jobs_past_their_start_deadline(store):
    store.add("late", {}, start_deadline=50.0, now=1.0)
    store.add("later", {}, start_deadline=500.0, now=1.0)
    store.add("none", {}, now=1.0)
    store.add("running", {}, start_deadline=50.0, now=1.0)
    store.claim("running", now=2.0, node="n")
    assert store.late(now=100.0) == ["late"]
    assert sorted(store.late(now=600.0)) == ["late", "later"]


def test_leases_are_written_and_compared_on_the_databases_clock(store):
    """No ``now``: every lease time is the database's (issue 24, point 3), so a
    server's own clock, however wrong, never decides one."""
    from ccsr.jobs.config import MAX_LEASE_SECONDS
    from ccsr.jobs.dbclock import db_now

    _add(store, "a")
    _add(store, "b")
    before = db_now(store.engine)
    store.claim_next(node="n1", lease=10.0)
    assert before + 10 <= store.get("a").lease_until <= db_now(store.engine) + 10
    assert store.recover() == []  # still held
    store.heartbeat("n1", ["a"], lease=5.0)
    assert store.get("a").lease_until <= db_now(store.engine) + 5
    # a lease longer than the cap (a server asking for ten minutes) is cut to it
    store.claim_next(node="n2", lease=600.0)
    assert store.get("b").lease_until <= db_now(store.engine) + MAX_LEASE_SECONDS
    store.heartbeat("n2", ["b"], lease=600.0)
    assert store.get("b").lease_until <= db_now(store.engine) + MAX_LEASE_SECONDS


def test_a_lease_beyond_the_cap_strands_its_job_no_longer_than_the_cap(store):
    """A lease ending an hour ahead (an older release's long lease, or its
    clock far ahead): recovery cuts it to the cap, so the job of a dead
    holder comes back within that."""
    from ccsr.jobs.config import MAX_LEASE_SECONDS

    _add(store, "a")
    store.claim_next(now=1000.0, node="old", lease=10.0)
    with store.session() as s, s.begin():
        s.execute(Job.__table__.update().values(lease_until=1000.0 + 3600))
    assert store.recover(now=1001.0) == []
    assert store.get("a").lease_until == 1001.0 + MAX_LEASE_SECONDS
    assert store.recover(now=1002.0 + MAX_LEASE_SECONDS) == ["a"]
