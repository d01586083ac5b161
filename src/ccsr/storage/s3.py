"""The S3-compatible blob store: one bucket (and an optional key prefix) on
AWS S3, MinIO, SeaweedFS, Ceph RGW, R2 and the like.

Several HTTP nodes and remote workers share one bucket, so a result a worker
writes on one machine is served by any node. boto3 is imported only when this
store is built (install ``ccsr[s3]``); the local store needs nothing extra.

Requests are signed with SigV4 (presigned URLs included: SigV2 URLs that
override response headers are refused by several S3-compatible servers).
With an ``endpoint_url`` the bucket is addressed by path
(``<endpoint>/<bucket>/<key>``), which every S3-compatible server accepts.
"""

from __future__ import annotations

import tempfile
import threading
from typing import Any, BinaryIO, Iterator, Optional
from urllib.parse import quote

from ccsr.storage.base import BlobInfo, BlobNotFound, BlobStore, Data, check_key, iter_chunks

# Uploads up to this size stay in memory before boto3 sends them; larger ones
# spill to a temporary file (boto3 then sends them as a multipart upload).
_SPOOL_BYTES = 8 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


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
                        retries={"max_attempts": 3, "mode": "standard"},
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

    @staticmethod
    def _missing(exc: Exception) -> bool:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code")) in _NOT_FOUND

    # --- the interface ---------------------------------------------------------------
    def put(self, key, data: Data, *, content_type="application/octet-stream", max_bytes=None) -> BlobInfo:
        name = self._name(key)
        size = 0
        # Count (and stop at max_bytes) before anything reaches the bucket: an
        # S3 PUT is atomic, so readers never see a part, and a refused upload
        # leaves nothing behind.
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
            for chunk in iter_chunks(data):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise OverflowError(f"blob larger than {max_bytes} bytes")
                spool.write(chunk)
            spool.seek(0)
            self.client.upload_fileobj(spool, self.bucket, name, ExtraArgs={"ContentType": content_type})
        return BlobInfo(key, size, content_type)

    def open(self, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:  # botocore's ClientError, without importing botocore here
            if self._missing(exc):
                raise BlobNotFound(key) from None
            raise
        return response["Body"]  # a file-like StreamingBody (io.IOBase)

    def stat(self, key: str) -> Optional[BlobInfo]:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        return BlobInfo(key, int(head["ContentLength"]), head.get("ContentType") or "application/octet-stream")

    def delete(self, key: str) -> bool:
        # S3 answers a DELETE of a missing key with success too: ask first so
        # the caller learns whether something was removed.
        if self.stat(key) is None:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        return True

    def keys(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix):]

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
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if not self._missing(exc):
                raise
            self.client.create_bucket(Bucket=self.bucket)
