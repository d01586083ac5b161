"""The parts of the queue protocol that do not depend on sync or async I/O.

URL building, status parsing, progress extraction and error mapping live here
once, so :class:`ccsr.client.Client` and :class:`ccsr.client.AsyncClient`
only differ in how they wait for the network.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Union
from urllib.parse import quote

import httpx

# The errors live in errors.py; re-exported because callers use P.<Error>.
from ccsr.client.errors import (  # noqa: F401
    AuthError,
    ClientError,
    HTTPError,
    RequestFailed,
    ServerTimeout,
    ServerUnreachable,
    ValidationError,
    error_from_response,
    field_errors,
    format_detail,
)

DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_APP = "fal-ai/ccsr"
TERMINAL = "COMPLETED"

#: Anything ``upload`` accepts: a file path, raw bytes.
Uploadable = Union[str, os.PathLike, bytes, bytearray]


def default_server() -> str:
    """The server from ``CCSR_SERVER``, else the local default."""
    return os.environ.get("CCSR_SERVER") or DEFAULT_SERVER


def default_key() -> Optional[str]:
    """The key from ``CCSR_KEY``, else ``FAL_KEY`` (what the official clients read)."""
    return os.environ.get("CCSR_KEY") or os.environ.get("FAL_KEY") or None


# --------------------------------------------------------------------- status


@dataclass
class Log:
    """One log line of a request, as the server reports it."""

    message: str
    level: str = "INFO"
    timestamp: str = ""

    @classmethod
    def from_json(cls, data: dict) -> "Log":
        return cls(str(data.get("message", "")), str(data.get("level", "INFO")), str(data.get("timestamp", "")))


@dataclass
class Progress:
    """How far a running request is: ``step`` of ``total`` (fraction in [0, 1])."""

    step: int
    total: int

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


@dataclass
class Status:
    """A queue status: IN_QUEUE, IN_PROGRESS or COMPLETED (failed requests are COMPLETED with ``error``)."""

    status: str
    request_id: str
    queue_position: Optional[int] = None
    logs: list[Log] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    error: Any = None
    error_type: Optional[str] = None
    progress: Optional[Progress] = None
    raw: dict = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status == TERMINAL

    @classmethod
    def from_json(cls, data: dict) -> "Status":
        logs = [Log.from_json(x) for x in (data.get("logs") or []) if isinstance(x, dict)]
        return cls(
            status=str(data.get("status", "")),
            request_id=str(data.get("request_id", "")),
            queue_position=data.get("queue_position"),
            logs=logs,
            metrics=data.get("metrics") or {},
            error=data.get("error"),
            error_type=data.get("error_type"),
            progress=progress_of(data, logs),
            raw=data,
        )


@dataclass
class Handle:
    """What ``submit`` returns: the request id and the URLs to follow it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: Optional[int] = None


_STEP_RE = re.compile(r"\bsteps?\s+(\d+)\s*(?:/|of)\s*(\d+)", re.IGNORECASE)


def progress_of(data: dict, logs: Iterable[Log]) -> Optional[Progress]:
    """Progress from a status: the last "step N/M" log line (the server logs
    one per sampling step), else a numeric ``progress`` field (a fraction)."""
    found: Optional[Progress] = None
    for log in logs:
        m = _STEP_RE.search(log.message)
        if m and int(m.group(2)) > 0:
            found = Progress(int(m.group(1)), int(m.group(2)))
    if found is not None:
        return found
    p = data.get("progress")
    if isinstance(p, dict):
        step, total = p.get("step"), p.get("total")
        if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return Progress(int(step), int(total))
    elif isinstance(p, (int, float)) and not isinstance(p, bool) and data.get("status") == "IN_PROGRESS":
        return Progress(round(max(0.0, min(1.0, float(p))) * 100), 100)
    return None


def log_key(log: Log) -> tuple[str, str, str]:
    """Identity of a log line, so cumulative log lists are reported once."""
    return (log.timestamp, log.level, log.message)


class Reporter:
    """Turns a sequence of statuses into callbacks: every status, each new log
    line once (status lists are cumulative), and progress when it moves."""

    def __init__(self, on_queue_update=None, on_progress=None, on_log=None):  # noqa: ANN001
        self.on_queue_update = on_queue_update
        self.on_progress = on_progress
        self.on_log = on_log
        self._seen: set[tuple[str, str, str]] = set()
        self._last: Optional[tuple[int, int]] = None

    def __call__(self, status: Status) -> None:
        if self.on_queue_update:
            self.on_queue_update(status)
        for log in status.logs:
            key = log_key(log)
            if key in self._seen:
                continue
            self._seen.add(key)
            if self.on_log:
                self.on_log(log)
        p = status.progress
        if p is not None and (p.step, p.total) != self._last:
            self._last = (p.step, p.total)
            if self.on_progress:
                self.on_progress(p)


