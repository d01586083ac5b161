"""StoreHealth orders successes against failures: a call or check that
started before the store was marked down, and succeeded after, must not bring
it back up (CI once saw a periodic check, begun just before an outage, undo
the outage's mark and /readyz answer 200)."""

from __future__ import annotations

import asyncio
import threading

from ccsr.storage import keys
from ccsr.storage.health import StoreHealth
from ccsr.storage.local import LocalBlobStore
from ccsr.storage.pool import BlobPool


def test_a_success_older_than_the_failure_changes_nothing():
    health = StoreHealth()
    mark = health.mark()
    health.down("failed meanwhile")
    health.up(mark)
    assert not health.ok and health.state() == "unavailable"
    health.up(health.mark())  # a success that began after the failure
    assert health.ok and health.state() == "ok"


def test_up_without_a_mark_still_brings_it_back():
    health = StoreHealth()
    health.down("x")
    health.up()
    assert health.ok


def test_a_check_overlapping_an_outage_leaves_the_store_down(tmp_path):
    blobs = LocalBlobStore(tmp_path)
    pool = BlobPool(blobs)
    entered, release = threading.Event(), threading.Event()
    real = blobs.probe

    def slow_probe(key):
        entered.set()
        release.wait(10)
        return real(key)  # answers: but it began before the outage

    blobs.probe = slow_probe

    async def scenario() -> tuple[bool, bool, bool]:
        check = asyncio.create_task(pool.check(keys.PROBE))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        blobs.health.down("a call failed while the check was out")
        release.set()
        answered = await check
        after_overlap = blobs.health.ok
        blobs.probe = real
        return answered, after_overlap, await pool.check(keys.PROBE)

    try:
        answered, after_overlap, again = asyncio.run(scenario())
    finally:
        pool.close()
    assert answered is True  # the probe itself succeeded...
    assert after_overlap is False  # ...yet the newer failure stands
    assert again is True and blobs.health.ok  # a check begun after the outage brings it back
