"""The S3 store when S3 fails (issue 24): every call has timeouts sized for
a queue server and is retried with backoff for a bounded time, then raises
StoreUnavailable (a text safe for clients) and marks the store down; the next
call that gets an answer marks it up. Against a SeaweedFS of this module
alone, killed, restarted and paused (SIGSTOP, always resumed)."""

from __future__ import annotations

import threading
import time

import pytest

from ccsr.storage import StoreUnavailable
from ccsr.storage.s3 import S3BlobStore
from s3_server import free_loopback_port, own_seaweedfs, paused  # noqa: F401 - the module fixture

SAFE = "The blob store is unavailable; try again later."


def _quick(weed, **kw) -> S3BlobStore:
    """A store with test-sized timeouts and retry window."""
    return weed.server.store(connect_timeout=0.5, read_timeout=0.5, **{"retry_seconds": 1.0, **kw})


def _assert_safe(exc: BaseException, store: S3BlobStore, key: str) -> None:
    text = str(exc)
    assert text == SAFE
    for secret in (store.endpoint_url, store.endpoint_url.rsplit(":", 1)[1], store.bucket, store.prefix, key):
        assert secret not in text


def _answers(store: S3BlobStore, timeout: float = 15.0) -> None:
    """Wait until the store answers (a resumed or restarted SeaweedFS may
    take a moment to serve again)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.probe("secrets/probe")
            return
        except StoreUnavailable:
            assert time.monotonic() < deadline, "the store did not answer again"
            time.sleep(0.1)


def test_an_unreachable_store_is_retried_for_a_bounded_time_then_unavailable(own_seaweedfs):
    port = free_loopback_port()  # nothing listens there: every try is refused at once
    store = S3BlobStore(own_seaweedfs.server.bucket, endpoint_url=f"http://127.0.0.1:{port}", region="us-east-1",
                        access_key_id="a", secret_access_key="b", prefix="p-x/", retry_seconds=1.0,
                        connect_timeout=0.5, read_timeout=0.5)
    for call in (lambda: store.put("inputs/r1", b"x"), lambda: list(store.keys("inputs/"))):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            call()
        took = time.monotonic() - t0
        assert 0.9 <= took < 2.5, took  # retried with backoff for about retry_seconds, not once, not forever
        _assert_safe(err.value, store, "inputs/r1")
        assert not store.health.ok
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        store.probe("secrets/probe")  # the periodic check: one try
    assert time.monotonic() - t0 < 1.0


def test_a_call_rides_out_a_short_stall_and_a_long_one_is_bounded(own_seaweedfs):
    store = _quick(own_seaweedfs, retry_seconds=6.0)
    store.put("k", b"before")
    # A stall shorter than the retry window: the call waits it out and succeeds.
    own_seaweedfs.pause()
    try:
        threading.Timer(1.5, own_seaweedfs.resume).start()
        t0 = time.monotonic()
        store.put("k", b"after")
        assert 1.4 < time.monotonic() - t0 < 6.0
    finally:
        own_seaweedfs.resume()
    assert store.read("k") == b"after" and store.health.ok
    # A stall longer than the window: bounded by the window and one read timeout.
    store = _quick(own_seaweedfs)
    with paused(own_seaweedfs):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as err:
            store.read("k")
        assert time.monotonic() - t0 < 1.0 + 0.5 + 1.5
        _assert_safe(err.value, store, "k")
        assert not store.health.ok
    _answers(store)  # resumed: the next answer marks it up
    assert store.health.ok


def test_a_killed_and_restarted_store_keeps_its_blobs_and_comes_back_up(own_seaweedfs):
    store = _quick(own_seaweedfs)
    store.put("files/ab/k", b"kept")
    own_seaweedfs.kill()
    try:
        with pytest.raises(StoreUnavailable):
            store.stat("files/ab/k")
        assert not store.health.ok
    finally:
        own_seaweedfs.restart()
    assert store.read("files/ab/k") == b"kept"
    assert store.health.ok
