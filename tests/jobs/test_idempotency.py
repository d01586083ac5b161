"""The idempotency-key table on SQLite and PostgreSQL (issue 11, point 9)."""

from __future__ import annotations

import threading

from ccsr.jobs.idempotency import CONFLICT, NEW, PENDING, REPLAY, IdempotencyStore


def _keys(store, ttl=24 * 3600):
    keys = IdempotencyStore(store.engine, ttl=ttl)
    keys.create_all()
    return keys


def test_claim_complete_replay_conflict(store):
    keys = _keys(store)
    assert keys.claim("alice", "k1", "f1", now=1000).outcome == NEW
    assert keys.claim("alice", "k1", "f1", now=1001).outcome == PENDING
    keys.complete("alice", "k1", "req-1")
    again = keys.claim("alice", "k1", "f1", now=1002)
    assert (again.outcome, again.request_id) == (REPLAY, "req-1")
    assert keys.claim("alice", "k1", "other body", now=1003).outcome == CONFLICT
    assert keys.claim("bob", "k1", "f1", now=1004).outcome == NEW  # keys are per owner


def test_keys_expire_after_the_ttl(store):
    keys = _keys(store, ttl=100)
    assert keys.claim("alice", "k", "f1", now=0).outcome == NEW
    keys.complete("alice", "k", "req-1")
    assert keys.claim("alice", "k", "f2", now=50).outcome == CONFLICT
    assert keys.claim("alice", "k", "f2", now=101).outcome == NEW  # expired: reusable
    assert keys.purge(now=10_000) == 1 and keys.count() == 0


def test_release_lets_a_retry_claim_again(store):
    keys = _keys(store)
    assert keys.claim("alice", "k", "f", now=0).outcome == NEW
    keys.release("alice", "k")
    assert keys.claim("alice", "k", "f", now=1).outcome == NEW


def test_concurrent_claims_have_one_winner(store):
    keys = _keys(store)
    outcomes = []
    barrier = threading.Barrier(8)

    def go():
        barrier.wait()
        outcomes.append(keys.claim("alice", "race", "f", now=5).outcome)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(NEW) == 1 and set(outcomes) <= {NEW, PENDING}


def test_a_submit_that_never_finished_frees_its_key_after_a_short_bound(store):
    """A server killed between claiming a key and recording its request leaves a
    row without a request id: retries wait (PENDING) only until STALE_PENDING,
    then the key is taken over, not blocked for the whole ttl."""
    from ccsr.jobs.idempotency import STALE_PENDING

    keys = _keys(store)
    assert keys.claim("alice", "k", "f", now=0).outcome == NEW  # ... and the server dies here
    assert keys.claim("alice", "k", "f", now=STALE_PENDING - 1).outcome == PENDING
    assert keys.claim("alice", "k", "f", now=STALE_PENDING + 1).outcome == NEW
    keys.complete("alice", "k", "req-2")
    later = keys.claim("alice", "k", "f", now=STALE_PENDING + 1000)
    assert (later.outcome, later.request_id) == (REPLAY, "req-2")  # a completed key is kept for the ttl
    assert STALE_PENDING < 60


def test_a_key_whose_submit_died_is_reusable_after_the_pending_timeout(store):
    # A kill -9 between claim and complete leaves the row without a request
    # id: before issue 24 every retry answered 409 for the whole ttl.
    keys = IdempotencyStore(store.engine, ttl=24 * 3600, pending_timeout=30)
    keys.create_all()
    dead = keys.claim("alice", "k", "f", now=1000)
    assert dead.outcome == NEW
    assert keys.claim("alice", "k", "f", now=1029).outcome == PENDING
    retry = keys.claim("alice", "k", "f", now=1031)
    assert retry.outcome == NEW and retry.token != dead.token
    # The dead claim's token no longer holds the key: a late complete of it changes nothing
    assert not keys.complete("alice", "k", "req-dead", dead.token)
    assert keys.complete("alice", "k", "req-retry", retry.token)
    assert keys.claim("alice", "k", "f", now=1100).request_id == "req-retry"


def test_renewal_keeps_a_slow_submit_pending(store):
    keys = IdempotencyStore(store.engine, pending_timeout=30)
    keys.create_all()
    first = keys.claim("alice", "k", "f", now=0)
    assert keys.renew("alice", "k", first.token, now=25)
    assert keys.claim("alice", "k", "f", now=50).outcome == PENDING  # 25 s since its last sign of life
    assert keys.claim("alice", "k", "f", now=56).outcome == NEW
    assert not keys.renew("alice", "k", first.token, now=57)  # taken over: the slow submit is told


def test_claims_use_the_database_clock(store):
    from ccsr.jobs.dbclock import db_now

    import time

    assert abs(db_now(store.engine) - time.time()) < 2
    keys = _keys(store)
    first = keys.claim("alice", "k", "f")
    assert first.outcome == NEW and keys.claim("alice", "k", "f").outcome == PENDING
    assert keys.renew("alice", "k", first.token)


def test_a_keys_table_of_an_older_release_is_upgraded(db_url):
    from sqlalchemy import MetaData, Table, text

    from ccsr.jobs.idempotency import ADDED_KEY_COLUMNS, IdempotencyRecord
    from ccsr.jobs.store import JobStore

    store = JobStore(db_url)
    try:
        md = MetaData()
        cols = [c._copy() for c in IdempotencyRecord.__table__.columns if c.name not in ADDED_KEY_COLUMNS]
        Table(IdempotencyRecord.__tablename__, md, *cols)
        md.create_all(store.engine)
        with store.engine.begin() as conn:  # a submit of the old release died with its key pending
            conn.execute(text("INSERT INTO ccsr_idempotency_keys (owner, key, fingerprint, created_at) "
                              "VALUES ('alice', 'k', 'f', 1000)"))
        store.create_all()
        keys = IdempotencyStore(store.engine, pending_timeout=30)
        assert keys.claim("alice", "k", "f", now=1010).outcome == PENDING
        assert keys.claim("alice", "k", "f", now=1031).outcome == NEW
    finally:
        store.close()
