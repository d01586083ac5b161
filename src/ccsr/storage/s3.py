"""The S3-compatible blob store: one bucket (and an optional key prefix) on
AWS S3, MinIO, SeaweedFS, Ceph RGW, R2 and the like.

Several HTTP nodes and remote workers share one bucket, so a result a worker
writes on one machine is served by any node. boto3 is imported only when this
store is built (install ``ccsr[s3]``); the local store needs nothing extra.

Requests are signed with SigV4 (presigned URLs included: SigV2 URLs that
override response headers are refused by several S3-compatible servers).
With an ``endpoint_url`` the bucket is addressed by path
(``<endpoint>/<bucket>/<key>``), which every S3-compatible server accepts.

Faults are bounded and transient (docs/scale-out.md, "When the blob store
fails"): every call has a connect and a read timeout sized for a queue
server (not boto's 60 s), is retried with backoff for ``retry_seconds``, and
then raises :class:`~ccsr.storage.base.StoreUnavailable` and marks the
store's :attr:`health` down. Botocore's exceptions never leave this module:
their text names the endpoint, bucket and key, so it goes to the log and
callers get a message that is safe to show a client.
"""

from __future__ import annotations

import http.client
import io
import logging
import tempfile
import threading
import time
from typing import Any, BinaryIO, Callable, Iterator, Optional, TypeVar
from urllib.parse import quote

from ccsr.storage.base import (
    BlobInfo, BlobNotFound, BlobStore, Data, StoreRefused, StoreUnavailable, check_key, iter_chunks,
)

log = logging.getLogger("ccsr.storage.s3")
T = TypeVar("T")

# Uploads up to this size stay in memory before they are sent; larger ones
# spill to a temporary file. Up to _SINGLE_PUT_BYTES they go as one PUT (one
# request to retry), larger ones as a multipart upload.
_SPOOL_BYTES = 8 * 1024 * 1024
_SINGLE_PUT_BYTES = 256 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
# Answers that say "not now": retried like a connection failure.
_BUSY = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable", "InternalError",
         "RequestLimitExceeded", "TooManyRequests"}
# Answers that say this server cannot use the store at all (credentials, bucket):
# not retried, but the store is unavailable to this server, like an outage.
_UNUSABLE = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket", "ExpiredToken",
             "InvalidToken", "AllAccessDisabled", "AccountProblem", "InvalidBucketName"}
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 2.0

#: Defaults of the timeouts and the retry window (the s3_* settings document them).
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 15.0
RETRY_SECONDS = 10.0

MISSING, TRANSIENT, UNUSABLE, REFUSED = "missing", "transient", "unusable", "refused"


