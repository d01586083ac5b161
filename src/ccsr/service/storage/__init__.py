"""File storage: uploads and results under unguessable capability URLs,
kept in the configured blob store, and the storage routes of the hosted
protocol.

- :mod:`.files`: the :class:`FileStore` (bytes plus metadata in a blob store)
- :mod:`.uploads`: initiated single and multipart uploads
- :mod:`.tokens`: short-lived upload tokens
- :mod:`.routes`: the HTTP routes, including ``GET /files/<key>/<name>``

The request-URL helpers live in :mod:`ccsr.service.urls` (re-exported here
for callers that import them from this package).
"""

from ccsr.service.storage.files import (
    FileStore,
    NotFound,
    StorageError,
    StoredFile,
    TooLarge,
    blob_key,
    clean_content_type,
    clean_file_name,
    is_valid_key,
)
from ccsr.service.storage.routes import INLINE_TYPES, file_response, storage_router
from ccsr.service.storage.tokens import UploadTokens
from ccsr.service.storage.uploads import PendingUpload, PendingUploads
from ccsr.service.urls import lifecycle_ttl, public_base_url

__all__ = [
    "INLINE_TYPES",
    "FileStore",
    "NotFound",
    "PendingUpload",
    "PendingUploads",
    "StorageError",
    "StoredFile",
    "TooLarge",
    "UploadTokens",
    "blob_key",
    "clean_content_type",
    "clean_file_name",
    "file_response",
    "is_valid_key",
    "lifecycle_ttl",
    "public_base_url",
    "storage_router",
]
