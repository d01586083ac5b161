"""Malformed requests get a JSON 4xx naming the problem, never a plain 500.

Python's ``json`` accepts things JSON forbids: ``NaN``, ``Infinity``,
numbers that overflow to infinity (``1e999``) and lone UTF-16 surrogates
(``"\\ud800"``). Left in a body they pass into validation errors (which
then cannot be rendered), job rows (which PostgreSQL refuses) or URLs. And
deeply nested JSON in a header makes ``json.loads`` raise ``RecursionError``.

This module holds the guards, installed on the app by :func:`install`:

- :class:`JSONBodyGuard`, a pure ASGI middleware checking every JSON body
  the app will parse (a JSON content type, or none on a route with a body
  model) before any route sees it: 422 naming the JSON path of the problem;
- :func:`parse_json_header`, the one way a JSON-valued header is parsed
  (size and depth limited, same rules);
- exception handlers: :class:`RequestProblem` (raised by any check, e.g.
  the headers), :class:`ccsr.errors.InvalidParameter`, validation errors
  (rendered with their input made JSON-safe), a blob store that failed
  (:class:`ccsr.storage.BlobStoreError`: 503 with ``Retry-After`` when it
  does not answer, 502 when it refused; the text never names its endpoint,
  bucket or key), and a JSON 500 for the rest.
"""

from __future__ import annotations

import json
import math
import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ccsr.errors import InvalidParameter
from ccsr.storage.base import BlobStoreError, StoreUnavailable

#: Nesting allowed in a JSON body (the fal input is 1 deep; webhook bodies are not parsed here).
MAX_BODY_DEPTH = 32
#: A JSON-valued header (x-fal-object-lifecycle-preference) is a small object.
MAX_HEADER_BYTES = 4096
MAX_HEADER_DEPTH = 4

log = logging.getLogger("ccsr.service")


class RequestProblem(Exception):
    """A request is unusable: answered with ``status`` and the fal/FastAPI
    ``detail`` list shape, ``loc`` naming where (``("header", name)``,
    ``("body", "scale")``)."""

    def __init__(self, loc: tuple, message: str, status: int = 422, kind: str = "value_error"):
        super().__init__(message)
        self.loc, self.message, self.status, self.kind = tuple(loc), message, status, kind

    def body(self) -> dict:
        return {"detail": [{"loc": list(self.loc), "msg": self.message, "type": self.kind}]}


def problem_response(exc: RequestProblem) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


# --- strict JSON -----------------------------------------------------------------


