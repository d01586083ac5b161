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

KEY_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}){0,3}$")

Data = Union[bytes, bytearray, memoryview, BinaryIO, Iterable[bytes]]

_CHUNK = 1024 * 1024


class BlobNotFound(KeyError):
    """No blob is stored under that key."""


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
    """Bytes under server-made keys. Implementations are thread-safe."""

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
        """The file holding the blob when it is on this machine's disk (lets the
        server use sendfile), else None."""
        return None

    @abc.abstractmethod
    def spec(self) -> dict:
        """A JSON-able description from which :func:`ccsr.storage.open_blob_store` rebuilds
        an equivalent store in another process or on another machine."""

