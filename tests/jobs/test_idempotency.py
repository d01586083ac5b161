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
