"""What the scheduler needs from the service around a run, and what it tells it.

The scheduler does not fetch inputs, store files or speak HTTP; the service
implements :class:`Edges` (``ccsr.service.runtime``) and :class:`Hooks`
(``ccsr.service.metrics``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional, Protocol

from ccsr.executors.base import Done

if TYPE_CHECKING:
    from ccsr.jobs.view import JobView


#: ``image_url`` of a stored input whose bytes live in the blob store, not in
#: the job row: ``"blob:<key>"``. A data URI is moved there at submit so the
#: row stays small (a 20 MB URI would otherwise sit in the database for the
#: whole retention). Clients cannot send this scheme (``image_url`` must be
#: http(s) or data:), so a reference always names a blob the server wrote.
INPUT_BLOB_REF = "blob:"


def input_blob_key(stored_input: Optional[dict]) -> Optional[str]:
    """The blob key a stored input refers to, or None (a URL or no input)."""
    url = (stored_input or {}).get("image_url")
    if isinstance(url, str) and url.startswith(INPUT_BLOB_REF):
        return url[len(INPUT_BLOB_REF):]
    return None


def run_input_key(request_id: str) -> str:
    """The blob key of a run's prepared input (PNG bytes the worker reads)."""
    return f"inputs/{request_id}"


def run_blob_keys(request_id: str, output_key: Optional[str], stored_input: Optional[dict], ended: bool) -> list[str]:
    """The blobs a run leaves behind: its prepared input and its raw result
    (the published result was copied out), and once the request has ended its
    submitted input (a data URI kept in the blob store): no run needs it any more."""
    keys = [run_input_key(request_id)] + ([output_key] if output_key else [])
    submitted = input_blob_key(stored_input) if ended else None
    return keys + ([submitted] if submitted else [])


@dataclasses.dataclass
class Prepared:
    """A request's input made ready to run: the image as PNG bytes, and the
    app's typed parameters (checked against the image)."""

    data: bytes
    params: Any


@dataclasses.dataclass
class Published:
    """A finished run's result, stored: the output JSON, the stored files the
    request now owns, and a few words for its log."""

    result: dict
    files: list[str]
    summary: str = ""


class Edges(Protocol):
    """What the scheduler asks of the service around a run."""

    async def prepare(self, view: JobView) -> Prepared:
        """Fetch and check the input; raise an exception with ``field`` and
        ``message`` (:class:`ccsr.errors.InvalidParameter`) for bad input."""

    async def publish(self, view: JobView, done: Done) -> Published:
        """Turn the result blob into a stored file and the output JSON."""

    def delete_file(self, ref: str) -> None:
        """Remove a stored file a request owned (retention), or with an
        ``INPUT_BLOB_REF`` prefix, a submitted input's blob."""


class Hooks:
    """Things the scheduler tells the rest of the service (metrics)."""

    def job_started(self, view: JobView) -> None: ...
    def job_step(self, view: JobView, seconds: float) -> None: ...
    def job_finished(self, view: JobView) -> None: ...
