"""Asyncio client: the same calls as :class:`ccsr.client.Client`, awaitable."""

from __future__ import annotations

import asyncio
from os import PathLike
from typing import Any, AsyncIterator, Callable, Optional

import httpx

from ccsr.client import protocol as P
from ccsr.client.protocol import Handle, Log, Progress, Status


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
        headers = P.request_headers(self.key, auth, kw.pop("headers", None))
        with P.transport_errors(method, url, self.server):
            resp = await self._http.request(method, url, headers=headers, **kw)
        return P.check_response(resp, url)

    async def _json(self, method: str, url: str, **kw: Any) -> Any:
        return P.json_of(await self._request(method, url, **kw), method, url)

    async def _prepare(self, input: dict) -> dict:
        """Upload local files given as paths in ``*_url`` fields; pass URLs through."""
        return {**input, **{name: await self.upload(input[name]) for name in P.fields_to_upload(input)}}

    async def upload(self, data: P.Uploadable, *, content_type: Optional[str] = None, file_name: Optional[str] = None) -> str:
        """Store a file on the server and return its URL, usable as ``image_url``."""
        blob, ctype, name = P.upload_payload(data, content_type, file_name)
        token = await self._json("POST", self.urls.token(), json={})
        url, headers = P.upload_target(token, self.urls, ctype, name)
        return str((await self._json("POST", url, auth=False, content=blob, headers=headers))["access_url"])

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
        return Status.from_json(await self._json("GET", self.urls.status(request_id), params=P.status_params(logs)))

    async def stream_status(self, request_id: str, *, logs: bool = True) -> AsyncIterator[Status]:
        """Status updates as the server pushes them (SSE), ending with COMPLETED."""
        url = self.urls.stream(request_id)
        try:
            async with self._http.stream("GET", url, params=P.stream_params(logs), headers=P.stream_headers(self.key),
                                         timeout=P.STREAM_TIMEOUT) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    P.check_response(resp, url)
                decoder = P.SSEDecoder()
                async for line in resp.aiter_lines():
                    obj = decoder.feed(line)
                    if obj is None:
                        continue
                    status = Status.from_json(obj)
                    yield status
                    if status.done:
                        return
                obj = decoder.flush()
                if obj is not None:
                    yield Status.from_json(obj)
        except httpx.TransportError as exc:
            raise P.ServerUnreachable(f"status stream from {self.server} broke: {exc}") from exc

    async def result(self, request_id: str) -> dict:
        """The output of a completed request; raises :class:`HTTPError` for a failed one."""
        return await self._json("GET", self.urls.result(request_id))

    async def cancel(self, request_id: str) -> str:
        """Ask the server to stop a request; returns CANCELLATION_REQUESTED or ALREADY_COMPLETED."""
        try:
            return P.cancel_outcome(await self._json("PUT", self.urls.cancel(request_id)))
        except P.HTTPError as exc:
            refusal = P.cancel_refusal(exc)
            if refusal is None:
                raise
            return refusal

    async def run(self, input: dict) -> dict:
        """Synchronous run (``POST /fal-ai/ccsr``): waits until the output is ready."""
        return await self._json("POST", self.urls.run(), json=await self._prepare(input), timeout=None)

    async def download(self, url: str, dest: Optional[str | PathLike] = None) -> bytes:
        """Fetch a result file (a ``data:`` URI, from ``sync_mode``, is decoded
        here); also write it to ``dest`` when given (key only to our server)."""
        inline = P.inline_bytes(url)
        if inline is not None:
            return P.save_download(inline, dest)
        same_server = url.startswith(self.server + "/")
        return P.save_download((await self._request("GET", url, auth=same_server)).content, dest)

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
        follow = P.Follower(handle.request_id, timeout, on_queue_update, on_progress, on_log)
        if stream:
            try:
                async for status in self.stream_status(handle.request_id, logs=True):
                    if follow.see(status):
                        break
            except (P.ServerUnreachable, P.HTTPError):
                pass  # fall back to polling below
        while follow.final is None:
            if follow.see(await self.status(handle.request_id, logs=True)):
                break
            await asyncio.sleep(poll_interval)
        try:
            out = await self.result(handle.request_id)
        except P.HTTPError as exc:
            raise follow.failed(exc) from exc
        return follow.output(out)
