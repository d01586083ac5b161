"""Open a blob store: the one entry point, from settings or from a spec.

The service opens its store from :class:`ccsr.settings.Settings`; a worker
process or a Ray actor on another machine rebuilds the same store from the
:meth:`BlobStore.spec` its executor was given. Both go through
:func:`open_blob_store`, so a store is built in exactly one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Union

from ccsr.storage.base import BlobStore
from ccsr.storage.local import LocalBlobStore

if TYPE_CHECKING:  # settings imports pydantic; the blob package does not need it at run time
    from ccsr.settings import Settings


def store_spec(settings: "Settings") -> dict:
    """The spec of the store the settings configure. ``blob_store=local``: a
    directory under ``data_dir/blobs``; ``blob_store=s3``: the bucket the
    ``s3_*`` settings name."""
    kind = getattr(settings, "blob_store", "local")
    if kind == "local":
        return {"kind": "local", "root": str(Path(settings.data_dir) / "blobs")}
    if kind == "s3":
        if not settings.s3_bucket:
            raise ValueError("s3_bucket (CCSR_S3_BUCKET) must be set when blob_store is s3")
        secret = settings.s3_secret_access_key
        return {
            "kind": "s3",
            "bucket": settings.s3_bucket,
            "endpoint_url": settings.s3_endpoint_url,
            "region": settings.s3_region,
            "access_key_id": settings.s3_access_key_id,
            "secret_access_key": secret.get_secret_value() if secret else None,
            "prefix": settings.s3_prefix,
            "presign": settings.s3_presign_urls,
            "presign_expires": settings.s3_presign_expires,
            "connect_timeout": settings.s3_connect_timeout,
            "read_timeout": settings.s3_read_timeout,
            "retry_seconds": settings.s3_retry_seconds,
            # the blob pool's threads and the in-process executor's own (ThreadExecutor)
            "max_connections": settings.blob_threads + 8,
        }
    raise ValueError(f"blob_store must be local or s3 (got {kind!r})")


def open_blob_store(source: Union[Mapping, "Settings"]) -> BlobStore:
    """The store a spec (a :meth:`BlobStore.spec` mapping) or the settings describe."""
    spec = dict(source) if isinstance(source, Mapping) else store_spec(source)
    kind = spec.get("kind")
    if kind == "local":
        return LocalBlobStore(spec["root"])
    if kind == "s3":
        from ccsr.storage.s3 import S3BlobStore  # boto3 only when this store is used

        return S3BlobStore.from_spec(spec)
    raise ValueError(f"unknown blob store kind {kind!r}")