def classify(exc: BaseException) -> Optional[str]:
    """What a failed S3 call means: the key is missing, the store is out of
    reach for now (retry), unusable by this server (credentials, bucket),
    or it refused this call; None for an exception that is no store fault
    (a bug: raised as it is)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and ("Error" in response or "ResponseMetadata" in response):
        code = str(response.get("Error", {}).get("Code", ""))
        status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _NOT_FOUND:
            return MISSING
        if status >= 500 or status in (408, 429) or code in _BUSY:
            return TRANSIENT
        if status in (401, 403) or code in _UNUSABLE:
            return UNUSABLE
        return REFUSED
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return UNUSABLE
    module = type(exc).__module__ or ""
    if name == "ParamValidationError":
        return None
    if module.startswith(("botocore", "urllib3", "s3transfer")) or isinstance(exc, (OSError, http.client.HTTPException)):
        return TRANSIENT  # connection refused or reset, timeouts, a body cut short
    return None


class S3BlobStore(BlobStore):
    """Blobs as objects ``<prefix><key>`` in ``bucket``.

    Credentials not given here come from boto3's usual chain (environment,
    ``~/.aws``, instance role). ``presign`` makes :meth:`url` answer presigned
    GET URLs valid for ``presign_expires`` seconds, so clients download from the
    bucket instead of through the server.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: Optional[str] = None,
        region: Optional[str] = None,
        access_key_id: Optional[str] = None,
        secret_access_key: Optional[str] = None,
        prefix: str = "",
        presign: bool = False,
        presign_expires: int = 3600,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        retry_seconds: float = RETRY_SECONDS,
        max_connections: int = 32,
    ):
        if not bucket:
            raise ValueError("s3_bucket must be set to use the S3 blob store")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.access_key_id = access_key_id or None
        self.secret_access_key = secret_access_key or None
        self.prefix = prefix
        self.presign = presign
        self.presign_expires = int(presign_expires)
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.retry_seconds = float(retry_seconds)
        self.max_connections = int(max_connections)
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: dict) -> "S3BlobStore":
        return cls(
            spec["bucket"],
            endpoint_url=spec.get("endpoint_url"),
            region=spec.get("region"),
            access_key_id=spec.get("access_key_id"),
            secret_access_key=spec.get("secret_access_key"),
            prefix=spec.get("prefix", ""),
            presign=bool(spec.get("presign", False)),
            presign_expires=int(spec.get("presign_expires", 3600)),
            connect_timeout=float(spec.get("connect_timeout", CONNECT_TIMEOUT)),
            read_timeout=float(spec.get("read_timeout", READ_TIMEOUT)),
            retry_seconds=float(spec.get("retry_seconds", RETRY_SECONDS)),
            max_connections=int(spec.get("max_connections", 32)),
        )

    def spec(self) -> dict:
        """Everything another machine needs to reach the same bucket.

        It carries the credentials when they were configured here (not when
        they come from boto3's chain), so treat a spec like a secret.
        """
        return {
            "kind": "s3",
            "bucket": self.bucket,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "prefix": self.prefix,
            "presign": self.presign,
            "presign_expires": self.presign_expires,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "retry_seconds": self.retry_seconds,
            "max_connections": self.max_connections,
        }

    # --- the client ----------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use (boto3 clients are thread-safe)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        import boto3
                        from botocore.config import Config
                    except ModuleNotFoundError:  # pragma: no cover - depends on the install
                        raise RuntimeError(
                            "blob_store=s3 needs boto3: pip install 'ccsr[s3]'"
                        ) from None
                    config = Config(
                        signature_version="s3v4",
                        s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                        # One attempt per call: _call retries, bounded in time, not in count.
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        connect_timeout=self.connect_timeout,
                        read_timeout=self.read_timeout,
                        max_pool_connections=self.max_connections,
                    )
                    self._client = boto3.client(
                        "s3",
                        endpoint_url=self.endpoint_url,
                        region_name=self.region,
                        aws_access_key_id=self.access_key_id,
                        aws_secret_access_key=self.secret_access_key,
                        config=config,
                    )
        return self._client

    def _name(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, what: str, fn: Callable[[], T], key: Optional[str] = None, *, retry: bool = True) -> T:
        """``fn()``, retried with backoff while the store is out of reach,
        for at most ``retry_seconds`` (``retry=False``: once). Raises
        BlobNotFound, StoreUnavailable (and marks :attr:`health` down) or
        StoreRefused; records the store as up when a call gets an answer."""
        started = time.monotonic()
        deadline = started + (self.retry_seconds if retry else 0.0)
        delay = _BACKOFF_FIRST
        tries = 0
        while True:
            tries += 1
            mark = self.health.mark()
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - classified below; bugs are re-raised
                kind = classify(exc)
                if kind is None:
                    raise
                if kind == MISSING:
                    self.health.up(mark)
                    raise BlobNotFound(key) from None
                if kind == REFUSED:
                    self.health.up(mark)
                    log.warning("S3 %s of %s refused: %s", what, key, exc)
                    raise StoreRefused() from exc
                remaining = deadline - time.monotonic()
                if kind == TRANSIENT and remaining > 0:
                    time.sleep(min(delay, remaining))  # the last try comes at the end of the window
                    delay = min(delay * 2, _BACKOFF_MAX)
                    continue
                reason = f"{what} failed after {tries} tries: {type(exc).__name__}"
                log.warning("S3 %s of %s failed (%d tries in %.1f s): %s", what, key, tries,
                            time.monotonic() - started, exc)
                self.health.down(reason)
                raise StoreUnavailable() from exc
            self.health.up(mark)
            return result

    # --- the interface ---------------------------------------------------------------
    def put(self, key, data: Data, *, content_type="application/octet-stream", max_bytes=None) -> BlobInfo:
        name = self._name(key)
        size = 0
        # Count (and stop at max_bytes) before anything reaches the bucket: an
        # S3 PUT is atomic, so readers never see a part, and a refused upload
        # leaves nothing behind. The spool is also what a retry sends again.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            for chunk in iter_chunks(data):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise OverflowError(f"blob larger than {max_bytes} bytes")
                spool.write(chunk)

            def send() -> None:
                spool.seek(0)
                if size <= _SINGLE_PUT_BYTES:
                    self.client.put_object(Bucket=self.bucket, Key=name, Body=spool, ContentType=content_type)
                else:
                    from boto3.s3.transfer import TransferConfig

                    self.client.upload_fileobj(spool, self.bucket, name, ExtraArgs={"ContentType": content_type},
                                               Config=TransferConfig(use_threads=False))

            self._call("put", send, key)
        return BlobInfo(key, size, content_type)

    def open(self, key: str) -> BinaryIO:
        response = self._call("get", lambda: self.client.get_object(Bucket=self.bucket, Key=self._name(key)), key)
        return _Body(response["Body"])  # type: ignore[return-value]

    def read(self, key: str) -> bytes:
        # The whole GET and its body in one call: a body cut short is retried too.
        return self._call("get", lambda: self.client.get_object(Bucket=self.bucket, Key=self._name(key))["Body"].read(),
                          key)

    def stat(self, key: str) -> Optional[BlobInfo]:
        try:
            head = self._call("head", lambda: self.client.head_object(Bucket=self.bucket, Key=self._name(key)), key)
        except BlobNotFound:
            return None
        return BlobInfo(key, int(head["ContentLength"]), head.get("ContentType") or "application/octet-stream")

    def probe(self, key: str) -> None:
        """One HEAD, not retried: the periodic check of an idle or down store."""
        name = self._name(key)
        try:
            self._call("probe", lambda: self.client.head_object(Bucket=self.bucket, Key=name), key, retry=False)
        except BlobNotFound:
            pass  # an answer

    def delete(self, key: str) -> bool:
        # S3 answers a DELETE of a missing key with success too: ask first so
        # the caller learns whether something was removed.
        if self.stat(key) is None:
            return False
        self._call("delete", lambda: self.client.delete_object(Bucket=self.bucket, Key=self._name(key)), key)
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        def listing() -> list[str]:
            paginator = self.client.get_paginator("list_objects_v2")
            return [item["Key"][len(self.prefix):]
                    for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
                    for item in page.get("Contents", [])]

        yield from self._call("list", listing, prefix or "/")

    def url(self, key: str, *, expires_in: Optional[int] = None, file_name: Optional[str] = None,
            content_type: Optional[str] = None, attachment: bool = False) -> Optional[str]:
        if not self.presign:
            return None
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._name(key)}
        if file_name or attachment:
            disposition = "attachment" if attachment else "inline"
            if file_name:
                disposition += f"; filename*=UTF-8''{quote(file_name, safe='')}"
            params["ResponseContentDisposition"] = disposition
        if content_type:
            params["ResponseContentType"] = content_type
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(expires_in or self.presign_expires))

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (for tests and first runs)."""
        try:
            self._call("head bucket", lambda: self.client.head_bucket(Bucket=self.bucket))
        except BlobNotFound:
            self._call("create bucket", lambda: self.client.create_bucket(Bucket=self.bucket))


class _Body(io.RawIOBase):
    """An object's body being read: a read the store cuts short raises
    StoreUnavailable (with a safe text), not botocore's or urllib3's error."""

    def __init__(self, body: Any):
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except Exception as exc:  # noqa: BLE001
            if classify(exc) is None:
                raise
            log.warning("S3 body read failed: %s", exc)
            raise StoreUnavailable() from exc

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()
