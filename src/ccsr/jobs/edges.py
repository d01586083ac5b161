"""What the scheduler needs from the service around a run, and what it tells it.

The scheduler does not fetch inputs, store files or speak HTTP; the service
implements :class:`Edges` (``ccsr.service.runtime``) and :class:`Hooks`
(``ccsr.service.metrics``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from ccsr.executors.base import Done

if TYPE_CHECKING:
    from ccsr.jobs.view import JobView


@dataclasses.dataclass
class Prepared:
    """A request's input made ready to run: the image as PNG bytes, the app's
    typed parameters (checked against the image) and how the result file is
    written (``Task.output``)."""

    data: bytes
    params: Any
    output: dict = dataclasses.field(default_factory=dict)


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
        """Make the result blob a stored file (in place) and render the output JSON."""

    def delete_file(self, ref: str) -> None:
        """Remove a stored file a request owned (retention), or, for a
        ``blob:<key>`` reference (:data:`ccsr.storage.keys.INPUT_REF`), a
        submitted input's blob."""


class Hooks:
    """Things the scheduler tells the rest of the service (metrics)."""

    def job_started(self, view: JobView) -> None: ...
    def job_step(self, view: JobView, seconds: float) -> None: ...
    def job_finished(self, view: JobView) -> None: ...
