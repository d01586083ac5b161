"""Initiated uploads: a key is handed out first, the bytes arrive later in a
single PUT or in numbered parts (the JS client's and the Python client's
multipart protocols), then the parts are joined into a stored file.

The state lives in the blob store beside the files, so any HTTP node sharing
the store can take the next part: the PendingUpload as JSON, each part's bytes
and the ETag its PUT answered, under the upload's folder
(:func:`ccsr.storage.keys.upload_dir`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import AsyncIterator, Iterator, Optional

from ccsr.storage import keys
from ccsr.storage.base import BlobNotFound
from ccsr.storage.files import (
    FileStore,
    NotFound,
    StorageError,
    StoredFile,
    TooLarge,
    clean_content_type,
    clean_file_name,
    copy_stream,
    is_valid_key,
)

PENDING_TTL = 24 * 3600.0
MAX_PARTS = 10_000
_UNKNOWN = "Unknown or expired upload id."


@dataclass(frozen=True)
class PendingUpload:
    """An initiated upload (single PUT or multipart) not yet complete."""

    upload_id: str
    key: str
    file_name: str
    content_type: str
    kind: str  # "single" or "multipart"
    owner: Optional[str]
    ttl: Optional[float]
    created_at: float


class PendingUploads:
    """Initiated uploads of one :class:`FileStore`."""

    def __init__(self, files: FileStore):
        self.files = files
        self.blobs = files.blobs

    def create(
        self,
        content_type: Optional[str],
        file_name: Optional[str],
        *,
        kind: str,
        owner: Optional[str] = None,
        ttl: Optional[float] = None,
    ) -> PendingUpload:
        """Reserve a key for an upload whose bytes arrive in later requests."""
        ctype = clean_content_type(content_type)
        pending = PendingUpload(
            upload_id=secrets.token_urlsafe(24),
            key=self.files.new_key(),
            file_name=clean_file_name(file_name, ctype),
            content_type=ctype,
            kind=kind,
            owner=owner,
            ttl=ttl,
            created_at=time.time(),
        )
        meta = json.dumps(asdict(pending)).encode()
        self.blobs.put(keys.upload_meta(pending.upload_id), meta, content_type="application/json")
        return pending

    def get(self, upload_id: str, key: Optional[str] = None) -> PendingUpload:
        """The pending upload (NotFound if unknown, expired or for another key)."""
        if not is_valid_key(upload_id):
            raise NotFound(_UNKNOWN)
        try:
            pending = PendingUpload(**json.loads(self.blobs.read(keys.upload_meta(upload_id))))
        except (BlobNotFound, ValueError, TypeError):
            raise NotFound(_UNKNOWN) from None
        if time.time() - pending.created_at > PENDING_TTL or (key is not None and key != pending.key):
            raise NotFound(_UNKNOWN)
        return pending

    def _forget(self, upload_id: str) -> None:
        # The metadata last: a half-removed upload is still found by purge_stale.
        meta = keys.upload_meta(upload_id)
        for name in sorted(self.blobs.keys(keys.upload_dir(upload_id)), key=lambda n: n == meta):
            self.blobs.delete(name)

    async def write_single(
        self, upload_id: str, key: str, chunks: AsyncIterator[bytes], max_bytes: Optional[int]
    ) -> StoredFile:
        """Receive the bytes of an initiated single upload and finish it."""
        pending = await self.files.pool.run(self.get, upload_id, key)
        if pending.kind != "single":
            raise NotFound("This upload id expects multipart parts.")
        stored = await self.files.save_stream(
            chunks, pending.content_type, pending.file_name,
            max_bytes=max_bytes, key=pending.key, owner=pending.owner, ttl=pending.ttl,
        )
        await self.files.pool.run(self._forget, upload_id)
        return stored

    def _part_sizes(self, upload_id: str) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for name in self.blobs.keys(keys.upload_dir(upload_id)):
            number = keys.upload_part_number(name)
            if number is not None:
                info = self.blobs.stat(name)
                if info is not None:
                    sizes[number] = info.size
        return sizes

    async def write_part(
        self,
        upload_id: str,
        key: str,
        part_number: int,
        chunks: AsyncIterator[bytes],
        max_bytes: Optional[int],
    ) -> str:
        """Store one part; returns its ETag (quoted hex digest of the part)."""
        pending = await self.files.pool.run(self.get, upload_id, key)
        if pending.kind != "multipart":
            raise NotFound("This upload id expects a single PUT.")
        if not 1 <= part_number <= MAX_PARTS:
            raise StorageError(f"Part number must be between 1 and {MAX_PARTS}.")
        sizes = await self.files.pool.run(self._part_sizes, upload_id)
        others = sum(size for n, size in sizes.items() if n != part_number)
        budget = None if max_bytes is None else max_bytes - others
        fd, tmp = self.files.scratch_file()
        try:
            digest = hashlib.md5(usedforsecurity=False)
            await copy_stream(chunks, fd, budget, digest=digest, limit_for_message=max_bytes)
            etag = f'"{digest.hexdigest()}"'
            run = self.files.pool.run
            await run(self.blobs.put_file, keys.upload_part(upload_id, part_number), tmp, move=True)
            await run(self.blobs.put, keys.upload_etag(upload_id, part_number), etag.encode(), content_type="text/plain")
            return etag
        finally:
            tmp.unlink(missing_ok=True)

    def complete(
        self, upload_id: str, key: str, parts: Optional[list[dict]] = None, max_bytes: Optional[int] = None
    ) -> StoredFile:
        """Join the parts (in part-number order) into the final file.

        ``parts`` is the client's ``[{partNumber, etag}]`` list; each listed
        part must exist and its ETag must match what the part PUT answered.
        Blocking (it copies every byte): call it in a thread.
        """
        pending = self.get(upload_id, key)
        if pending.kind != "multipart":
            raise NotFound("This upload id expects a single PUT.")
        if parts:
            wanted: list[int] = []
            for item in parts:
                try:
                    n = int(item["partNumber"])
                    etag = str(item["etag"]).strip().strip('"')
                except (KeyError, TypeError, ValueError):
                    raise StorageError("Each part needs 'partNumber' and 'etag'.") from None
                if not 1 <= n <= MAX_PARTS:
                    raise StorageError(f"Part {n} was not uploaded.")
                try:
                    stored_etag = self.blobs.read(keys.upload_etag(upload_id, n)).decode()
                except BlobNotFound:
                    raise StorageError(f"Part {n} was not uploaded.") from None
                if stored_etag.strip('"') != etag:
                    raise StorageError(f"Part {n}: ETag does not match the uploaded part.")
                wanted.append(n)
            numbers = sorted(set(wanted))
        else:
            numbers = sorted(self._part_sizes(upload_id))
        if not numbers:
            raise StorageError("No parts were uploaded.")

        def joined() -> Iterator[bytes]:
            for n in numbers:
                with self.blobs.open(keys.upload_part(upload_id, n)) as f:
                    yield from iter(lambda: f.read(1024 * 1024), b"")

        stored = self.files.save(
            joined(), pending.content_type, pending.file_name,
            key=pending.key, owner=pending.owner, ttl=pending.ttl, max_bytes=max_bytes,
        )
        self._forget(upload_id)
        return stored

    def purge_stale(self, now: Optional[float] = None) -> int:
        """Remove uploads initiated more than a day ago and never completed."""
        now = time.time() if now is None else now
        ids = {keys.upload_id_of(name) for name in self.blobs.keys(keys.UPLOADS)}
        removed = 0
        for upload_id in ids:
            try:
                created = float(json.loads(self.blobs.read(keys.upload_meta(upload_id)))["created_at"])
            except (BlobNotFound, ValueError, KeyError, TypeError):
                created = 0.0  # parts without metadata: left over from a removal
            if now - created > PENDING_TTL:
                self._forget(upload_id)
                removed += 1
        return removed


__all__ = ["PENDING_TTL", "MAX_PARTS", "PendingUpload", "PendingUploads", "TooLarge"]
