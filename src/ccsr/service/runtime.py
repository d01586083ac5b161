"""The scheduler's edges in the service: how an input is fetched and checked
before a worker sees it, and how a result blob becomes a stored file and the
app's output JSON. This is the one place the scheduler's work meets the
:class:`FileStore`."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ValidationError

from ccsr.apps.base import FileInfo, random_file_name
from ccsr.apps.registry import Registry
from ccsr.storage import BlobStore
from ccsr.storage.base import BlobNotFound
from ccsr.errors import InvalidParameter
from ccsr.service.images import InputError
from ccsr.jobs.edges import INPUT_BLOB_REF, Prepared, Published, input_blob_key
from ccsr.executors.base import Done
from ccsr.jobs.view import JobView
from ccsr.storage.files import FileStore
from ccsr.settings import Settings


class ServiceEdges:
    """Implements :class:`ccsr.jobs.edges.Edges` for the apps of ``registry``."""

    def __init__(self, settings: Settings, files: FileStore, blobs: BlobStore, registry: Registry):
        self.settings = settings
        self.files = files
        self.blobs = blobs
        self.registry = registry

    def params_of(self, view: JobView) -> BaseModel:
        """The typed parameters: as submitted here, or parsed back from the
        stored input after a restart (the JSON the accepted model wrote)."""
        if view.params is not None:
            return view.params
        app = self.registry[view.app_id]
        try:
            return app.Params.model_validate({k: v for k, v in view.input.items() if k != "image_url"})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidParameter(str(err["loc"][0]) if err["loc"] else "body", err["msg"]) from None

    async def prepare(self, view: JobView) -> Prepared:
        """Fetch the bytes safely (SSRF-guarded, size-limited), check the request
        against the size in the image's header (the second trust boundary), then
        decode the first frame in a bounded child process: the HTTP process never
        holds decoded pixels (see :mod:`ccsr.service.input_prep`)."""
        from ccsr.service.input_prep import decode_checked
        app = self.registry[view.app_id]
        params = self.params_of(view)
        data = await self._input_bytes(view)
        png = await asyncio.to_thread(decode_checked, data, self.settings,
                                      lambda w, h: app.check_image(params, w, h, self.settings))
        return Prepared(png, params)

    async def _input_bytes(self, view: JobView) -> bytes:
        """The input's bytes: from the blob store for a data URI taken out of
        the row at submit, else fetched from its URL."""
        from ccsr.service.fetch import load_input_bytes

        key = input_blob_key(view.input)
        if key is None:
            return await load_input_bytes(view.input.get("image_url", ""), settings=self.settings, files=self.files)
        try:
            return await asyncio.to_thread(self.blobs.read, key)
        except (BlobNotFound, FileNotFoundError):
            raise InputError("image_url", "the submitted image is no longer stored (its blob is missing).") from None

    async def publish(self, view: JobView, done: Done) -> Published:
        app = self.registry[view.app_id]
        ttl = view.ttl if view.ttl is not None else self.settings.result_ttl
        stored = await asyncio.to_thread(self._store_result, done, view.owner, ttl)
        file = FileInfo(url=stored.url_path, content_type=stored.content_type, file_name=stored.file_name,
                        file_size=stored.size)
        return Published(app.render(done.fields, file), [stored.url_path], app.summary(done.fields))

    def _store_result(self, done: Done, owner: Any, ttl: float) -> Any:
        # LEAD: a copy from the blob store into the FileStore for now; once the
        # FileStore keeps its bytes in the BlobStore, register the blob in place.
        data = self.blobs.read(done.output_key)
        stored = self.files.save(data, done.content_type, random_file_name(done.extension), owner=owner, ttl=ttl)
        self.blobs.delete(done.output_key)
        return stored

    def delete_file(self, ref: str) -> None:
        """Remove a stored result ("/files/<key>/<name>") or a submitted input's
        blob ("blob:<key>"); missing files are fine."""
        if ref.startswith(INPUT_BLOB_REF):
            self.blobs.delete(ref[len(INPUT_BLOB_REF):])
            return
        key = self.files.key_from_url(ref)
        if key:
            self.files.delete(key)
