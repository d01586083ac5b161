"""The narrow seam between the scheduler and whatever runs the model.

The scheduler starts an :class:`Executor` once with the blob store its runs
use, then hands it :class:`Task` objects (blob keys of the prepared input and
of the output, the typed parameters) and receives :data:`Event` objects back: progress, log lines, and exactly one ending per task (``Done``,
``Failed`` or ``WorkerLost``; or ``Interrupted``, which queues the request
again). Cancellation is a request; the ending says what
happened. Nothing here imports torch, so the HTTP process stays light, and a
different executor (a Ray cluster, say) can replace the local worker pool
without touching the routes or the scheduler.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

if TYPE_CHECKING:  # pragma: no cover
    from ccsr.storage import BlobStore


@dataclasses.dataclass
class Task:
    """One run of one app over one prepared input.

    Everything here crosses a process (or machine) boundary, so it names blobs,
    never files: the worker reads the input from ``input_key`` and writes the
    result to ``output_key`` in the store its executor was started with (a
    worker process rebuilds it once from its spec; the store's credentials never
    travel with a task).
    """

    request_id: str
    app_id: str
    params: Any  # the app's typed parameters (a pydantic model, already checked)
    input_key: str  # the prepared input image (PNG), put there by the scheduler
    output_key: str  # where the worker puts the result
    attempt: int = 1
    #: How the result file is written (:class:`ccsr.apps.output.OutputSpec` as a
    #: dict: format, provenance); empty: the defaults (PNG with provenance).
    output: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Progress:
    request_id: str
    step: int
    total: int
    time: float


@dataclasses.dataclass
class Log:
    request_id: str
    level: str
    message: str
    time: float


@dataclasses.dataclass
class Done:
    """The run made a result: the blob at ``output_key`` and the app's ``fields``
    (seed, width, height...) from which the app renders the output JSON."""

    request_id: str
    output_key: str
    content_type: str
    extension: str
    file_size: int
    fields: dict
    inference_time: float
    timings: dict


@dataclasses.dataclass
class Failed:
    """The run ended without a result.

    kind: ``invalid`` (bad parameter, ``field`` names it), ``cancelled``,
    ``oom`` (out of device memory), ``unavailable`` (the blob store did not
    answer for its whole retry window: the run, not the request, failed, and
    the scheduler queues it again), ``error`` (anything else).
    """

    #: The kind of a run the blob store failed (:data:`UNAVAILABLE`).
    UNAVAILABLE = "unavailable"

    request_id: str
    kind: str
    message: str
    field: Optional[str] = None

    @classmethod
    def cancelled(cls, request_id: str) -> "Failed":
        return cls(request_id, "cancelled", "Request was cancelled.")


@dataclasses.dataclass
class WorkerLost:
    """The process running ``request_id`` died (crash, kill, OOM-killer)."""

    request_id: str
    message: str


@dataclasses.dataclass
class Interrupted:
    """The run of ``request_id`` was cut short by something outside the
    request and its worker (the Ray head was lost): the request goes back to
    the queue and the run is not counted as an attempt."""

    request_id: str
    message: str


@dataclasses.dataclass
class WorkerState:
    """A worker came up (ready=True) or failed to load the model."""

    worker: str
    ready: bool
    message: str = ""


Event = Union[Progress, Log, Done, Failed, WorkerLost, Interrupted, WorkerState]
Emit = Callable[[Event], None]


class Executor(abc.ABC):
    """Runs tasks somewhere; reports through the ``emit`` callback given to start.

    ``emit`` is always called on the event loop thread that called ``start``.
    """

    @abc.abstractmethod
    async def start(self, emit: Emit, blobs: "BlobStore") -> None:
        """Start workers (may return before the model is loaded). ``blobs`` holds
        every task's input and output keys: workers in other processes rebuild
        it once from :meth:`~ccsr.storage.BlobStore.spec`."""

    @abc.abstractmethod
    def idle_slots(self) -> int:
        """How many more tasks could start right now."""

    @abc.abstractmethod
    def submit(self, task: Task) -> None:
        """Start a task on an idle slot (callers check idle_slots first)."""

    def flush(self) -> None:
        """Nothing more is being prepared for now: start whatever was submitted
        and held back to gather a batch (executors that batch override it)."""

    @abc.abstractmethod
    def cancel(self, request_id: str) -> None:
        """Ask a running task to stop at its next network evaluation."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True when at least one worker holds a loaded model."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every worker."""

    def describe(self) -> list[dict]:
        """Per-worker information for /readyz."""
        return []

    def unavailable(self) -> Optional[str]:
        """Why no worker can take a task, when none holds a loaded model (a
        sentence for the error of a request whose start timeout passed), or
        None (a worker is ready, or the executor cannot tell)."""
        return None


def post_to_loop(loop: Any, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on ``loop`` from another thread (a reader of a worker's
    pipe or of Ray's replies); nothing when the loop is gone or closing, as at
    shutdown."""
    if loop is not None and not loop.is_closed():
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed during shutdown
            pass
