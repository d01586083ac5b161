"""File storage: uploads and results under unguessable keys, and the upload
routes of the hosted storage protocol (see docs/fal-protocol.md, "Storage").

Files are *capability URLs*: ``<base>/files/<key>/<file_name>`` is readable
without an auth header, like the provider's CDN, so the key must be
unguessable (``secrets.token_urlsafe``) and is the only thing that selects a
file. The file name in the URL is cosmetic; user text never becomes part of a
filesystem path: keys are checked against a strict pattern and names are
stored only in a metadata file next to the data.

On-disk layout under ``root``::

    objects/<key[:2]>/<key>        the bytes
    objects/<key[:2]>/<key>.json   content type, file name, size, owner, expiry
    pending/<upload_id>/           initiated uploads (meta.json, parts/<n>)
    tmp/                           partial writes, renamed into place when whole
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import mimetypes
import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Iterable, Optional, Union
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from ccsr.service.auth import KeyRing, parse_authorization
from ccsr.settings import Settings

# token_urlsafe(24) gives 32 characters; accept a range so the pattern, not a
# length, is what guards the filesystem.
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{22,86}$")
_KEY_BYTES = 24
_FILES_URL_RE = re.compile(r"(?:^|/)files/([A-Za-z0-9_-]{22,86})(?:/[^/]*)?$")
_CONTENT_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,127}$")
_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120
_MAX_PARTS = 10_000
_CHUNK = 1024 * 1024
PENDING_TTL = 24 * 3600.0
PURGE_INTERVAL = 600.0
UPLOAD_TOKEN_TTL = 3600.0

# Served inline; anything else is served as a download so an uploaded HTML or
# SVG file can never run script in the server's origin.
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/webp",
        "image/gif",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "application/json",
        "text/plain",
    }
)


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
        super().__init__(
            f"Upload too large: {got}; the limit is {limit} bytes (setting max_upload_bytes)."
        )


class NotFound(StorageError):
    status_code = 404


@dataclass(frozen=True)
class StoredFile:
    """One stored file's metadata (the bytes live at ``path``)."""

    key: str
    path: Path
    size: int
    content_type: str
    file_name: str
    owner: Optional[str] = None
    created_at: float = 0.0
    expires_at: Optional[float] = None

    @property
    def url_path(self) -> str:
        """Server-relative URL path: ``/files/<key>/<quoted name>``."""
        return f"/files/{self.key}/{quote(self.file_name, safe='')}"


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


def is_valid_key(key: object) -> bool:
    """True when ``key`` has the shape of a key this store hands out."""
    return isinstance(key, str) and bool(_KEY_RE.match(key))


def clean_content_type(content_type: Optional[str]) -> str:
    """``type/subtype`` in lower case, parameters dropped; octet-stream if odd."""
    if not content_type:
        return "application/octet-stream"
    value = content_type.split(";", 1)[0].strip().lower()
    return value if _CONTENT_TYPE_RE.match(value) else "application/octet-stream"


