"""Where request inputs, results and uploads keep their bytes.

One small interface (:class:`BlobStore`) with two implementations: a local
directory (the default) and an S3-compatible bucket (several machines), both
opened by :func:`open_blob_store` (from the settings or from a spec). Every key
is named in :mod:`ccsr.storage.keys`. The service keeps bytes through one
:class:`~ccsr.storage.api.Storage` object (files, uploads, the blobs of
requests). Executors get the store once when they start and hand workers blob
*keys*, never filesystem paths, so a worker on another machine rebuilds the
same store from :meth:`BlobStore.spec` and reads its input from there.
"""

from ccsr.storage.base import BlobInfo, BlobNotFound, BlobStore, BlobStoreError, StoreRefused, StoreUnavailable
from ccsr.storage.local import LocalBlobStore
from ccsr.storage.factory import open_blob_store, store_spec
from ccsr.storage.api import Storage  # after the above: it builds on them

__all__ = ["BlobInfo", "BlobNotFound", "BlobStore", "BlobStoreError", "LocalBlobStore", "Storage", "StoreRefused",
           "StoreUnavailable", "open_blob_store", "store_spec"]
