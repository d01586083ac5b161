"""The default blob store: files under a local directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

from ccsr.storage.base import BlobInfo, BlobNotFound, BlobStore, check_key, iter_chunks

_TYPE_SUFFIX = ".ctype"  # the content type lives beside the bytes


class LocalBlobStore(BlobStore):
    """``root/<key>`` holds the bytes, ``root/<key>.ctype`` the content type.
    Writes go to a temporary file in the same directory and are renamed into
    place, so a reader never sees a partial blob."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key, data, *, content_type="application/octet-stream", max_bytes=None) -> BlobInfo:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in iter_chunks(data):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise OverflowError(f"blob larger than {max_bytes} bytes")
                    out.write(chunk)
            Path(str(path) + _TYPE_SUFFIX).write_text(content_type)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return BlobInfo(key, size, content_type)

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def stat(self, key: str) -> Optional[BlobInfo]:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            ctype = Path(str(path) + _TYPE_SUFFIX).read_text()
        except OSError:
            ctype = "application/octet-stream"
        return BlobInfo(key, size, ctype)

    def delete(self, key: str) -> bool:
        path = self._path(key)
        Path(str(path) + _TYPE_SUFFIX).unlink(missing_ok=True)
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False

    def put_file(self, key, path, *, content_type="application/octet-stream", move=False) -> BlobInfo:
        if not move:
            return super().put_file(key, path, content_type=content_type)
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        Path(str(dest) + _TYPE_SUFFIX).write_text(content_type)
        try:
            os.replace(path, dest)  # same filesystem: a rename, no copy
        except OSError:  # another filesystem: copy, then remove the source
            return super().put_file(key, path, content_type=content_type, move=True)
        return BlobInfo(key, dest.stat().st_size, content_type)

    def keys(self, prefix: str = "") -> Iterator[str]:
        # Walk only the directory the prefix names (not the whole root).
        start = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not start.is_dir() or not start.resolve().is_relative_to(self.root):
            return
        for p in sorted(start.rglob("*")):
            if p.is_file() and not p.name.endswith(_TYPE_SUFFIX) and not p.name.startswith(".part-"):
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield key

    def local_path(self, key: str) -> Optional[Path]:
        path = self._path(key)
        return path if path.is_file() else None

    def spec(self) -> dict:
        return {"kind": "local", "root": str(self.root)}
