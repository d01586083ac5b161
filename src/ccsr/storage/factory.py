"""Build the configured blob store from :class:`ccsr.settings.Settings`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ccsr.storage.base import BlobStore
from ccsr.storage.local import LocalBlobStore

if TYPE_CHECKING:  # settings imports pydantic; the blob package does not need it at run time
    from ccsr.settings import Settings


def from_settings(settings: "Settings") -> BlobStore:
    """``blob_store=local``: a directory under ``data_dir/blobs``;
    ``blob_store=s3``: the bucket the ``s3_*`` settings name."""
    kind = getattr(settings, "blob_store", "local")
    if kind == "local":
        return LocalBlobStore(Path(settings.data_dir) / "blobs")
    if kind == "s3":
        from ccsr.storage.s3 import S3BlobStore  # boto3 only when this store is used

        if not settings.s3_bucket:
            raise ValueError("s3_bucket (CCSR_S3_BUCKET) must be set when blob_store is s3")
        return S3BlobStore(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None,
            prefix=settings.s3_prefix,
            presign=settings.s3_presign_urls,
            presign_expires=settings.s3_presign_expires,
        )
    raise ValueError(f"blob_store must be local or s3 (got {kind!r})")
