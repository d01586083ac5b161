"""HTTP schemas of the "fal-ai/ccsr" app: input, output and queue bodies.

The input is built from :class:`ccsr.params.UpscaleParams` field by field, so
names, types, defaults and enums cannot drift from the engine and the CLI.
Unknown fields are ignored, as the hosted API does.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ccsr.params import UpscaleParams

APP_ID = "fal-ai/ccsr"

_IMAGE_URL_DOC = (
    "URL of the image to upscale: an http(s) URL, a data: URI (base64), or a URL of this server's "
    "file storage."
)


def _check_image_url(cls, v: str) -> str:  # noqa: ANN001
    s = v.strip()
    head = s[:8].lower()
    if not (head.startswith("http://") or head.startswith("https://") or head.startswith("data:")):
        raise ValueError("must be an http(s) URL or a data: URI")
    return s


CCSRInput = create_model(  # type: ignore[call-overload]
    "CCSRInput",
    __config__=ConfigDict(extra="ignore", json_schema_extra={
        "examples": [{"image_url": "https://storage.googleapis.com/falserverless/gallery/blue-bird.jpeg"}]
    }),
    __validators__={"image_url_scheme": field_validator("image_url")(_check_image_url)},
    image_url=(str, Field(..., min_length=1, description=_IMAGE_URL_DOC)),
    **{name: (f.annotation, f) for name, f in UpscaleParams.model_fields.items()},
)
CCSRInput.__doc__ = "Input of fal-ai/ccsr: the image URL and the upscaling parameters."


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


def params_of(inp: BaseModel) -> UpscaleParams:
    """The engine parameters of a validated input."""
    return UpscaleParams(**inp.model_dump(exclude={"image_url"}))


class Image(BaseModel):
    url: str = Field(..., description="The URL where the file can be downloaded from.")
    content_type: Optional[str] = Field(None, description="The mime type of the file.")
    file_name: Optional[str] = Field(None, description="The name of the file. It will be auto-generated if not provided.")
    file_size: Optional[int] = Field(None, description="The size of the file in bytes.")
    width: Optional[int] = Field(None, description="The width of the image in pixels.")
    height: Optional[int] = Field(None, description="The height of the image in pixels.")


class CCSROutput(BaseModel):
    image: Image = Field(..., description="The generated image file info.")
    seed: int = Field(..., description="The seed used for the generation.")


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
