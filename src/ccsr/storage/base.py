"""The blob-store interface shared by the service, the scheduler and workers.

Keys are relative, slash-separated names made by the server (all named in
:mod:`ccsr.storage.keys`), never user text; each store checks them against
:data:`KEY_RE` so a key can't escape its root or bucket prefix.
"""

from __future__ import annotations

import abc
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional, Union

from ccsr.storage.health import StoreHealth

KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}){0,3}$")

Data = Union[bytes, bytearray, memoryview, BinaryIO, Iterable[bytes]]

_CHUNK = 1024 * 1024


class BlobNotFound(KeyError):
    """No blob is stored under that key."""


class BlobStoreError(Exception):
    """The store failed a call. Its text is safe to show a client: it never
    names the endpoint, bucket, prefix or key (those go to the server's log)."""

    def __init__(self, message: Optional[str] = None):
        super().__init__(message or self.default_message)

    default_message = "The blob store failed."


class StoreUnavailable(BlobStoreError):
    """The store did not answer (down, stalled, unreachable, refusing our
    credentials) for the whole retry window. Transient by nature: a job goes
    back to the queue, a submit answers 503 with Retry-After."""

    default_message = "The blob store is unavailable; try again later."


class StoreRefused(BlobStoreError):
    """The store answered and refused this one call (a 4xx other than a
    missing key or a credentials problem): retrying it would not help."""

    default_message = "The blob store refused the request."


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    content_type: str


def iter_chunks(data: Data) -> Iterator[bytes]:
    """The bytes of ``data`` as chunks: one for a bytes-like object, 1 MiB
    reads for a binary file, the items of an iterable as they come."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield bytes(data)
    elif hasattr(data, "read"):
        yield from iter(lambda: data.read(_CHUNK), b"")  # type: ignore[union-attr]
    else:
        for chunk in data:  # type: ignore[union-attr]
            if chunk:
                yield bytes(chunk)


def check_key(key: str) -> str:
    """Return ``key`` if it is a well-formed blob key, else raise ValueError."""
    if not isinstance(key, str) or not KEY_RE.match(key) or ".." in key:
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(abc.ABC):
    """Bytes under server-made keys. Implementations are thread-safe.

    A store that can be out of reach (S3) raises :class:`StoreUnavailable`
    after retrying for a bounded time and keeps :attr:`health` up to date."""

    @property
    def health(self) -> StoreHealth:
        """Whether the store answered its last call (always up for a store
        that never reports otherwise, such as a local directory)."""
        found = self.__dict__.get("_health")
        if found is None:
            found = self.__dict__.setdefault("_health", StoreHealth())
        return found

    def probe(self, key: str) -> None:
        """One quick look at the store (the size of ``key``, which need not
        exist); raises :class:`StoreUnavailable` when it does not answer."""
        self.stat(key)

    @abc.abstractmethod
    def put(self, key: str, data: Data, *, content_type: str = "application/octet-stream",
            max_bytes: Optional[int] = None) -> BlobInfo:
        """Store ``data`` (bytes, a binary file or an iterable of chunks) under
        ``key``, replacing what was there; atomic: readers see the old or the
        new bytes, never a part. Raises ``OverflowError`` past ``max_bytes``."""

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable binary file object; :class:`BlobNotFound` if absent."""

    def read(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    @abc.abstractmethod
    def stat(self, key: str) -> Optional[BlobInfo]:
        """Size and content type, or None if absent."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove a blob; True if something was removed."""

    @abc.abstractmethod
    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every stored key that starts with ``prefix``."""

    def put_file(self, key: str, path: Union[str, Path], *, content_type: str = "application/octet-stream",
                 move: bool = False) -> BlobInfo:
        """Store the file at ``path``; with ``move`` the file is gone afterwards
        (the local store renames it into place when it can: no copy)."""
        with open(path, "rb") as f:
            info = self.put(key, f, content_type=content_type)
        if move:
            os.unlink(path)
        return info

    def url(self, key: str, *, expires_in: Optional[int] = None, file_name: Optional[str] = None,
            content_type: Optional[str] = None, attachment: bool = False) -> Optional[str]:
        """A URL a client can fetch the blob from directly (e.g. presigned),
        or None when the server has to serve the bytes itself. ``expires_in``
        defaults to the store's own setting.

        ``file_name``, ``content_type`` and ``attachment`` set the
        Content-Disposition and Content-Type that download answers with."""
        return None

    def local_path(self, key: str) -> Optional[Path]:
        """The file holding the blob when it is on this machine's disk (the
        server reads it directly), else None."""
        return None

    @abc.abstractmethod
    def spec(self) -> dict:
        """A JSON-able description from which :func:`ccsr.storage.open_blob_store` rebuilds
        an equivalent store in another process or on another machine."""