# --------------------------------------------------------------------- URLs


class Urls:
    """Where each protocol route lives on one server (see docs/fal-protocol)."""

    def __init__(self, server: str, app: str = DEFAULT_APP):
        self.server = server.rstrip("/")
        self.app = app.strip("/")
        owner_alias = "/".join(self.app.split("/")[:2])
        self.base = f"{self.server}/queue/{owner_alias}"

    def submit(self, webhook_url: Optional[str] = None) -> str:
        url = f"{self.server}/queue/{self.app}"
        if webhook_url:
            url += "?fal_webhook=" + quote(webhook_url, safe="")
        return url

    def run(self) -> str:
        return f"{self.server}/{self.app}"

    def status(self, request_id: str) -> str:
        return f"{self.base}/requests/{request_id}/status"

    def stream(self, request_id: str) -> str:
        return f"{self.base}/requests/{request_id}/status/stream"

    def result(self, request_id: str) -> str:
        return f"{self.base}/requests/{request_id}"

    def cancel(self, request_id: str) -> str:
        return f"{self.base}/requests/{request_id}/cancel"

    def token(self) -> str:
        return f"{self.server}/rest/storage/auth/token?storage_type=fal-cdn-v3"

    def cdn_upload(self) -> str:
        return f"{self.server}/cdn/files/upload"


def auth_headers(key: Optional[str]) -> dict[str, str]:
    return {"Authorization": f"Key {key}"} if key else {}


def submit_headers(priority: Optional[str], start_timeout: Optional[float]) -> dict[str, str]:
    headers: dict[str, str] = {}
    if priority:
        headers["X-Fal-Queue-Priority"] = priority
    if start_timeout:
        headers["X-Fal-Request-Timeout"] = str(start_timeout)
    return headers


def upload_payload(data: Uploadable, content_type: Optional[str], file_name: Optional[str]) -> tuple[bytes, str, str]:
    """Bytes, content type and file name for an upload from a path or bytes."""
    if isinstance(data, (bytes, bytearray)):
        name = file_name or "upload.bin"
        blob = bytes(data)
    else:
        path = Path(data)
        if not path.is_file():
            raise ClientError(f"no such file: {path}")
        name = file_name or path.name
        blob = path.read_bytes()
    ctype = content_type or mimetypes.guess_type(name)[0] or sniff_type(blob)
    return blob, ctype, name


def sniff_type(blob: bytes) -> str:
    """Content type from magic bytes, for bytes uploaded without a name."""
    if blob.startswith(b"\x89PNG"):
        return "image/png"
    if blob.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def is_remote(ref: str) -> bool:
    """True for inputs the server fetches itself (URLs and data URIs)."""
    return ref.startswith(("http://", "https://", "data:"))


class SSEDecoder:
    """Incremental Server-Sent Events decoder: feed it lines, get the JSON
    objects of complete ``data:`` events (comment lines, the keep-alives, are
    skipped). Sync and async streams share it."""

    def __init__(self) -> None:
        self._buf: list[str] = []

    def feed(self, line: str) -> Optional[dict]:
        """One line in; the event's object when this line ended an event."""
        line = line.rstrip("\r")
        if not line:
            return self.flush()
        if line.startswith("data:"):
            self._buf.append(line[5:].lstrip(" "))
        return None

    def flush(self) -> Optional[dict]:
        """The pending event's object, if any (also at the end of the stream)."""
        if not self._buf:
            return None
        payload, self._buf = "\n".join(self._buf), []
        try:
            obj = json.loads(payload)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) else None


def iter_sse(lines: Iterable[str]) -> Iterator[dict]:
    """JSON objects from the ``data:`` fields of a Server-Sent Events stream."""
    decoder = SSEDecoder()
    for line in lines:
        obj = decoder.feed(line)
        if obj is not None:
            yield obj
    obj = decoder.flush()
    if obj is not None:
        yield obj


def handle_from_json(data: dict, urls: Urls) -> Handle:
    rid = str(data["request_id"])
    return Handle(
        request_id=rid,
        status_url=data.get("status_url") or urls.status(rid),
        response_url=data.get("response_url") or urls.result(rid),
        cancel_url=data.get("cancel_url") or urls.cancel(rid),
        queue_position=data.get("queue_position"),
    )


# --------------------------------------------------------------------- shared by Client and AsyncClient
#: Timeouts of a status stream: the server sends a keep-alive comment every
#: few seconds, but a request may stay queued for long, so reads never time out.
STREAM_TIMEOUT = httpx.Timeout(60.0, read=None)


