"""A request-body size limit for every route, enforced while the body streams.

Pure ASGI middleware, outermost of the app's own middleware: a declared
``Content-Length`` over the limit is answered 413 before one body byte is
read; a chunked body is counted as it arrives and the request is stopped
at the first byte over the limit, so a 50 MB body is never buffered to be
refused. Whatever the route was doing, the answer becomes the 413.

Raw uploads to the storage routes have their own, larger limit
(``max_upload_bytes``); everything else (JSON bodies with data URIs, above
all) has ``max_request_body_bytes``.
"""

from __future__ import annotations

from typing import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(Exception):
    """Raised into the app by ``receive`` once the body passes the limit."""


def too_large(limit: int, setting: str, size: "int | None" = None) -> JSONResponse:
    """The 413 answer; ``detail`` is a string, as the upload routes' own 413 has always been."""
    what = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    detail = f"Request body is {what}; the limit is {limit} bytes (setting {setting})."
    return JSONResponse({"detail": detail, "error_type": "request_too_large"}, status_code=413,
                        headers={"connection": "close"})


class BodyLimit:
    """413 for bodies over ``limit_for(scope)`` -> (bytes, setting name)."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[Scope], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope)
        declared = None
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                text = value.decode("latin-1").strip()
                declared = int(text) if text.isascii() and text.isdigit() else None
        if declared is not None and declared > limit:
            await too_large(limit, setting, declared)(scope, receive, send)
            return
        state = {"seen": 0, "over": False, "started": False}

        async def counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # the 413 below replaces whatever the app answers
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await too_large(limit, setting)(scope, receive, send)


def limits_by_path(request_limit: int, upload_limit: int) -> Callable[[Scope], tuple[int, str]]:
    """``max_upload_bytes`` for raw uploads (the storage routes that take file
    bytes), ``max_request_body_bytes`` for every other request."""

    def limit_for(scope: Scope) -> tuple[int, str]:
        path, method = scope.get("path", ""), scope.get("method", "")
        upload = (method == "POST" and path.rstrip("/") == "/cdn/files/upload") or (
            method == "PUT" and path.startswith("/files/")
        )
        if upload:
            return upload_limit, "max_upload_bytes"
        return request_limit, "max_request_body_bytes"

    return limit_for
