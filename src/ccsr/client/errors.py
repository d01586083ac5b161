"""The client's errors, and how an error response becomes the most specific
one (auth, validation with per-field messages, any other HTTP status)."""

from __future__ import annotations

import json
from typing import Any, Optional


class ClientError(Exception):
    """Base class of every error this client raises on purpose."""


class ServerUnreachable(ClientError):
    """The server did not answer at all (wrong --server, not started, network)."""


class ServerTimeout(ClientError):
    """One HTTP call took longer than the client's timeout."""


class HTTPError(ClientError):
    """The server answered with an error status; ``detail`` is its explanation."""

    def __init__(self, status_code: int, detail: Any, error_type: Optional[str] = None, url: str = ""):
        self.status_code = status_code
        self.detail = detail
        self.error_type = error_type
        self.url = url
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = format_detail(self.detail)
        kind = f" ({self.error_type})" if self.error_type else ""
        return f"HTTP {self.status_code}{kind}: {text}"


class AuthError(HTTPError):
    """401/403: a missing or wrong API key."""

    def _describe(self) -> str:
        return f"HTTP {self.status_code}: {format_detail(self.detail)} (pass --key, or set CCSR_KEY or FAL_KEY)"


class ValidationError(HTTPError):
    """422: one or more input fields are out of range; ``field_errors`` maps field -> message."""

    @property
    def field_errors(self) -> dict[str, str]:
        return field_errors(self.detail)

    def _describe(self) -> str:
        errs = field_errors(self.detail)
        if not errs:
            return super()._describe()
        return "invalid input: " + "; ".join(f"{k}: {v}" for k, v in errs.items())


class RequestFailed(ClientError):
    """A queued request finished with an error (or was cancelled)."""

    def __init__(self, request_id: str, error: Any, error_type: Optional[str] = None, status_code: Optional[int] = None):
        self.request_id = request_id
        self.error = error
        self.error_type = error_type
        self.status_code = status_code
        kind = f" ({error_type})" if error_type else ""
        super().__init__(f"request {request_id} failed{kind}: {format_detail(error)}")


def format_detail(detail: Any) -> str:
    """A person-readable line from a FastAPI-style ``detail`` (string or list of errors)."""
    if isinstance(detail, list):
        errs = field_errors(detail)
        if errs:
            return "; ".join(f"{k}: {v}" for k, v in errs.items())
        return "; ".join(str(d) for d in detail)
    if isinstance(detail, dict):
        return str(detail.get("detail") or detail.get("error") or detail.get("message") or detail)
    return str(detail)


def field_errors(detail: Any) -> dict[str, str]:
    """``{"scale": "Input should be less than or equal to 16", ...}`` from a 422 detail list."""
    out: dict[str, str] = {}
    if not isinstance(detail, list):
        return out
    for item in detail:
        if not isinstance(item, dict):
            continue
        loc = [str(p) for p in item.get("loc") or [] if p not in ("body",)]
        name = ".".join(loc) or "input"
        msg = str(item.get("msg") or item)
        out[name] = f"{out[name]}; {msg}" if name in out else msg
    return out


def error_from_response(status_code: int, body: bytes, headers: Any, url: str = "") -> HTTPError:
    """Map an error response to the most specific :class:`HTTPError`."""
    detail: Any
    error_type = headers.get("x-fal-error-type") if headers is not None else None
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    if isinstance(data, dict):
        detail = data.get("detail", data)
        error_type = data.get("error_type") or error_type
    elif data is not None:
        detail = data
    else:
        text = (body or b"").decode("utf-8", "replace").strip()
        detail = text[:500] or f"empty response from {url}"
    cls = HTTPError
    if status_code in (401, 403):
        cls = AuthError
    elif status_code == 422:
        cls = ValidationError
    return cls(status_code, detail, error_type, url)
