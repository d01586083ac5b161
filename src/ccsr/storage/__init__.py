"""Blob stores: where request inputs, results and uploads keep their bytes.

One small interface (:class:`BlobStore`) with two implementations: a local
directory (the default) and an S3-compatible bucket (several machines). The
executor hands workers blob *keys*, never filesystem paths, so a worker on
another machine rebuilds the same store from :meth:`BlobStore.spec` with
:func:`open_blob_store` and reads its input from there.
"""

from ccsr.storage.base import BlobInfo, BlobNotFound, BlobStore, open_blob_store
from ccsr.storage.local import LocalBlobStore
from ccsr.storage.factory import from_settings

__all__ = ["BlobInfo", "BlobNotFound", "BlobStore", "LocalBlobStore", "from_settings", "open_blob_store"]
