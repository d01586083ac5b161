"""The pure pieces of a request's ending: failure kinds to outcomes, the blobs a
run leaves behind, and the start line naming retries and interruptions."""

from __future__ import annotations

import pytest

from ccsr.jobs.cluster import start_message
from ccsr.storage.keys import run_leftovers
from ccsr.jobs.models import CANCELLED, FAILED
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
    assert run_leftovers("r1", out, submitted, ended=False) == ["inputs/r1", out]
    assert run_leftovers("r1", out, submitted, ended=True) == ["inputs/r1", out, "submitted/r1"]
    # a published result (its output key cleared) is the request's file, not a leftover
    assert run_leftovers("r1", None, {"image_url": "https://x/y.png"}, ended=True) == ["inputs/r1"]


def test_the_start_line_names_retries_and_interruptions():
    assert start_message(1, 0) == "request started"
    assert start_message(2, 0) == "request started (attempt 2)"
    assert start_message(1, 1) == "request started (after 1 server interruption)"
    assert start_message(3, 2) == "request started (attempt 3, after 2 server interruptions)"
