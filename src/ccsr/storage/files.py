"""The file store: uploads and results under unguessable keys, kept in a
:class:`~ccsr.storage.BlobStore` (a local directory or an S3 bucket).

Files are *capability URLs*: ``<base>/files/<key>/<file_name>`` is readable
without an auth header, like the provider's CDN, so the key must be
unguessable (``secrets.token_urlsafe``) and is the only thing that selects a
file. The file name in the URL is cosmetic; user text never becomes part of a
blob key: keys are checked against a strict pattern and names are stored only
in the metadata beside the bytes.

A file is two blobs (:mod:`ccsr.storage.keys` names them): its bytes and
its metadata (content type, file name, size, owner, expiry). Bytes are
written before their metadata and the metadata is removed first, so a file is
visible exactly while both are there; a worker's result is written to a new
file's bytes blob and :meth:`FileStore.register` makes it a file in place.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Optional, Union
from urllib.parse import quote, urlsplit

from ccsr.storage import keys
from ccsr.storage.base import BlobNotFound, BlobStore, Data
from ccsr.storage.local import LocalBlobStore
from ccsr.storage.pool import BlobPool
from ccsr.storage.tokens import UploadTokens, load_or_create_secret

# token_urlsafe(24) gives 32 characters; keys.is_file_key accepts a range so
# the pattern, not a length, is what guards the blob keys.
_KEY_BYTES = 24
_FILES_URL_RE = re.compile(r"(?:^|/)files/([A-Za-z0-9_-]{22,86})(?:/[^/]*)?$")
_CONTENT_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,127}$")
_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120


class StorageError(Exception):
    """Base of storage failures the routes turn into HTTP answers."""

    status_code = 400


class TooLarge(StorageError):
    """The upload exceeds ``max_upload_bytes``."""

    status_code = 413

    def __init__(self, limit: int, size: Optional[int] = None):
        self.limit = limit
        self.size = size
        got = f"{size} bytes" if size is not None else "more than the limit"
        super().__init__(f"Upload too large: {got}; the limit is {limit} bytes (setting max_upload_bytes).")


class NotFound(StorageError):
    status_code = 404


@dataclass(frozen=True)
class StoredFile:
    """One stored file's metadata. ``path`` is the file on this machine's
    disk when the blob store is local (None on S3)."""

    key: str
    size: int
    content_type: str
    file_name: str
    owner: Optional[str] = None
    created_at: float = 0.0
    expires_at: Optional[float] = None
    path: Optional[Path] = None

    @property
    def blob_key(self) -> str:
        return blob_key(self.key)

    @property
    def url_path(self) -> str:
        """Server-relative URL path: ``/files/<key>/<quoted name>``."""
        return f"/files/{self.key}/{quote(self.file_name, safe='')}"


is_valid_key = keys.is_file_key


def blob_key(key: str) -> str:
    """The blob key holding the bytes of file ``key`` (NotFound if malformed)."""
    if not is_valid_key(key):
        raise NotFound("no such file")
    return keys.file_bytes(key)


def _meta_key(key: str) -> str:
    blob_key(key)  # checks the key
    return keys.file_meta(key)


def clean_content_type(content_type: Optional[str]) -> str:
    """``type/subtype`` in lower case, parameters dropped; octet-stream if odd."""
    if not content_type:
        return "application/octet-stream"
    value = content_type.split(";", 1)[0].strip().lower()
    return value if _CONTENT_TYPE_RE.match(value) else "application/octet-stream"


def clean_file_name(file_name: Optional[str], content_type: str = "application/octet-stream") -> str:
    """A safe display name: base name only, ``[A-Za-z0-9._-]``, no leading dot.

    The name never reaches a blob key; cleaning it keeps URLs and
    Content-Disposition headers simple and free of injection.
    """
    name = (file_name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = _NAME_BAD_CHARS.sub("_", name).strip("._")
    if len(name) > _MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot else ""
        name = (stem if dot else name)[: _MAX_NAME - len(ext) - 1] + ("." + ext if ext else "")
    if not name:
        ext = mimetypes.guess_extension(content_type) or ".bin"
        name = "file" + ext
    return name


class FileStore:
    """Stored files (bytes plus JSON metadata) in a blob store.

    ``blobs`` is a :class:`BlobStore`, or a directory for a local one.
    ``root`` is a local scratch directory (``root/tmp``) where request bodies
    and worker results are written before they enter the store: the blob
    store's own directory when it is local (entering is then a rename),
    else ``scratch_dir`` or a new temporary directory. ``pool`` runs the
    blob calls of async code (the service's :class:`~ccsr.storage.api.Storage`
    shares its own; default: a small one of this store).
    """

    def __init__(self, blobs: Union[BlobStore, str, Path], *, scratch_dir: Union[str, Path, None] = None,
                 pool: Optional[BlobPool] = None):
        if not isinstance(blobs, BlobStore):
            blobs = LocalBlobStore(blobs)
        self.blobs = blobs
        self.pool = pool or BlobPool(blobs)
        if isinstance(blobs, LocalBlobStore):
            self.root = blobs.root
        else:
            self.root = Path(scratch_dir) if scratch_dir else Path(tempfile.mkdtemp(prefix="ccsr-files-"))
        self._tmp = self.root / keys.SCRATCH_DIR
        self._tmp.mkdir(parents=True, exist_ok=True)

    # --- keys and lookups ---------------------------------------------------------
    @staticmethod
    def new_key() -> str:
        return secrets.token_urlsafe(_KEY_BYTES)

    blob_key = staticmethod(blob_key)

    @staticmethod
    def key_from_url(url: str) -> Optional[str]:
        """The key of a ``.../files/<key>[/<name>]`` URL (ours by shape), else None."""
        try:
            path = urlsplit(url).path
        except ValueError:
            return None
        m = _FILES_URL_RE.search(path)
        return m.group(1) if m else None

    def get(self, key: str, now: Optional[float] = None) -> Optional[StoredFile]:
        """Metadata of a stored, unexpired file, or None."""
        if not is_valid_key(key):
            return None
        try:
            meta = json.loads(self.blobs.read(_meta_key(key)))
        except (BlobNotFound, ValueError):
            return None
        expires = meta.get("expires_at")
        if expires is not None and (time.time() if now is None else now) >= float(expires):
            return None
        path = self.blobs.local_path(blob_key(key))
        if path is None and isinstance(self.blobs, LocalBlobStore):
            return None  # metadata without bytes: a delete in progress
        return StoredFile(
            key=key,
            size=int(meta.get("size", 0)),
            content_type=str(meta.get("content_type", "application/octet-stream")),
            file_name=str(meta.get("file_name", "file.bin")),
            owner=meta.get("owner"),
            created_at=float(meta.get("created_at", 0.0)),
            expires_at=None if expires is None else float(expires),
            path=path,
        )

    def path(self, key: str) -> Path:
        """The local file holding ``key``'s bytes (local blob stores only);
        FileNotFoundError if not stored."""
        stored = self.get(key)
        if stored is None or stored.path is None:
            raise FileNotFoundError(f"no stored file {key!r}")
        return stored.path

    def open(self, key: str) -> BinaryIO:
        """The bytes of a stored file as a file object (FileNotFoundError if not stored)."""
        if self.get(key) is None:
            raise FileNotFoundError(f"no stored file {key!r}")
        try:
            return self.blobs.open(blob_key(key))
        except BlobNotFound:
            raise FileNotFoundError(f"no stored file {key!r}") from None

    def read(self, key: str) -> bytes:
        if self.get(key) is None:
            raise FileNotFoundError(f"no stored file {key!r}")
        try:
            return self.blobs.read(blob_key(key))  # one call: a read the store cuts short is retried
        except BlobNotFound:
            raise FileNotFoundError(f"no stored file {key!r}") from None

    def url_for(self, key: str, base_url: str) -> str:
        """Absolute capability URL of ``key`` under ``base_url``."""
        stored = self.get(key)
        if stored is None:
            raise FileNotFoundError(f"no stored file {key!r}")
        return base_url.rstrip("/") + stored.url_path

    def direct_url(self, stored: StoredFile, *, inline: bool) -> Optional[str]:
        """A presigned URL on the blob store for ``stored``, when the store
        gives them (``s3_presign_urls``), else None."""
        return self.blobs.url(
            stored.blob_key,
            file_name=stored.file_name,
            content_type=stored.content_type if inline else "application/octet-stream",
            attachment=not inline,
        )

    # --- writing ------------------------------------------------------------------
    def register(
        self,
        key: str,
        *,
        size: Optional[int] = None,
        content_type: Optional[str] = None,
        file_name: Optional[str] = None,
        owner: Optional[str] = None,
        ttl: Optional[float] = None,
    ) -> StoredFile:
        """Make the bytes already put at ``blob_key(key)`` a stored file (no
        copy): writes the metadata that makes it visible at its URL."""
        bkey = blob_key(key)
        if size is None:
            info = self.blobs.stat(bkey)
            if info is None:
                raise FileNotFoundError(f"nothing stored at {bkey!r}")
            size = info.size
        ctype = clean_content_type(content_type)
        now = time.time()
        meta = {
            "key": key,
            "content_type": ctype,
            "file_name": clean_file_name(file_name, ctype),
            "size": int(size),
            "owner": owner,
            "created_at": now,
            "expires_at": None if ttl is None else now + float(ttl),
        }
        self.blobs.put(_meta_key(key), json.dumps(meta).encode(), content_type="application/json")
        return StoredFile(
            key=key, size=int(size), content_type=ctype, file_name=meta["file_name"], owner=owner,
            created_at=now, expires_at=meta["expires_at"], path=self.blobs.local_path(bkey),
        )

    def _check_key(self, key: Optional[str]) -> str:
        if key is None:
            return self.new_key()
        if not is_valid_key(key):
            raise ValueError("invalid key")
        return key

    def adopt(
        self,
        path: Path,
        *,
        size: Optional[int] = None,
        content_type: Optional[str] = None,
        file_name: Optional[str] = None,
        key: Optional[str] = None,
        owner: Optional[str] = None,
        ttl: Optional[float] = None,
    ) -> StoredFile:
        """Move an already written local file (e.g. under ``root/tmp``) into
        the store: a rename on a local store, an upload then unlink on S3."""
        key = self._check_key(key)
        info = self.blobs.put_file(blob_key(key), Path(path), content_type=clean_content_type(content_type), move=True)
        return self.register(key, size=info.size if size is None else size, content_type=content_type,
                             file_name=file_name, owner=owner, ttl=ttl)

    def save(
        self,
        data: Data,
        content_type: Optional[str] = None,
        file_name: Optional[str] = None,
        *,
        key: Optional[str] = None,
        owner: Optional[str] = None,
        ttl: Optional[float] = None,
        max_bytes: Optional[int] = None,
    ) -> StoredFile:
        """Store bytes, a binary file object or an iterable of chunks.

        ``key`` may be given (one from :meth:`new_key`) when the URL had to be
        known before the bytes; ``ttl`` seconds after which the file is gone.
        """
        key = self._check_key(key)
        try:
            info = self.blobs.put(blob_key(key), data, content_type=clean_content_type(content_type), max_bytes=max_bytes)
        except OverflowError:
            raise TooLarge(max_bytes or 0) from None
        return self.register(key, size=info.size, content_type=content_type, file_name=file_name, owner=owner, ttl=ttl)

    def scratch_file(self) -> tuple[int, Path]:
        """A new local temporary file under ``root/tmp`` (fd, path)."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="up-")
        return fd, Path(name)

    async def save_stream(
        self,
        chunks: AsyncIterator[bytes],
        content_type: Optional[str] = None,
        file_name: Optional[str] = None,
        *,
        max_bytes: Optional[int] = None,
        key: Optional[str] = None,
        owner: Optional[str] = None,
        ttl: Optional[float] = None,
    ) -> StoredFile:
        """Store an async byte stream (a request body), stopping at ``max_bytes``.

        The body goes to a scratch file first (the limit is enforced while it
        arrives), then enters the store off the event loop."""
        key = self._check_key(key)
        fd, tmp = self.scratch_file()
        try:
            await copy_stream(chunks, fd, max_bytes)
            return await self.pool.run(
                self.adopt, tmp, content_type=content_type, file_name=file_name, key=key, owner=owner, ttl=ttl
            )
        finally:
            tmp.unlink(missing_ok=True)

    # --- removing -----------------------------------------------------------------
    def delete(self, key: str) -> bool:
        """Remove a file; True if something was removed."""
        if not is_valid_key(key):
            return False
        removed = self.blobs.delete(_meta_key(key))  # invisible first, then the bytes
        return self.blobs.delete(blob_key(key)) or removed

    def purge_expired(self, now: Optional[float] = None) -> int:
        """Delete expired files; returns how many. (Stale initiated uploads
        are swept by :meth:`PendingUploads.purge_stale`.)"""
        now = time.time() if now is None else now
        removed = 0
        for name in list(self.blobs.keys(keys.FILES)):
            if not keys.is_file_meta(name):
                continue
            key = keys.file_key_of(name)
            try:
                expires = json.loads(self.blobs.read(name)).get("expires_at")
            except (BlobNotFound, ValueError):
                continue
            if expires is not None and now >= float(expires) and self.delete(key):
                removed += 1
        return removed

    # --- secrets --------------------------------------------------------------------
    def upload_tokens(self) -> UploadTokens:
        """Token signer whose secret lives in the blob store (0600 on disk)."""
        return UploadTokens(load_or_create_secret(self.blobs))


async def copy_stream(
    chunks: AsyncIterator[bytes],
    fd: int,
    max_bytes: Optional[int],
    *,
    digest=None,  # noqa: ANN001 - a hashlib object
    limit_for_message: Optional[int] = None,
) -> int:
    """Write an async byte stream to ``fd`` (closed after), raising
    :class:`TooLarge` as soon as it passes ``max_bytes``."""
    size = 0
    with os.fdopen(fd, "wb") as out:
        async for chunk in chunks:
            if not chunk:
                continue
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise TooLarge(limit_for_message if limit_for_message is not None else max_bytes)
            out.write(chunk)
            if digest is not None:
                digest.update(chunk)
    return size
