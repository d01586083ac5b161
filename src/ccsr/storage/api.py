"""The service's stored bytes through one object: :class:`Storage`.

The routes, the scheduler and the service's edges keep a request's bytes
through it (submitted inputs, run inputs, results); the storage routes serve
files and uploads through its :attr:`Storage.files`; executors get
:attr:`Storage.blobs` once when they start. Every key comes from
:mod:`ccsr.storage.keys`.

Results are *registered in place*: a run's output key is the bytes blob of a
new stored file (:meth:`Storage.new_result_key`), the worker writes the result
there, and :meth:`Storage.publish_result` writes the metadata that makes it a
file. Nothing is copied; an unpublished result (failure, cancel, a lost
worker) has no metadata, is never served, and is dropped with the run's other
working blobs (:meth:`Storage.discard`).

Async code runs every blob call through :meth:`Storage.run`: a bounded pool
of its own (:mod:`ccsr.storage.pool`), never the database's threads, and a
call fails at once while :attr:`Storage.health` is down.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, TypeVar, Union

from ccsr.storage import keys
from ccsr.storage.base import BlobStore, BlobStoreError
from ccsr.storage.factory import open_blob_store
from ccsr.storage.files import FileStore, StoredFile
from ccsr.storage.health import StoreHealth
from ccsr.storage.pool import DEFAULT_THREADS, BlobPool

if TYPE_CHECKING:  # pragma: no cover
    from ccsr.settings import Settings

log = logging.getLogger("ccsr.storage")
T = TypeVar("T")


class Storage:
    """One blob store and the views of it the service uses. ``scratch_dir``:
    where request bodies land before they enter a store that is not local
    (see :class:`FileStore`); ``threads``: the size of the pool blob calls
    run in."""

    def __init__(self, blobs: BlobStore, *, scratch_dir: Union[str, Path, None] = None,
                 threads: int = DEFAULT_THREADS):
        self.blobs = blobs
        self.pool = BlobPool(blobs, threads)
        self.files = FileStore(blobs, scratch_dir=scratch_dir, pool=self.pool)

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Storage":
        """The store the settings configure (a directory under ``data_dir`` or an S3 bucket)."""
        return cls(open_blob_store(settings), scratch_dir=Path(settings.data_dir) / "files",
                   threads=settings.blob_threads)

    # --- calls and health -----------------------------------------------------------
    @property
    def health(self) -> StoreHealth:
        """Whether the store answers (down after a call failed its whole retry window)."""
        return self.blobs.health

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking blob call from async code, in the blob pool (see :class:`BlobPool`)."""
        return await self.pool.run(fn, *args, **kwargs)

    async def check(self) -> bool:
        """Look at the store once; True when it answered (and it is marked up)."""
        return await self.pool.check(keys.PROBE)

    async def watch(self, interval: float, on_back: Callable[[], None]) -> None:
        """Check the store now and every ``interval`` seconds, forever;
        ``on_back()`` when a check finds a store that was down answering again."""
        while True:
            was = self.health.ok
            if await self.check() and not was:
                on_back()
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Let the blob pool's threads go (the service stops)."""
        self.pool.close()

    # --- submitted inputs ---------------------------------------------------------
    def keep_submitted(self, request_id: str, data: bytes, content_type: str) -> str:
        """Keep a submitted data URI's bytes until the request ends; returns
        the ``image_url`` reference the job row stores instead of the URI."""
        key = keys.submitted_input(request_id)
        self.blobs.put(key, data, content_type=content_type)
        return keys.input_ref(key)

    def kept_input(self, stored_input: Optional[dict]) -> Optional[bytes]:
        """The bytes a stored input refers to, or None when its ``image_url``
        is a URL (fetched instead). Raises BlobNotFound when they are gone."""
        key = keys.input_ref_key(stored_input)
        return None if key is None else self.blobs.read(key)

    # --- runs ---------------------------------------------------------------------
    def put_run_input(self, request_id: str, png: bytes) -> str:
        """Store a run's prepared input; returns the key the worker reads (a
        new one per run: see :func:`ccsr.storage.keys.run_input`)."""
        key = keys.run_input(request_id, secrets.token_urlsafe(9))
        self.blobs.put(key, png, content_type="image/png")
        return key

    @staticmethod
    def new_result_key() -> str:
        """Where a run writes its result: the bytes of a file not registered yet
        (a new, unguessable file key per attempt)."""
        return keys.file_bytes(FileStore.new_key())

    def publish_result(self, output_key: str, *, size: int, content_type: str, file_name: str,
                       owner: Optional[str], ttl: Optional[float]) -> StoredFile:
        """Make the result a run wrote at ``output_key`` a stored file, in place."""
        key = keys.file_key_of(output_key)
        if key is None or output_key != keys.file_bytes(key):
            raise ValueError(f"{output_key!r} is not a result key (see Storage.new_result_key)")
        return self.files.register(key, size=size, content_type=content_type, file_name=file_name,
                                   owner=owner, ttl=ttl)

    def run_leftovers(self, request_id: str, input_key: Optional[str], output_key: Optional[str],
                      stored_input: Optional[dict], ended: bool) -> None:
        """Drop what this server's run left behind (see
        :func:`ccsr.storage.keys.run_leftovers`) and, when the request ended
        here, every run's input: no run of it can still need one."""
        gone = keys.run_leftovers(input_key, output_key, stored_input, ended)
        if ended:
            gone += [k for k in self.blobs.keys(keys.run_inputs(request_id)) if k not in gone]
        self.discard(gone)

    async def drop_leftovers(self, request_id: str, input_key: Optional[str], output_key: Optional[str],
                             stored_input: Optional[dict], ended: bool) -> None:
        """:meth:`run_leftovers` from async code; with the store down they stay
        (a submitted input is then removed by retention, with its request)."""
        try:
            await self.run(self.run_leftovers, request_id, input_key, output_key, stored_input, ended)
        except BlobStoreError:
            pass

    def discard(self, blob_keys: Iterable[str]) -> None:
        """Delete working blobs; a failure is logged, not raised (the request's
        ending must not depend on it)."""
        for key in blob_keys:
            try:
                self.blobs.delete(key)
            except Exception:  # noqa: BLE001
                log.exception("deleting blob %s failed", key)

    # --- what a request owns ---------------------------------------------------------
    def delete_owned(self, ref: str) -> None:
        """Remove a stored file a request owned ("/files/<key>/<name>") or its
        kept input ("blob:<key>"); missing ones are fine."""
        key = keys.ref_key(ref)
        if key is not None:
            self.blobs.delete(key)
            return
        file_key = self.files.key_from_url(ref)
        if file_key:
            self.files.delete(file_key)


__all__ = ["Storage"]