class _Bad(ValueError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _no_constant(name: str) -> Any:
    raise _Bad(f"{name} is not a JSON number; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Bad(f"the number {text[:40]} is out of range; numbers must be finite")
    return value


def strict_loads(data: "str | bytes") -> Any:
    """``json.loads`` refusing NaN, Infinity and overflowing numbers (:class:`_Bad`)."""
    return json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)


def _has_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_problem(value: Any, max_depth: int) -> Optional[tuple[list, str]]:
    """(JSON path, message) of the first lone surrogate or too-deep nesting
    in a parsed value, or None. Iterative: depth cannot blow the stack."""
    stack: list[tuple[Any, list]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if len(path) > max_depth:
            return path[:max_depth], f"JSON nested deeper than {max_depth} levels"
        if isinstance(item, str):
            if _has_surrogate(item):
                return path, "string contains a lone UTF-16 surrogate (invalid Unicode)"
        elif isinstance(item, dict):
            for k, v in item.items():
                if _has_surrogate(k):
                    return path, "object key contains a lone UTF-16 surrogate (invalid Unicode)"
                stack.append((v, path + [k]))
        elif isinstance(item, list):
            stack.extend((v, path + [i]) for i, v in enumerate(item))
    return None


def _prescan_depth(text: str, limit: int) -> bool:
    """True when brackets (outside strings) nest deeper than ``limit``: checked
    before ``json.loads``, whose recursion would otherwise overflow."""
    depth, in_str, escaped = 0, False, False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def check_json_bytes(data: bytes, *, where: str = "body", max_depth: int = MAX_BODY_DEPTH) -> Optional[RequestProblem]:
    """The problem with a JSON document, or None when it is strict JSON (or
    not JSON at all: malformed syntax is left to the route's own parser,
    which already answers it with a 4xx)."""
    try:
        # As json.loads decodes bytes: surrogates encoded in UTF-8 survive as such.
        text = data.decode(json.detect_encoding(data), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        return None  # the route's parser answers "invalid JSON"
    if _prescan_depth(text, max_depth):
        return RequestProblem((where,), f"JSON nested deeper than {max_depth} levels")
    try:
        value = strict_loads(text)
    except _Bad as exc:
        return RequestProblem((where,), exc.message)
    except RecursionError:
        return RequestProblem((where,), f"JSON nested deeper than {max_depth} levels")
    except ValueError:
        return None
    found = find_problem(value, max_depth)
    if found is None:
        return None
    path, message = found
    return RequestProblem((where, *path), message)


def parse_json_header(name: str, raw: str, *, max_bytes: int = MAX_HEADER_BYTES,
                      max_depth: int = MAX_HEADER_DEPTH) -> Any:
    """A JSON-valued header, parsed strictly, or :class:`RequestProblem` (422)
    naming the header: too long, nested too deep, not JSON, non-finite numbers."""
    loc = ("header", name)
    if len(raw) > max_bytes:
        raise RequestProblem(loc, f"header is {len(raw)} bytes; the limit is {max_bytes} bytes")
    if _prescan_depth(raw, max_depth):
        raise RequestProblem(loc, f"JSON nested deeper than {max_depth} levels")
    try:
        value = strict_loads(raw)
    except _Bad as exc:
        raise RequestProblem(loc, exc.message) from None
    except (ValueError, RecursionError):
        raise RequestProblem(loc, "must be a JSON object") from None
    return value


# --- the body guard ----------------------------------------------------------------


def _is_json_type(content_type: str) -> bool:
    main = content_type.split(";", 1)[0].strip().lower()
    return main == "application/json" or (main.startswith("application/") and main.endswith("+json"))


class JSONBodyGuard:
    """Pure ASGI middleware: reads a JSON body, checks it is strict JSON, and
    replays it to the app, or answers 422 itself.

    Bodies checked: those with a JSON content type, on any route (FastAPI
    parses no other body as JSON). Raw uploads (image bytes, any other
    content type) pass through streaming, untouched. The
    bytes buffered here are bounded by :mod:`ccsr.service.bodylimit`, which
    sits outside this middleware.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        ctype = ""
        for key, value in scope.get("headers", ()):
            if key == b"content-type":
                ctype = value.decode("latin-1")
        if not _is_json_type(ctype):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break  # a disconnect: let the app see it
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = check_json_bytes(body) if body.strip() else None
        if problem is not None:
            await problem_response(problem)(scope, receive, send)
            return
        replay = [{"type": "http.request", "body": body, "more_body": False}] if messages and messages[-1]["type"] == "http.request" else messages

        async def replayed() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        await self.app(scope, replayed, send)


# --- exception handlers -----------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats and invalid strings made printable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8") if _has_surrogate(value) else value
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (int, bool)) or value is None:
        return value
    return json_safe(str(value))


class InternalErrors:
    """Pure ASGI middleware: an exception no handler took becomes a JSON 500
    here, logged once, and is not raised further.

    Starlette's own last resort answers and then re-raises, and uvicorn closes
    the connection on an exception that follows a response: a keep-alive client
    then lost its connection (and, seen from some clients, the body). Answering
    here ends the request normally, so the connection stays open."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001 - the last resort: everything else has handlers
            if started:
                raise  # too late to answer: the server closes the connection
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            response = JSONResponse({"detail": "Internal server error.", "error_type": "internal_server_error"},
                                    status_code=500)
            await response(scope, receive, send)


def retry_after(request: Request) -> int:
    """Seconds a client refused for a store outage should wait: two of the
    server's store checks (setting store_check_interval), so the next try
    finds the store's state fresh."""
    settings = getattr(request.app.state, "settings", None)
    return max(1, math.ceil(2 * float(getattr(settings, "store_check_interval", 2.0))))


def install(app: FastAPI) -> None:
    """Register the body guard and the exception handlers on ``app``."""

    async def on_problem(_request: Request, exc: RequestProblem) -> JSONResponse:
        return problem_response(exc)

    async def on_invalid(_request: Request, exc: InvalidParameter) -> JSONResponse:
        loc = ("header", exc.field) if getattr(exc, "loc", None) == "header" else ("body", exc.field)
        return problem_response(RequestProblem(loc, exc.message))

    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            err = {k: v for k, v in err.items() if k in ("loc", "msg", "type", "input", "ctx")}
            errors.append(json_safe(err))
        return JSONResponse({"detail": errors}, status_code=422)

    async def on_store_error(request: Request, exc: BlobStoreError) -> JSONResponse:
        if isinstance(exc, StoreUnavailable):
            return JSONResponse({"detail": str(exc), "error_type": "service_unavailable"}, status_code=503,
                                headers={"Retry-After": str(retry_after(request))})
        return JSONResponse({"detail": str(exc), "error_type": "bad_gateway"}, status_code=502)

    async def on_error(_request: Request, _exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answer, so the server logs the traceback once.
        return JSONResponse({"detail": "Internal server error.", "error_type": "internal_server_error"},
                            status_code=500)

    app.add_exception_handler(RequestProblem, on_problem)  # type: ignore[arg-type]
    app.add_exception_handler(InvalidParameter, on_invalid)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(BlobStoreError, on_store_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_error)
    app.add_middleware(JSONBodyGuard)
