"""Blocking client for a ``ccsr serve`` server (or anything speaking the queue protocol)."""

from __future__ import annotations

import time
from os import PathLike
from typing import Any, Callable, Iterator, Optional

import httpx

from ccsr.client import protocol as P
from ccsr.client.protocol import Handle, Log, Progress, Status


class Client:
    """Submit, follow and fetch upscaling requests.

    ``server`` defaults to ``$CCSR_SERVER`` (else http://127.0.0.1:8000) and
    ``key`` to ``$CCSR_KEY`` or ``$FAL_KEY``; the key is sent as
    ``Authorization: Key <key>``.
    """

    def __init__(
        self,
        server: Optional[str] = None,
        key: Optional[str] = None,
        *,
        app: str = P.DEFAULT_APP,
        timeout: float = 60.0,
        transport: Optional[httpx.BaseTransport] = None,
    ):
        self.server = (server or P.default_server()).rstrip("/")
        self.key = key if key is not None else P.default_key()
        self.urls = P.Urls(self.server, app)
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    # ------------------------------------------------------------- plumbing
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, *, auth: bool = True, **kw: Any) -> httpx.Response:
        headers = P.request_headers(self.key, auth, kw.pop("headers", None))
        with P.transport_errors(method, url, self.server):
            resp = self._http.request(method, url, headers=headers, **kw)
        return P.check_response(resp, url)

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        return P.json_of(self._request(method, url, **kw), method, url)

    def _prepare(self, input: dict) -> dict:
        """Upload local files given as paths in ``*_url`` fields; pass URLs through."""
        return {**input, **{name: self.upload(input[name]) for name in P.fields_to_upload(input)}}

    # ------------------------------------------------------------- protocol
    def upload(self, data: P.Uploadable, *, content_type: Optional[str] = None, file_name: Optional[str] = None) -> str:
        """Store a file on the server and return its URL, usable as ``image_url``."""
        blob, ctype, name = P.upload_payload(data, content_type, file_name)
        token = self._json("POST", self.urls.token(), json={})
        url, headers = P.upload_target(token, self.urls, ctype, name)
        return str(self._json("POST", url, auth=False, content=blob, headers=headers)["access_url"])

    def submit(
        self,
        input: dict,
        *,
        webhook_url: Optional[str] = None,
        priority: Optional[str] = None,
        start_timeout: Optional[float] = None,
    ) -> Handle:
        """Queue a request; returns at once with its id and URLs."""
        body = self._prepare(input)
        data = self._json(
            "POST", self.urls.submit(webhook_url), json=body,
            headers=P.submit_headers(priority, start_timeout),
        )
        return P.handle_from_json(data, self.urls)

    def status(self, request_id: str, *, logs: bool = False) -> Status:
        return Status.from_json(self._json("GET", self.urls.status(request_id), params=P.status_params(logs)))

    def stream_status(self, request_id: str, *, logs: bool = True) -> Iterator[Status]:
        """Status updates as the server pushes them (SSE), ending with COMPLETED."""
        url = self.urls.stream(request_id)
        try:
            with self._http.stream("GET", url, params=P.stream_params(logs), headers=P.stream_headers(self.key),
                                   timeout=P.STREAM_TIMEOUT) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    P.check_response(resp, url)
                for obj in P.iter_sse(resp.iter_lines()):
                    status = Status.from_json(obj)
                    yield status
                    if status.done:
                        return
        except httpx.TransportError as exc:
            raise P.ServerUnreachable(f"status stream from {self.server} broke: {exc}") from exc

    def result(self, request_id: str) -> dict:
        """The output of a completed request; raises :class:`HTTPError` for a failed one."""
        return self._json("GET", self.urls.result(request_id))

    def cancel(self, request_id: str) -> str:
        """Ask the server to stop a request; returns CANCELLATION_REQUESTED or ALREADY_COMPLETED."""
        try:
            return P.cancel_outcome(self._json("PUT", self.urls.cancel(request_id)))
        except P.HTTPError as exc:
            refusal = P.cancel_refusal(exc)
            if refusal is None:
                raise
            return refusal

    def run(self, input: dict) -> dict:
        """Synchronous run (``POST /fal-ai/ccsr``): blocks until the output is ready."""
        return self._json("POST", self.urls.run(), json=self._prepare(input), timeout=None)

    def download(self, url: str, dest: Optional[str | PathLike] = None) -> bytes:
        """Fetch a result file (a ``data:`` URI, from ``sync_mode``, is decoded
        here); also write it to ``dest`` when given. The key is sent only to
        this client's own server."""
        inline = P.inline_bytes(url)
        if inline is not None:
            return P.save_download(inline, dest)
        same_server = url.startswith(self.server + "/")
        return P.save_download(self._request("GET", url, auth=same_server).content, dest)

    def subscribe(
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
        """Submit, follow until done (SSE, or polling when streaming is not
        available), and return the output. Raises :class:`RequestFailed` when the
        request fails or is cancelled."""
        handle = self.submit(input, webhook_url=webhook_url, priority=priority)
        if on_enqueue:
            on_enqueue(handle.request_id)
        follow = P.Follower(handle.request_id, timeout, on_queue_update, on_progress, on_log)
        if stream:
            try:
                for status in self.stream_status(handle.request_id, logs=True):
                    if follow.see(status):
                        break
            except (P.ServerUnreachable, P.HTTPError):
                pass  # fall back to polling below
        while follow.final is None:
            if follow.see(self.status(handle.request_id, logs=True)):
                break
            time.sleep(poll_interval)
        try:
            out = self.result(handle.request_id)
        except P.HTTPError as exc:
            raise follow.failed(exc) from exc
        return follow.output(out)