def clean_file_name(file_name: Optional[str], content_type: str = "application/octet-stream") -> str:
    """A safe display name: base name only, ``[A-Za-z0-9._-]``, no leading dot.

    The name never reaches the filesystem; cleaning it keeps URLs and
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


class UploadTokens:
    """Short-lived upload tokens (``token_type`` Bearer) signed with HMAC.

    Stateless, so tokens stay valid across restarts while the secret file in
    the storage root persists; they carry only the owner id and expiry.
    """

    def __init__(self, secret: bytes, ttl: float = UPLOAD_TOKEN_TTL):
        self._secret = secret
        self.ttl = ttl

    def issue(self, owner: str, now: Optional[float] = None) -> tuple[str, datetime]:
        expires = (time.time() if now is None else now) + self.ttl
        body = _b64(json.dumps({"o": owner, "e": int(expires)}, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())
        return f"{body}.{sig}", datetime.fromtimestamp(int(expires), tz=timezone.utc)

    def verify(self, token: Optional[str], now: Optional[float] = None) -> Optional[str]:
        """The owner id in a valid, unexpired token, else None."""
        if not token or token.count(".") != 1 or len(token) > 512:
            return None
        body, sig = token.split(".")
        want = _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, sig):
            return None
        try:
            data = json.loads(_unb64(body))
            owner, expires = str(data["o"]), float(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if (time.time() if now is None else now) >= expires:
            return None
        return owner


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


class FileStore:
    """Bytes under unguessable keys in a directory, with JSON metadata."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._pending = self.root / "pending"
        self._tmp = self.root / "tmp"
        for d in (self._objects, self._pending, self._tmp):
            d.mkdir(parents=True, exist_ok=True)

    # --- keys and paths ---------------------------------------------------
    @staticmethod
    def new_key() -> str:
        return secrets.token_urlsafe(_KEY_BYTES)

    def _data_path(self, key: str) -> Path:
        if not is_valid_key(key):
            raise NotFound("no such file")
        return self._objects / key[:2] / key

    def _meta_path(self, key: str) -> Path:
        return self._data_path(key).with_name(key + ".json")

    def path(self, key: str) -> Path:
        """Where the bytes of ``key`` are; FileNotFoundError if not stored."""
        stored = self.get(key)
        if stored is None:
            raise FileNotFoundError(f"no stored file {key!r}")
        return stored.path

    def get(self, key: str, now: Optional[float] = None) -> Optional[StoredFile]:
        """Metadata of a stored, unexpired file, or None."""
        if not is_valid_key(key):
            return None
        data_path = self._data_path(key)
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (OSError, ValueError):
            return None
        if not data_path.is_file():
            return None
        expires = meta.get("expires_at")
        if expires is not None and (time.time() if now is None else now) >= float(expires):
            return None
        return StoredFile(
            key=key,
            path=data_path,
            size=int(meta.get("size", data_path.stat().st_size)),
            content_type=str(meta.get("content_type", "application/octet-stream")),
            file_name=str(meta.get("file_name", "file.bin")),
            owner=meta.get("owner"),
            created_at=float(meta.get("created_at", 0.0)),
            expires_at=None if expires is None else float(expires),
        )

    def url_for(self, key: str, base_url: str) -> str:
        """Absolute capability URL of ``key`` under ``base_url``."""
        stored = self.get(key)
        if stored is None:
            raise FileNotFoundError(f"no stored file {key!r}")
        return base_url.rstrip("/") + stored.url_path

    @staticmethod
    def key_from_url(url: str) -> Optional[str]:
        """The key of a ``.../files/<key>[/<name>]`` URL (ours by shape), else None."""
        try:
            path = urlsplit(url).path
        except ValueError:
            return None
        m = _FILES_URL_RE.search(path)
        return m.group(1) if m else None

    # --- writing ------------------------------------------------------------
    def _finish(
        self,
        tmp_path: Path,
        size: int,
        content_type: Optional[str],
        file_name: Optional[str],
        key: Optional[str],
        owner: Optional[str],
        ttl: Optional[float],
    ) -> StoredFile:
        key = key or self.new_key()
        data_path = self._data_path(key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        ctype = clean_content_type(content_type)
        now = time.time()
        meta = {
            "key": key,
            "content_type": ctype,
            "file_name": clean_file_name(file_name, ctype),
            "size": size,
            "owner": owner,
            "created_at": now,
            "expires_at": None if ttl is None else now + float(ttl),
        }
        os.replace(tmp_path, data_path)
        meta_tmp = self._tmp / (key + ".json.tmp")
        meta_tmp.write_text(json.dumps(meta))
        os.replace(meta_tmp, self._meta_path(key))
        return StoredFile(
            key=key,
            path=data_path,
            size=size,
            content_type=meta["content_type"],
            file_name=meta["file_name"],
            owner=owner,
            created_at=now,
            expires_at=meta["expires_at"],
        )

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
        """Move an already written file (same filesystem, e.g. under ``root/tmp``)
        into the store without copying; used for worker-written results."""
        path = Path(path)
        if key is not None and not is_valid_key(key):
            raise ValueError("invalid key")
        return self._finish(
            path, path.stat().st_size if size is None else size, content_type, file_name, key, owner, ttl
        )

    def _tmp_file(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="up-")
        return fd, Path(name)

    def save(
        self,
        data: Union[bytes, bytearray, memoryview, BinaryIO, Iterable[bytes]],
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
        fd, tmp = self._tmp_file()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    chunks: Iterable[bytes] = [bytes(data)]
                elif hasattr(data, "read"):
                    chunks = iter(lambda: data.read(_CHUNK), b"")  # type: ignore[union-attr]
                else:
                    chunks = data  # type: ignore[assignment]
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLarge(max_bytes)
                    out.write(chunk)
            return self._finish(tmp, size, content_type, file_name, key, owner, ttl)
        finally:
            tmp.unlink(missing_ok=True)

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
        """Store an async byte stream (a request body), stopping at ``max_bytes``."""
        fd, tmp = self._tmp_file()
        try:
            size = await _copy_stream(chunks, fd, max_bytes)
            return self._finish(tmp, size, content_type, file_name, key, owner, ttl)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> bool:
        """Remove a file; True if something was removed."""
        if not is_valid_key(key):
            return False
        removed = False
        for p in (self._data_path(key), self._meta_path(key)):
            try:
                p.unlink()
                removed = True
            except FileNotFoundError:
                pass
        return removed

    def purge_expired(self, now: Optional[float] = None) -> int:
        """Delete expired files and stale pending uploads; returns files removed."""
        now = time.time() if now is None else now
        removed = 0
        for meta_path in self._objects.glob("*/*.json"):
            key = meta_path.name[: -len(".json")]
            try:
                expires = json.loads(meta_path.read_text()).get("expires_at")
            except (OSError, ValueError):
                continue
            if expires is not None and now >= float(expires) and self.delete(key):
                removed += 1
        for pending in self._pending.iterdir():
            try:
                created = json.loads((pending / "meta.json").read_text())["created_at"]
            except (OSError, ValueError, KeyError):
                created = pending.stat().st_mtime
            if now - float(created) > PENDING_TTL:
                shutil.rmtree(pending, ignore_errors=True)
        return removed

    # --- initiated uploads (single PUT and multipart) ------------------------
    def create_pending(
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
            upload_id=secrets.token_urlsafe(_KEY_BYTES),
            key=self.new_key(),
            file_name=clean_file_name(file_name, ctype),
            content_type=ctype,
            kind=kind,
            owner=owner,
            ttl=ttl,
            created_at=time.time(),
        )
        d = self._pending / pending.upload_id
        (d / "parts").mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps(asdict(pending)))
        return pending

    def get_pending(self, upload_id: str, key: Optional[str] = None) -> PendingUpload:
        """The pending upload (NotFound if unknown, expired or for another key)."""
        if not is_valid_key(upload_id):
            raise NotFound("Unknown or expired upload id.")
        try:
            meta = json.loads((self._pending / upload_id / "meta.json").read_text())
            pending = PendingUpload(**meta)
        except (OSError, ValueError, TypeError):
            raise NotFound("Unknown or expired upload id.") from None
        if time.time() - pending.created_at > PENDING_TTL or (key is not None and key != pending.key):
            raise NotFound("Unknown or expired upload id.")
        return pending

    async def write_single(
        self, upload_id: str, key: str, chunks: AsyncIterator[bytes], max_bytes: Optional[int]
    ) -> StoredFile:
        """Receive the bytes of an initiated single upload and finish it."""
        pending = self.get_pending(upload_id, key)
        if pending.kind != "single":
            raise NotFound("This upload id expects multipart parts.")
        stored = await self.save_stream(
            chunks,
            pending.content_type,
            pending.file_name,
            max_bytes=max_bytes,
            key=pending.key,
            owner=pending.owner,
            ttl=pending.ttl,
        )
        shutil.rmtree(self._pending / upload_id, ignore_errors=True)
        return stored

    async def write_part(
        self,
        upload_id: str,
        key: str,
        part_number: int,
        chunks: AsyncIterator[bytes],
        max_bytes: Optional[int],
    ) -> str:
        """Store one part; returns its ETag (quoted hex digest of the part)."""
        pending = self.get_pending(upload_id, key)
        if pending.kind != "multipart":
            raise NotFound("This upload id expects a single PUT.")
        if not 1 <= part_number <= _MAX_PARTS:
            raise StorageError(f"Part number must be between 1 and {_MAX_PARTS}.")
        parts_dir = self._pending / upload_id / "parts"
        others = sum(p.stat().st_size for p in parts_dir.glob("*.bin") if p.name != f"{part_number}.bin")
        budget = None if max_bytes is None else max_bytes - others
        fd, tmp = self._tmp_file()
        try:
            digest = hashlib.md5(usedforsecurity=False)
            await _copy_stream(chunks, fd, budget, digest=digest, limit_for_message=max_bytes)
            etag = f'"{digest.hexdigest()}"'
            os.replace(tmp, parts_dir / f"{part_number}.bin")
            (parts_dir / f"{part_number}.etag").write_text(etag)
            return etag
        finally:
            tmp.unlink(missing_ok=True)

    def complete(
        self, upload_id: str, key: str, parts: Optional[list[dict]] = None, max_bytes: Optional[int] = None
    ) -> StoredFile:
        """Join the parts (in part-number order) into the final file.

        ``parts`` is the client's ``[{partNumber, etag}]`` list; each listed
        part must exist and its ETag must match what the part PUT answered.
        """
        pending = self.get_pending(upload_id, key)
        if pending.kind != "multipart":
            raise NotFound("This upload id expects a single PUT.")
        parts_dir = self._pending / upload_id / "parts"
        have = sorted(int(p.stem) for p in parts_dir.glob("*.bin"))
        if parts:
            wanted: list[int] = []
            for item in parts:
                try:
                    n = int(item["partNumber"])
                    etag = str(item["etag"]).strip().strip('"')
                except (KeyError, TypeError, ValueError):
                    raise StorageError("Each part needs 'partNumber' and 'etag'.") from None
                etag_file = parts_dir / f"{n}.etag"
                if not etag_file.exists():
                    raise StorageError(f"Part {n} was not uploaded.")
                if etag_file.read_text().strip('"') != etag:
                    raise StorageError(f"Part {n}: ETag does not match the uploaded part.")
                wanted.append(n)
            numbers = sorted(set(wanted))
        else:
            numbers = have
        if not numbers:
            raise StorageError("No parts were uploaded.")
        sources = [parts_dir / f"{n}.bin" for n in numbers]

        def _chunks() -> Iterable[bytes]:
            for src in sources:
                with open(src, "rb") as f:
                    yield from iter(lambda: f.read(_CHUNK), b"")

        stored = self.save(
            _chunks(),
            pending.content_type,
            pending.file_name,
            key=pending.key,
            owner=pending.owner,
            ttl=pending.ttl,
            max_bytes=max_bytes,
        )
        shutil.rmtree(self._pending / upload_id, ignore_errors=True)
        return stored

    # --- secrets ----------------------------------------------------------
    def upload_tokens(self) -> UploadTokens:
        """Token signer whose secret lives in the store root (created 0600)."""
        secret_path = self.root / "upload-token.secret"
        try:
            secret = secret_path.read_bytes()
        except FileNotFoundError:
            secret = secrets.token_bytes(32)
            try:
                fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(secret)
            except FileExistsError:
                secret = secret_path.read_bytes()
        return UploadTokens(secret)


async def _copy_stream(
    chunks: AsyncIterator[bytes],
    fd: int,
    max_bytes: Optional[int],
    *,
    digest=None,  # noqa: ANN001
    limit_for_message: Optional[int] = None,
) -> int:
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


# --- HTTP ------------------------------------------------------------------


def public_base_url(request: Request, settings: Settings) -> str:
    """Base URL clients reach us at: ``public_url`` or the request's own base."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def lifecycle_ttl(request: Request, default: Optional[float]) -> Optional[float]:
    """TTL from ``X-Fal-Object-Lifecycle(-Preference)``: strict, finite and capped (see lifecycle.py)."""
    from ccsr.service.lifecycle import lifecycle_ttl as checked

    return checked(request, default)


def _error(exc: StorageError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)


def _is_number(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts characters such as
    "²" that ``int`` refuses."""
    return text.isascii() and text.isdigit()


def _check_declared_length(request: Request, limit: int) -> None:
    raw = request.headers.get("content-length")
    if raw and _is_number(raw) and int(raw) > limit:
        raise TooLarge(limit, int(raw))


_STORAGE_TYPES = {None, "", "fal-cdn-v3", "fal-cdn", "gcs"}


def storage_router(files: FileStore, *, settings: Settings, keyring: KeyRing) -> APIRouter:
    """Routes of the storage protocol both official clients use.

    - ``POST /rest/storage/auth/token`` -> upload token (Python client)
    - ``POST /cdn/files/upload`` raw bytes -> ``{access_url}``
    - ``POST /cdn/files/upload/multipart`` -> ``{access_url, uploadId}``, then
      ``PUT <access_url>/multipart/<uploadId>/<n>`` and ``POST .../complete``
    - ``POST /rest/storage/upload/initiate`` -> ``{upload_url, file_url}``,
      then ``PUT <upload_url>`` (JS client; Python fallback)
    - ``POST /rest/storage/upload/initiate-multipart`` -> same, parts PUT to
      ``<upload_url>/<n>`` and ``POST <upload_url>/complete`` (JS client)
    - ``GET /files/<key>/<name>`` serves a file without authentication.
    """
    router = APIRouter()
    tokens = files.upload_tokens()
    limit = settings.max_upload_bytes
    default_ttl = settings.result_ttl
    sweep = {"last": 0.0, "task": None}

    def maybe_purge() -> None:
        """Sweep expired uploads off the disk now and then (uploads drive it;
        expired files are already never served)."""
        now = time.time()
        if now - sweep["last"] < PURGE_INTERVAL:
            return
        sweep["last"] = now
        sweep["task"] = asyncio.get_running_loop().create_task(asyncio.to_thread(files.purge_expired))

    def api_owner(request: Request) -> str:
        return keyring.require(request.headers.get("authorization"))

    def upload_owner(request: Request) -> str:
        """Upload token (Bearer) or API key; anyone when no keys are configured."""
        header = request.headers.get("authorization")
        if not keyring.enabled:
            return keyring.owner_for(header) or "local"
        owner = tokens.verify(parse_authorization(header))
        return owner if owner is not None else keyring.require(header)

    def check_storage_type(storage_type: Optional[str]) -> None:
        if storage_type not in _STORAGE_TYPES:
            raise HTTPException(
                400, detail=f"storage_type must be one of fal-cdn-v3, gcs (got {storage_type!r})."
            )

    @router.post("/rest/storage/auth/token")
    async def storage_token(request: Request, storage_type: Optional[str] = None) -> dict:
        check_storage_type(storage_type)
        owner = api_owner(request)
        token, expires = tokens.issue(owner)
        return {
            "token": token,
            "token_type": "Bearer",
            "base_url": public_base_url(request, settings) + "/cdn",
            # isoformat of an aware datetime carries "+00:00": the Python
            # client compares it with an aware now() and breaks on naive values.
            "expires_at": expires.isoformat(),
        }

    @router.post("/cdn/files/upload")
    async def cdn_upload(request: Request) -> Response:
        owner = upload_owner(request)
        maybe_purge()
        try:
            _check_declared_length(request, limit)
            stored = await files.save_stream(
                request.stream(),
                request.headers.get("content-type"),
                request.headers.get("x-fal-file-name"),
                max_bytes=limit,
                owner=owner,
                ttl=lifecycle_ttl(request, default_ttl),
            )
        except StorageError as exc:
            return _error(exc)
        base = public_base_url(request, settings)
        return JSONResponse(_file_info(stored, base))

    @router.post("/cdn/files/upload/multipart")
    async def cdn_multipart_create(request: Request) -> dict:
        owner = upload_owner(request)
        pending = files.create_pending(
            request.headers.get("content-type"),
            request.headers.get("x-fal-file-name"),
            kind="multipart",
            owner=owner,
            ttl=lifecycle_ttl(request, default_ttl),
        )
        access_url = _pending_file_url(request, pending)
        return {"access_url": access_url, "uploadId": pending.upload_id}

    @router.post("/rest/storage/upload/initiate")
    async def initiate(request: Request, storage_type: Optional[str] = None) -> dict:
        return await _initiate(request, storage_type, kind="single")

    @router.post("/rest/storage/upload/initiate-multipart")
    async def initiate_multipart(request: Request, storage_type: Optional[str] = None) -> dict:
        return await _initiate(request, storage_type, kind="multipart")

    async def _initiate(request: Request, storage_type: Optional[str], kind: str) -> dict:
        check_storage_type(storage_type)
        owner = api_owner(request)
        maybe_purge()
        try:
            body = await request.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        pending = files.create_pending(
            body.get("content_type") if isinstance(body.get("content_type"), str) else None,
            body.get("file_name") if isinstance(body.get("file_name"), str) else None,
            kind=kind,
            owner=owner,
            ttl=lifecycle_ttl(request, default_ttl),
        )
        file_url = _pending_file_url(request, pending)
        suffix = "upload" if kind == "single" else "multipart"
        return {"upload_url": f"{file_url}/{suffix}/{pending.upload_id}", "file_url": file_url}

    def _pending_file_url(request: Request, pending: PendingUpload) -> str:
        return f"{public_base_url(request, settings)}/files/{pending.key}/{quote(pending.file_name, safe='')}"

    # The upload id in these URLs is the capability: the JS client PUTs with
    # plain fetch and no auth header.
    @router.put("/files/{key}/{name}/upload/{upload_id}")
    async def put_single(key: str, name: str, upload_id: str, request: Request) -> Response:
        try:
            _check_declared_length(request, limit)
            stored = await files.write_single(upload_id, key, request.stream(), limit)
        except StorageError as exc:
            return _error(exc)
        return JSONResponse(_file_info(stored, public_base_url(request, settings)))

    @router.put("/files/{key}/{name}/multipart/{upload_id}/{part_number}")
    async def put_part(key: str, name: str, upload_id: str, part_number: str, request: Request) -> Response:
        if not _is_number(part_number):
            return JSONResponse({"detail": "Part number must be an integer."}, status_code=400)
        try:
            _check_declared_length(request, limit)
            etag = await files.write_part(upload_id, key, int(part_number), request.stream(), limit)
        except StorageError as exc:
            return _error(exc)
        # Python reads the ETag header; JS reads {partNumber, etag} from the body.
        return JSONResponse({"partNumber": int(part_number), "etag": etag}, headers={"ETag": etag})

    @router.post("/files/{key}/{name}/multipart/{upload_id}/complete")
    async def complete(key: str, name: str, upload_id: str, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        parts = body.get("parts") if isinstance(body, dict) else None
        if parts is not None and not isinstance(parts, list):
            return JSONResponse({"detail": "'parts' must be a list."}, status_code=400)
        try:
            # Joining the parts copies the whole file: not on the event loop.
            stored = await asyncio.to_thread(files.complete, upload_id, key, parts, max_bytes=limit)
        except StorageError as exc:
            return _error(exc)
        return JSONResponse(_file_info(stored, public_base_url(request, settings)))

    # HEAD is the same handler, kept out of the schema (one operation id per route there).
    @router.head("/files/{key}/{name}", include_in_schema=False)
    @router.get("/files/{key}/{name}")
    async def serve_file(key: str, name: str) -> Response:
        stored = files.get(key)
        if stored is None:
            return JSONResponse({"detail": "File not found (unknown or expired)."}, status_code=404)
        return file_response(stored)

    return router


def _file_info(stored: StoredFile, base_url: str) -> dict:
    return {
        "access_url": base_url + stored.url_path,
        "url": base_url + stored.url_path,
        "content_type": stored.content_type,
        "file_name": stored.file_name,
        "file_size": stored.size,
    }


def file_response(stored: StoredFile) -> FileResponse:
    """Serve a stored file; only known-safe types inline, never sniffed."""
    inline = stored.content_type in INLINE_TYPES
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=86400",
        "Access-Control-Allow-Origin": "*",
    }
    return FileResponse(
        stored.path,
        media_type=stored.content_type if inline else "application/octet-stream",
        filename=stored.file_name,
        content_disposition_type="inline" if inline else "attachment",
        headers=headers,
    )
