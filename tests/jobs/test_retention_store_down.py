"""Retention while the blob store is down: a request whose files cannot be
deleted keeps its row (and so its list of files) until a sweep can delete
them, instead of leaving the files behind with no record of them."""

from __future__ import annotations

import asyncio
import time

from ccsr.jobs.live import LiveJobs
from ccsr.jobs.outcome import Outcome
from ccsr.jobs.retention import Retention
from ccsr.storage import StoreUnavailable

FILE = "/files/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/out.png"


def test_a_request_whose_files_cannot_be_deleted_waits_for_the_next_sweep(store):
    store.add("r1", {"image_url": "http://example.com/in.png"})
    store.claim_next()
    now = time.time()
    assert store.finish("r1", Outcome.completed({"image": {}}, 0.1, [FILE]), expires_at=now - 1, now=now - 2)
    deleted: list[str] = []
    down = [True]

    async def delete_file(ref: str) -> None:
        if down[0]:
            raise StoreUnavailable()
        deleted.append(ref)

    retention = Retention(store, LiveJobs(), delete_file)
    asyncio.run(retention.sweep())
    assert store.get("r1") is not None and deleted == []  # kept: its file is still there
    down[0] = False
    asyncio.run(retention.sweep())
    assert deleted == [FILE] and store.get("r1") is None
