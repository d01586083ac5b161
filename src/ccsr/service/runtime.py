"""Glue between the scheduler and the service's edges: where result files go
(the shared :class:`FileStore`), and how an input is fetched and checked
before a worker sees it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ccsr.service.storage import FileStore
from ccsr.settings import Settings


class ResultFiles:
    """Result images live in the FileStore under fresh capability keys.

    The worker writes the PNG straight into the store's tmp directory; on
    success it is moved into place with its metadata (no copy, no bytes over
    the pipe). URLs are kept server-relative ("/files/<key>/<name>") and made
    absolute per response.
    """

    def __init__(self, store: FileStore):
        self.store = store

    def result_target(self, request_id: str, file_name: str) -> tuple[str, str]:
        key = self.store.new_key()
        tmp = Path(self.store.root) / "tmp" / f"result-{key}.png"
        return str(tmp), f"/files/{key}/{file_name}"

    def adopt(self, path: str, url_path: str, *, owner: Optional[str], ttl: Optional[float]) -> None:
        """Move a finished result file into the store under its URL's key."""
        key = self.store.key_from_url(url_path)
        file_name = url_path.rsplit("/", 1)[-1]
        self.store.adopt(Path(path), content_type="image/png", file_name=file_name, key=key, owner=owner, ttl=ttl)

    def delete(self, url_path: str) -> None:
        """Remove a result: the stored file, or what a failed run left in tmp."""
        key = self.store.key_from_url(url_path)
        if not key:
            return
        self.store.delete(key)
        for suffix in (".png", ".png.part"):
            try:
                os.unlink(Path(self.store.root) / "tmp" / f"result-{key}{suffix}")
            except OSError:
                pass


def make_prepare(settings: Settings, files: Any):
    """Build ``prepare(view, dest)``: fetch safely, check the header, decode in
    a bounded child process (see :mod:`ccsr.service.input_prep`)."""
    from ccsr.service.input_prep import make_prepare as bounded

    return bounded(settings, files)