@contextlib.contextmanager
def transport_errors(method: str, url: str, server: str) -> Iterator[None]:
    """Turn httpx's transport failures into :class:`ServerTimeout` / :class:`ServerUnreachable`.

    A plain context manager: exceptions raised by an ``await`` inside it are
    mapped just the same."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ServerTimeout(f"{method} {url} timed out: {exc}") from exc
    except httpx.TransportError as exc:
        raise ServerUnreachable(f"cannot reach {server}: {exc}") from exc


def check_response(resp: httpx.Response, url: str) -> httpx.Response:
    """``resp`` when it is a success, else the matching :class:`HTTPError` (body must be read)."""
    if resp.status_code >= 400:
        raise error_from_response(resp.status_code, resp.content, resp.headers, url)
    return resp


def json_of(resp: httpx.Response, method: str, url: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise ClientError(f"{method} {url}: the server did not answer JSON") from exc


def request_headers(key: Optional[str], auth: bool, extra: Optional[dict] = None) -> dict[str, str]:
    return {**(auth_headers(key) if auth else {}), **(extra or {})}


def status_params(logs: bool) -> dict[str, str]:
    return {"logs": "true" if logs else "false"}


def stream_params(logs: bool) -> dict[str, str]:
    return {"logs": "1" if logs else "0"}


def stream_headers(key: Optional[str]) -> dict[str, str]:
    return {**auth_headers(key), "Accept": "text/event-stream"}


def is_local_file(value: str) -> bool:
    """True when ``value`` names an existing local file (never for URLs).

    Strings no file system accepts as a path (too long, NUL bytes) are not
    files: they go to the server as they are, which explains what is wrong."""
    if is_remote(value):
        return False
    try:
        return Path(value).is_file()
    except (OSError, ValueError):
        return False


def fields_to_upload(input: dict) -> list[str]:
    """The ``*_url`` fields holding local files (paths or bytes) to upload before submitting."""
    names = []
    for name, value in input.items():
        if not name.endswith("_url"):
            continue
        if isinstance(value, (os.PathLike, bytes, bytearray)) or (isinstance(value, str) and is_local_file(value)):
            names.append(name)
    return names


def upload_target(token: dict, urls: Urls, content_type: str, file_name: str) -> tuple[str, dict[str, str]]:
    """Where to POST an upload's bytes and with which headers, given the storage token."""
    base = str(token.get("base_url") or "").rstrip("/")
    url = f"{base}/files/upload" if base else urls.cdn_upload()
    headers = {
        "Content-Type": content_type,
        "X-Fal-File-Name": file_name,
        "Authorization": f"{token.get('token_type', 'Bearer')} {token['token']}",
    }
    return url, headers


def cancel_outcome(data: Any) -> str:
    return str(data.get("status", "")) if isinstance(data, dict) else ""


def cancel_refusal(exc: HTTPError) -> Optional[str]:
    """ALREADY_COMPLETED (the 400 answer to a late cancel), or None for real errors."""
    if exc.status_code == 400 and isinstance(exc.detail, dict) and exc.detail.get("status"):
        return str(exc.detail["status"])
    return None


def inline_bytes(url: str) -> Optional[bytes]:
    """The bytes of a ``data:`` URI (a result returned inline, ``sync_mode``),
    or None for any other URL (downloaded instead)."""
    if not url.startswith("data:"):
        return None
    import base64
    import binascii
    from urllib.parse import unquote_to_bytes

    head, sep, body = url.partition(",")
    if not sep:
        raise ClientError("the result's data URI has no ',' (malformed)")
    try:
        return base64.b64decode(body, validate=True) if head.endswith(";base64") else unquote_to_bytes(body)
    except (binascii.Error, ValueError) as exc:
        raise ClientError(f"the result's data URI is not valid base64 ({exc})") from None


def save_download(data: bytes, dest: Optional[Union[str, os.PathLike]]) -> bytes:
    if dest is not None:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(data)
    return data


class Follower:
    """Following one request to its end: callbacks, the caller's deadline,
    and how the final status and result become the output or an error."""

    def __init__(
        self,
        request_id: str,
        timeout: Optional[float],
        on_queue_update: Optional[Callable[[Status], None]] = None,
        on_progress: Optional[Callable[[Progress], None]] = None,
        on_log: Optional[Callable[[Log], None]] = None,
    ):
        self.request_id = request_id
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.report = Reporter(on_queue_update, on_progress, on_log)
        self.final: Optional[Status] = None

    def see(self, status: Status) -> bool:
        """Report a status; True once it is the final one."""
        self.report(status)
        if status.done:
            self.final = status
            return True
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ClientError(f"request {self.request_id} did not finish in time (still running on the server)")
        return False

    def failed(self, exc: HTTPError) -> "RequestFailed":
        """The error for a result fetch the server refused."""
        final = self.final
        error_type = exc.error_type or (final.error_type if final else None)
        return RequestFailed(self.request_id, exc.detail, error_type, exc.status_code)

    def output(self, out: dict) -> dict:
        """The output, unless the final status reported an error."""
        if self.final is not None and self.final.error:
            raise RequestFailed(self.request_id, self.final.error, self.final.error_type)
        return out
