"""``/api/fal/proxy``: the ``@fal-ai/server-proxy`` contract, served in-process.

The JS client with ``proxyUrl`` sends each request (original method, body
and headers) to this route with ``x-fal-target-url: <original https URL>``.
We map the provider's hosts onto our own URL layout (fal.run -> /,
queue.fal.run -> /queue, rest.fal.ai -> /rest, *.fal.media -> /cdn) and call
our own ASGI app directly, streaming its answer back (SSE included) with its
status and headers (``x-fal-request-id`` among them). Nothing leaves the
process, so the proxy cannot be used to reach other hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Optional
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ccsr.service.auth import KeyRing
from ccsr.settings import Settings

PROXY_ROUTE = "/api/fal/proxy"
TARGET_URL_HEADER = "x-fal-target-url"

#: Provider host -> our path prefix.
HOST_PREFIXES = {
    "fal.run": "",
    "queue.fal.run": "/queue",
    "rest.fal.ai": "/rest",
    "rest.alpha.fal.ai": "/rest",
    "v3.fal.media": "/cdn",
}
# Request headers passed on besides x-fal-*: auth, and what the routes need
# to parse the body and choose the answer's form (JSON or SSE).
_PASS_HEADERS = {"authorization", "content-type", "accept", "user-agent"}
# Never copied back: the body is re-framed by our server.
_DROP_RESPONSE_HEADERS = {b"content-length", b"content-encoding", b"transfer-encoding", b"connection"}


class TargetError(ValueError):
    """The x-fal-target-url is missing, malformed or not one we serve."""


def _own_origins(request: Request, settings: Settings) -> set[str]:
    origins = {f"{request.url.scheme}://{request.url.netloc}".lower()}
    if settings.public_url:
        p = urlsplit(settings.public_url)
        origins.add(f"{p.scheme}://{p.netloc}".lower())
    return origins


def map_target(target_url: Optional[str], own_origins: set[str] = frozenset()) -> tuple[str, str, str]:
    """Target URL -> (our path prefix + path, raw path, query string).

    Raises :class:`TargetError` for a missing, non-provider, dot-segment or
    self-referencing target.
    """
    if not target_url:
        raise TargetError(f"Missing {TARGET_URL_HEADER} header.")
    try:
        parts = urlsplit(target_url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        raise TargetError(f"{TARGET_URL_HEADER} is not a valid URL.") from None
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if origin in own_origins:
        prefix = ""
    elif parts.scheme != "https" or port not in (None, 443) or parts.username or parts.password:
        raise TargetError(f"{TARGET_URL_HEADER} must be an https URL of a fal host or of this server.")
    elif host in HOST_PREFIXES:
        prefix = HOST_PREFIXES[host]
    elif host.endswith(".fal.media"):
        prefix = "/cdn"
    elif host.endswith(".fal.run"):
        prefix = ""
    else:
        raise TargetError(f"{TARGET_URL_HEADER} host {host!r} is not allowed.")
    raw_path = parts.path or "/"
    segments = unquote(raw_path).split("/")
    if any(s in (".", "..") for s in segments) or "\\" in unquote(raw_path):
        raise TargetError(f"{TARGET_URL_HEADER} path may not contain '.' or '..' segments.")
    path = prefix + unquote(raw_path)
    if path.rstrip("/") == PROXY_ROUTE or path.startswith(PROXY_ROUTE + "/"):
        raise TargetError(f"{TARGET_URL_HEADER} may not point at the proxy itself.")
    return path, prefix + raw_path, parts.query


async def dispatch(
    request: Request, method: str, path: str, raw_path: str, query: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> Response:
    """Run ``request.app`` on a rewritten request and stream its answer back."""
    app = request.app
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": request.scope.get("asgi", {"version": "3.0"}),
        "http_version": request.scope.get("http_version", "1.1"),
        "method": method,
        "scheme": request.scope.get("scheme", "http"),
        "path": path,
        "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "root_path": request.scope.get("root_path", ""),
        "headers": headers,
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
        "extensions": {},
    }
    if "state" in request.scope:
        scope["state"] = dict(request.scope["state"])

    outbox: asyncio.Queue = asyncio.Queue()
    done = asyncio.Event()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # like a client that stays connected until we stop reading
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        await outbox.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await outbox.put(None)

    task = asyncio.create_task(run())
    try:
        start = await outbox.get()
    except BaseException:
        task.cancel()
        raise
    if start is None or start.get("type") != "http.response.start":
        done.set()
        with contextlib.suppress(BaseException):
            await task
        return JSONResponse({"detail": "The proxied request failed."}, status_code=502)

    async def body_iter():
        try:
            while True:
                message = await outbox.get()
                if message is None:
                    break
                if message.get("type") == "http.response.body":
                    chunk = message.get("body", b"")
                    if chunk:
                        yield chunk
                    if not message.get("more_body", False):
                        break
        finally:
            done.set()
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task

    response = StreamingResponse(body_iter(), status_code=start["status"])
    response.raw_headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _DROP_RESPONSE_HEADERS]
    return response


def proxy_router(*, settings: Settings, keyring: KeyRing, **_: Any) -> APIRouter:
    """The ``/api/fal/proxy`` route (all methods)."""
    router = APIRouter()

    # The schema lists GET and POST (the ways the JS client uses it); PUT, DELETE
    # and PATCH reach the same handler but stay out of the schema, where each
    # method of one function would repeat the same operation id.
    common = dict(tags=["proxy"], summary="@fal-ai/server-proxy compatible route (x-fal-target-url)")

    @router.api_route(PROXY_ROUTE, methods=["PUT", "DELETE", "PATCH"], include_in_schema=False)
    @router.post(PROXY_ROUTE, operation_id="proxy_post", **common)
    @router.get(PROXY_ROUTE, operation_id="proxy_get", **common)
    async def proxy(request: Request) -> Response:
        try:
            path, raw_path, query = map_target(request.headers.get(TARGET_URL_HEADER), _own_origins(request, settings))
        except TargetError as exc:
            return JSONResponse({"detail": f"Invalid request: {exc}"}, status_code=400)
        authorization = request.headers.get("authorization")
        if keyring.enabled and keyring.owner_for(authorization) is None:
            return JSONResponse({"detail": "Unauthorized: a valid 'Authorization: Key <key>' is required."}, status_code=401)
        declared = request.headers.get("content-length")
        limit = settings.max_upload_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            return JSONResponse({"detail": f"Request body over {limit} bytes (setting max_upload_bytes)."}, status_code=413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return JSONResponse({"detail": f"Request body over {limit} bytes (setting max_upload_bytes)."}, status_code=413)
            chunks.append(chunk)
        headers: list[tuple[bytes, bytes]] = [(b"host", request.headers.get("host", "").encode("latin-1"))]
        for name, value in request.headers.raw:
            lname = name.decode("latin-1").lower()
            if lname == TARGET_URL_HEADER or lname == "host":
                continue
            if lname.startswith("x-fal-") or lname in _PASS_HEADERS:
                headers.append((lname.encode("latin-1"), value))
        headers.append((b"content-length", str(size).encode()))
        return await dispatch(request, request.method, path, raw_path, query, headers, b"".join(chunks))

    return router
