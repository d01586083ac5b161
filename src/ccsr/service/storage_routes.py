"""The HTTP routes of the hosted storage protocol (see docs/fal-protocol.md,
"Storage"): upload tokens, raw and multipart uploads, and ``GET /files/...``,
which serves a stored file without authentication (the key is the capability).

A file is streamed from the local disk or from the blob store, or, when the
blob store presigns URLs (``s3_presign_urls``), answered with a redirect to a
presigned URL on the bucket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterator, Optional
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse

from ccsr.storage import BlobNotFound, BlobStoreError
from ccsr.service.auth import KeyRing, parse_authorization
from ccsr.storage.files import FileStore, StorageError, StoredFile, TooLarge
from ccsr.storage.tokens import UploadTokens
from ccsr.storage.uploads import PendingUpload, PendingUploads
from ccsr.service.urls import lifecycle_ttl, public_base_url
from ccsr.settings import Settings

log = logging.getLogger("ccsr.service.storage")

PURGE_INTERVAL = 600.0
_CHUNK = 1024 * 1024

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
    signer: list[UploadTokens] = []  # the token signer, once its secret is read from the store

    async def tokens() -> UploadTokens:
        """Read on first use, not at start: a server whose store is down still
        starts (not ready) and serves what needs no store."""
        if not signer:
            signer.append(await files.pool.run(files.upload_tokens))
        return signer[0]
    uploads = PendingUploads(files)
    limit = settings.max_upload_bytes
    default_ttl = settings.result_ttl
    sweep = {"last": 0.0, "task": None}

    def purge() -> None:
        files.purge_expired()
        uploads.purge_stale()

    async def purge_in_pool() -> None:
        try:
            await files.pool.run(purge)
        except BlobStoreError as exc:  # the next upload after PURGE_INTERVAL tries again
            log.warning("purging expired files failed: %s", exc)

    def maybe_purge() -> None:
        """Sweep expired files and stale uploads out of the store now and then
        (uploads drive it; expired files are already never served)."""
        now = time.time()
        if now - sweep["last"] < PURGE_INTERVAL:
            return
        sweep["last"] = now
        sweep["task"] = asyncio.get_running_loop().create_task(purge_in_pool())

    def api_owner(request: Request) -> str:
        return keyring.require(request.headers.get("authorization"))

    async def upload_owner(request: Request) -> str:
        """Upload token (Bearer) or API key; anyone when no keys are configured."""
        header = request.headers.get("authorization")
        if not keyring.enabled:
            return keyring.owner_for(header) or "local"
        owner = (await tokens()).verify(parse_authorization(header))
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
        token, expires = (await tokens()).issue(owner)
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
        owner = await upload_owner(request)
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
        owner = await upload_owner(request)
        pending = await files.pool.run(
            uploads.create,
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
        pending = await files.pool.run(
            uploads.create,
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
            stored = await uploads.write_single(upload_id, key, request.stream(), limit)
        except StorageError as exc:
            return _error(exc)
        return JSONResponse(_file_info(stored, public_base_url(request, settings)))

    @router.put("/files/{key}/{name}/multipart/{upload_id}/{part_number}")
    async def put_part(key: str, name: str, upload_id: str, part_number: str, request: Request) -> Response:
        if not _is_number(part_number):
            return JSONResponse({"detail": "Part number must be an integer."}, status_code=400)
        try:
            _check_declared_length(request, limit)
            etag = await uploads.write_part(upload_id, key, int(part_number), request.stream(), limit)
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
            stored = await files.pool.run(uploads.complete, upload_id, key, parts, max_bytes=limit)
        except StorageError as exc:
            return _error(exc)
        return JSONResponse(_file_info(stored, public_base_url(request, settings)))

    # HEAD is the same handler, kept out of the schema (one operation id per route there).
    @router.head("/files/{key}/{name}", include_in_schema=False)
    @router.get("/files/{key}/{name}")
    async def serve_file(key: str, name: str, request: Request) -> Response:
        stored = await files.pool.run(files.get, key)
        if stored is None:
            return _missing()
        return await file_response(files, stored, head=request.method == "HEAD")

    return router


def _file_info(stored: StoredFile, base_url: str) -> dict:
    return {
        "access_url": base_url + stored.url_path,
        "url": base_url + stored.url_path,
        "content_type": stored.content_type,
        "file_name": stored.file_name,
        "file_size": stored.size,
    }


def _missing() -> JSONResponse:
    return JSONResponse({"detail": "File not found (unknown or expired)."}, status_code=404)


async def file_response(files: FileStore, stored: StoredFile, *, head: bool = False) -> Response:
    """Serve a stored file; only known-safe types inline, never sniffed.

    From the local disk when the bytes are there, else a redirect to a
    presigned URL when the blob store gives one, else streamed from the store.
    """
    inline = stored.content_type in INLINE_TYPES
    media_type = stored.content_type if inline else "application/octet-stream"
    disposition = "inline" if inline else "attachment"
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, max-age=86400",
        "Access-Control-Allow-Origin": "*",
    }
    direct = files.direct_url(stored, inline=inline)
    if direct is not None:
        # The presigned URL answers with the same type and disposition; it
        # expires, so the redirect itself must not be cached for longer.
        return RedirectResponse(direct, status_code=307, headers={
            "Cache-Control": "private, max-age=60", "Access-Control-Allow-Origin": "*"})
    headers["Content-Disposition"] = f"{disposition}; filename*=utf-8''{quote(stored.file_name, safe='')}"
    headers["Content-Length"] = str(stored.size)
    if head:
        return Response(status_code=200, media_type=media_type, headers=headers)
    try:
        # Opened before any header goes out: retention may delete the file at
        # any moment, and an open file stays readable to its end after the
        # unlink, so a download that started always completes and one that
        # lost the race is a clean 404 (never headers then a cut body).
        body = await files.pool.run(files.blobs.open, stored.blob_key)
    except BlobNotFound:
        return _missing()

    def chunks() -> Iterator[bytes]:
        with body:
            yield from iter(lambda: body.read(_CHUNK), b"")

    # A sync iterator: Starlette reads it in a worker thread, off the event loop.
    return StreamingResponse(chunks(), media_type=media_type, headers=headers)
