"""How a request ended, as one typed value.

The scheduler decides an :class:`Outcome`; :meth:`ccsr.jobs.store.JobStore.finish`
stores it, and the in-memory view takes the same value, so the three can't
disagree. What an outcome looks like on the wire (HTTP status, FastAPI's 422
body) is the service's business (``ccsr.service.outcomes``), not this one's.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from ccsr.jobs.models import CANCELLED, COMPLETED, FAILED

# Error types, as the protocol names them (X-Fal-Error-Type, error_type).
CANCELLED_TYPE = "request_cancelled"
INVALID_TYPE = "validation_error"
TIMEOUT_TYPE = "request_timeout"
INTERNAL_TYPE = "internal_server_error"
OOM_TYPE = "out_of_memory"
CANCELLED_RUNNING = "Request was cancelled while running."


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The end of one request: its state, and a result or an error."""

    status: str  # COMPLETED, FAILED or CANCELLED
    result: Optional[dict] = None  # the output JSON (file URLs server-relative)
    error: Optional[str] = None  # a sentence for people; "field: message" for invalid input
    error_type: Optional[str] = None
    field: Optional[str] = None  # the input field at fault (invalid input only)
    inference_time: Optional[float] = None
    files: tuple[str, ...] = ()  # stored files the request owns (deleted with it)

    @property
    def message(self) -> Optional[str]:
        """The error without its "field: " prefix."""
        if self.error and self.field and self.error.startswith(self.field + ": "):
            return self.error[len(self.field) + 2:]
        return self.error

    @classmethod
    def completed(cls, result: dict, inference_time: Optional[float], files: tuple[str, ...] | list[str] = ()) -> "Outcome":
        return cls(COMPLETED, result=result, inference_time=inference_time, files=tuple(files))

    @classmethod
    def cancelled(cls, message: str) -> "Outcome":
        return cls(CANCELLED, error=message, error_type=CANCELLED_TYPE)

    @classmethod
    def invalid(cls, field: str, message: str) -> "Outcome":
        return cls(FAILED, error=f"{field}: {message}", error_type=INVALID_TYPE, field=field)

    @classmethod
    def timed_out(cls, message: str) -> "Outcome":
        return cls(FAILED, error=message, error_type=TIMEOUT_TYPE)

    @classmethod
    def failed(cls, message: str, error_type: str = INTERNAL_TYPE) -> "Outcome":
        return cls(FAILED, error=message, error_type=error_type)

    @classmethod
    def of_failure(cls, kind: str, message: str, field: Optional[str] = None) -> "Outcome":
        """The outcome of a run the executor reported as failed (``Failed.kind``:
        "cancelled", "invalid", "oom" or anything else for an internal error)."""
        if kind == "cancelled":
            return cls.cancelled(CANCELLED_RUNNING)
        if kind == "invalid":
            return cls.invalid(field or "body", message)
        return cls.failed(message, OOM_TYPE if kind == "oom" else INTERNAL_TYPE)

    @classmethod
    def of_prepare_error(cls, exc: BaseException) -> "Outcome":
        """The outcome of a request whose input could not be prepared: invalid when the
        error names a field (a bad image, too large), else failed."""
        field = getattr(exc, "field", None)
        message = getattr(exc, "message", None) or str(exc)
        if field is None:
            return cls.failed(f"Could not prepare the input: {message}")
        return cls.invalid(field, message)
