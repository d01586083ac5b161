"""The narrow seam between the scheduler and whatever runs the model.

The scheduler hands an :class:`Executor` a :class:`Task` (a prepared input file,
the parameters, where to write the output) and receives :data:`Event` objects
back: progress, log lines, and exactly one ending per task (``Done``,
``Failed`` or ``WorkerLost``). Cancellation is a request; the ending says what
happened. Nothing here imports torch, so the HTTP process stays light, and a
different executor (a Ray cluster, say) can replace the local worker pool
without touching the routes or the scheduler.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Callable, Optional, Union


@dataclasses.dataclass
class Task:
    """One run of the model over one prepared input."""

    request_id: str
    input_path: str  # image file written by the scheduler (already fetched and checked)
    params: dict  # UpscaleParams fields
    output_path: str  # where the worker writes the PNG result
    attempt: int = 1
    max_output_pixels: int = 4096 * 4096


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
    request_id: str
    seed: int
    width: int
    height: int
    file_size: int
    inference_time: float
    timings: dict


@dataclasses.dataclass
class Failed:
    """The run ended without a result.

    kind: ``invalid`` (bad parameter, ``field`` names it), ``cancelled``,
    ``oom`` (out of device memory), ``error`` (anything else).
    """

    request_id: str
    kind: str
    message: str
    field: Optional[str] = None


@dataclasses.dataclass
class WorkerLost:
    """The process running ``request_id`` died (crash, kill, OOM-killer)."""

    request_id: str
    message: str


@dataclasses.dataclass
class WorkerState:
    """A worker came up (ready=True) or failed to load the model."""

    worker: str
    ready: bool
    message: str = ""


Event = Union[Progress, Log, Done, Failed, WorkerLost, WorkerState]
Emit = Callable[[Event], None]


class Executor(abc.ABC):
    """Runs tasks somewhere; reports through the ``emit`` callback given to start.

    ``emit`` is always called on the event loop thread that called ``start``.
    """

    @abc.abstractmethod
    async def start(self, emit: Emit) -> None:
        """Start workers (may return before the model is loaded)."""

    @abc.abstractmethod
    def idle_slots(self) -> int:
        """How many more tasks could start right now."""

    @abc.abstractmethod
    def submit(self, task: Task) -> None:
        """Start a task on an idle slot (callers check idle_slots first)."""

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
