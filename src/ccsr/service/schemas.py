"""HTTP schemas of the queue protocol, shared by every app.

Each app's own input and output models live in its module under
``ccsr.apps``; these are the bodies around them (submit, status, cancel).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


def absolute_file_urls(value: Any, base: str) -> Any:
    """``value`` with every server-relative ``"url": "/files/..."`` made absolute
    under ``base``: results are stored with relative URLs so they stay valid
    whatever address the server is reached at, and made absolute per answer
    (result responses, webhooks)."""
    if isinstance(value, dict):
        return {
            k: (base + v if k == "url" and isinstance(v, str) and v.startswith("/") else absolute_file_urls(v, base))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [absolute_file_urls(v, base) for v in value]
    return value


class QueueLog(BaseModel):
    message: str
    level: Literal["STDERR", "STDOUT", "ERROR", "INFO", "WARN", "DEBUG"]
    source: Literal["USER"] = "USER"
    timestamp: str


class QueueStatus(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: Optional[int] = None
    logs: Optional[list[QueueLog]] = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: Optional[str] = None
    error_type: Optional[str] = None


class SubmitResponse(BaseModel):
    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int


class CancelResponse(BaseModel):
    status: Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED"]


class AppInfo(BaseModel):
    """One served app, for the playground and other clients (``GET /api/apps``)."""

    id: str = Field(..., description="The app id, as in POST /queue/<id>.")
    title: str
    input_schema: str = Field(..., description="Name of the input model in /openapi.json's components.schemas.")
    output_schema: str = Field(..., description="Name of the output model in /openapi.json's components.schemas.")
    queue_url: str = Field(..., description="Path of the submit route.")
    run_url: str = Field(..., description="Path of the sync run route.")
    random_weights: Optional[bool] = Field(None, description="True when this app runs random weights (results show the pipeline working, not a real upscale); None when it cannot tell.")


class AppList(BaseModel):
    apps: list[AppInfo]
