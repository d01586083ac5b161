"""Asyncio client: the same calls as :class:`ccsr.client.Client`, awaitable."""

from __future__ import annotations

import asyncio
import time
from os import PathLike
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional

import httpx

from ccsr.client import protocol as P
from ccsr.client.protocol import ClientError, Handle, Log, Progress, Status


class AsyncClient:
    """Async twin of :class:`ccsr.client.Client` (same arguments, same errors)."""

    def __init__(
        self,
        server: Optional[str] = None,
        key: Optional[str] = None,
        *,
        app: str = P.DEFAULT_APP,
        timeout: float = 60.0,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ):
        self.server = (server or P.default_server()).rstrip("/")
        self.key = key if key is not None else P.default_key()
        self.urls = P.Urls(self.server, app)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=True)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, url: str, *, auth: bool = True, **kw: Any) -> httpx.Response:
        headers = {**(P.auth_headers(self.key) if auth else {}), **kw.pop("headers", {})}
        try:
            resp = await self._http.request(method, url, headers=headers, **kw)
        except httpx.TimeoutException as exc:
            raise P.ServerTimeout(f"{method} {url} timed out: {exc}") from exc
        except httpx.TransportError as exc:
            raise P.ServerUnreachable(f"cannot reach {self.server}: {exc}") from exc
        if resp.status_code >= 400:
            raise P.error_from_response(resp.status_code, resp.content, resp.headers, url)
        return resp

    async def _json(self, method: str, url: str, **kw: Any) -> Any:
        resp = await self._request(method, url, **kw)
        try:
            return resp.json()
        except ValueError as exc:
            raise ClientError(f"{method} {url}: the server did not answer JSON") from exc

    async def _prepare(self, input: dict) -> dict:
        out = dict(input)
        for name, value in input.items():
            if not name.endswith("_url"):
                continue
            if isinstance(value, (PathLike, bytes, bytearray)):
                out[name] = await self.upload(value)
            elif isinstance(value, str) and not P.is_remote(value) and Path(value).is_file():
                out[name] = await self.upload(value)
        return out

    async def upload(self, data: P.Uploadable, *, content_type: Optional[str] = None, file_name: Optional[str] = None) -> str:
        """Store a file on the server and return its URL, usable as ``image_url``."""
        blob, ctype, name = P.upload_payload(data, content_type, file_name)
        token = await self._json("POST", self.urls.token(), json={})
        base = str(token.get("base_url") or "").rstrip("/")
        url = f"{base}/files/upload" if base else self.urls.cdn_upload()
        auth = f"{token.get('token_type', 'Bearer')} {token['token']}"
        resp = await self._json(
            "POST", url, auth=False, content=blob,
            headers={"Content-Type": ctype, "X-Fal-File-Name": name, "Authorization": auth},
        )
        return str(resp["access_url"])

    async def submit(
        self,
        input: dict,
        *,
        webhook_url: Optional[str] = None,
        priority: Optional[str] = None,
        start_timeout: Optional[float] = None,
    ) -> Handle:
        body = await self._prepare(input)
        data = await self._json(
            "POST", self.urls.submit(webhook_url), json=body,
            headers=P.submit_headers(priority, start_timeout),
        )
        return P.handle_from_json(data, self.urls)

    async def status(self, request_id: str, *, logs: bool = False) -> Status:
        data = await self._json("GET", self.urls.status(request_id), params={"logs": "true" if logs else "false"})
        return Status.from_json(data)

    async def stream_status(self, request_id: str, *, logs: bool = True) -> AsyncIterator[Status]:
        """Status updates as the server pushes them (SSE), ending with COMPLETED."""
        url = self.urls.stream(request_id)
        headers = {**P.auth_headers(self.key), "Accept": "text/event-stream"}
        try:
            async with self._http.stream("GET", url, params={"logs": "1" if logs else "0"}, headers=headers, timeout=httpx.Timeout(60.0, read=None)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise P.error_from_response(resp.status_code, resp.content, resp.headers, url)
                buf: list[str] = []
                async for line in resp.aiter_lines():
                    buf.append(line)
                    if line.strip():
                        continue
                    for obj in P.iter_sse(buf):
                        status = Status.from_json(obj)
                        yield status
                        if status.done:
                            return
                    buf = []
                for obj in P.iter_sse(buf):
                    yield Status.from_json(obj)
        except httpx.TransportError as exc:
            raise P.ServerUnreachable(f"status stream from {self.server} broke: {exc}") from exc

    async def result(self, request_id: str) -> dict:
        return await self._json("GET", self.urls.result(request_id))

    async def cancel(self, request_id: str) -> str:
        url = self.urls.cancel(request_id)
        try:
            data = await self._json("PUT", url)
        except P.HTTPError as exc:
            if exc.status_code == 400 and isinstance(exc.detail, dict) and exc.detail.get("status"):
                return str(exc.detail["status"])
            raise
        return str(data.get("status", ""))

    async def run(self, input: dict) -> dict:
        return await self._json("POST", self.urls.run(), json=await self._prepare(input), timeout=None)

    async def download(self, url: str, dest: Optional[str | PathLike] = None) -> bytes:
        same_server = url.startswith(self.server + "/")
        data = (await self._request("GET", url, auth=same_server)).content
        if dest is not None:
            Path(dest).parent.mkdir(parents=True, exist_ok=True)
            Path(dest).write_bytes(data)
        return data

    async def subscribe(
        self,
        input: dict,
        *,
        on_enqueue: Optional[Callable[[str], None]] = None,
        on_queue_update: Optional[Callable[[Status], None]] = None,
        on_progress: Optional[Callable[[Progress], None]] = None,
        on_log: Optional[Callable[[Log], None]] = None,
        webhook_url: Optional[str] = None,
        priority: Optional[str] = None,
        stream: bool = True,
        poll_interval: float = 0.25,
        timeout: Optional[float] = None,
    ) -> dict:
        """Submit, follow until done, return the output (see :meth:`Client.subscribe`)."""
        handle = await self.submit(input, webhook_url=webhook_url, priority=priority)
        if on_enqueue:
            on_enqueue(handle.request_id)
        report = P.Reporter(on_queue_update, on_progress, on_log)
        deadline = None if timeout is None else time.monotonic() + timeout
        final = None
        if stream:
            try:
                async for status in self.stream_status(handle.request_id, logs=True):
                    report(status)
                    if status.done:
                        final = status
                        break
                    _check_deadline(deadline, handle.request_id)
            except (P.ServerUnreachable, P.HTTPError):
                final = None
        while final is None:
            status = await self.status(handle.request_id, logs=True)
            report(status)
            if status.done:
                final = status
                break
            _check_deadline(deadline, handle.request_id)
            await asyncio.sleep(poll_interval)
        try:
            out = await self.result(final.request_id)
        except P.HTTPError as exc:
            raise P.RequestFailed(final.request_id, exc.detail, exc.error_type or final.error_type, exc.status_code) from exc
        if final.error:
            raise P.RequestFailed(final.request_id, final.error, final.error_type)
        return out


def _check_deadline(deadline: Optional[float], request_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise ClientError(f"request {request_id} did not finish in time (still running on the server)")
