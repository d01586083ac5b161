"""The pieces of a request's ending: failure kinds to outcomes, the blobs a
run leaves behind, the start line naming retries and interruptions, and a
failed run whose cancel was sent to another server."""

from __future__ import annotations

import asyncio

import pytest

from ccsr.jobs.cluster import start_message
from ccsr.jobs.endings import Endings
from ccsr.jobs.store import JobStore
from ccsr.storage.keys import run_leftovers
from ccsr.jobs.models import CANCELLED, FAILED, RUNNING
from ccsr.jobs.outcome import CANCELLED_RUNNING, CANCELLED_TYPE, INTERNAL_TYPE, INVALID_TYPE, OOM_TYPE, Outcome


@pytest.mark.parametrize("kind, status, error_type, error", [
    ("cancelled", CANCELLED, CANCELLED_TYPE, CANCELLED_RUNNING),
    ("invalid", FAILED, INVALID_TYPE, "scale: too big"),
    ("oom", FAILED, OOM_TYPE, "too big"),
    ("internal", FAILED, INTERNAL_TYPE, "too big"),
])
def test_each_failure_kind_has_its_outcome(kind, status, error_type, error):
    out = Outcome.of_failure(kind, "too big", "scale")
    assert (out.status, out.error) == (status, error)
    assert out.error_type == error_type
    assert Outcome.of_failure("invalid", "bad", None).field == "body"


def test_a_preparation_error_naming_a_field_is_invalid_and_any_other_failed():
    from ccsr.errors import InvalidParameter

    bad = Outcome.of_prepare_error(InvalidParameter("image_url", "the image is 9000x9000, above the limit"))
    assert (bad.status, bad.error_type, bad.field) == (FAILED, INVALID_TYPE, "image_url")
    assert "above the limit" in bad.error
    broken = Outcome.of_prepare_error(OSError("disk full"))
    assert (broken.status, broken.error_type) == (FAILED, INTERNAL_TYPE)
    assert broken.error == "Could not prepare the input: disk full"


def test_a_run_leaves_its_input_and_unpublished_result_and_at_the_end_the_submitted_input():
    submitted = {"image_url": "blob:submitted/r1"}
    out = "files/ab/ab" + "x" * 30
    assert run_leftovers("inputs/r1.t1", out, submitted, ended=False) == ["inputs/r1.t1", out]
    assert run_leftovers("inputs/r1.t1", out, submitted, ended=True) == ["inputs/r1.t1", out, "submitted/r1"]
    # a published result (its output key cleared) is the request's file, not a leftover
    assert run_leftovers("inputs/r1.t1", None, {"image_url": "https://x/y.png"}, ended=True) == ["inputs/r1.t1"]
    # a server that holds no run of the request (a cancel sent to it) has none of its own to drop
    assert run_leftovers(None, None, submitted, ended=False) == []


def test_the_start_line_names_retries_and_interruptions():
    assert start_message(1, 0) == "request started"
    assert start_message(2, 0) == "request started (attempt 2)"
    assert start_message(1, 1) == "request started (after 1 server interruption)"
    assert start_message(3, 2) == "request started (attempt 3, after 2 server interruptions)"


class _EndingsHost(Endings):
    """Just what ``_end`` needs for a failed run: the job store, and a
    ``_finish`` that records the outcome."""

    def __init__(self, store):
        self.store, self.outcomes = store, []

    async def _finish(self, view, outcome):  # noqa: ANN001
        self.outcomes.append(outcome)


def test_a_run_failing_after_a_cancel_sent_to_another_server_ends_cancelled(store, db_url):
    """The cancel flag reaches the running server with its next heartbeat; a
    run failing before that (its input gone, say) asks the database, so the
    request ends as its client asked: cancelled, not failed."""
    from ccsr.executors.base import Failed
    from ccsr.jobs.view import JobView

    views = {}
    for rid in ("a", "b"):
        store.add(rid, {"image_url": "data:x"}, now=1.0)
        store.claim(rid, node="n1", lease=10.0)
        views[rid] = JobView(store.get(rid))  # the running server's view, made before the cancel
    other = JobStore(db_url)  # the server the cancel was sent to
    try:
        assert other.request_cancel("a") == RUNNING
    finally:
        other.close()
    host = _EndingsHost(store)
    assert not views["a"].cancel_requested
    asyncio.run(host._end(views["b"], Failed("b", "error", "boom")))
    asyncio.run(host._end(views["a"], Failed("a", "error", "boom")))
    assert [(o.status, o.error) for o in host.outcomes] == [(FAILED, "boom"), (CANCELLED, CANCELLED_RUNNING)]
