"""The scheduler's edges in the service: how an input is fetched and checked
before a worker sees it, and how a result blob becomes a stored file and the
app's output JSON. Bytes go through the service's
:class:`~ccsr.storage.api.Storage`: the result blob a worker wrote is
registered as a stored file in place, never copied."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ValidationError

from ccsr.apps.base import FileInfo, random_file_name
from ccsr.apps.output import OutputSpec, sync_mode_of
from ccsr.apps.registry import Registry
from ccsr.errors import InvalidParameter
from ccsr.executors.base import Done
from ccsr.jobs.edges import Prepared, Published
from ccsr.jobs.view import JobView
from ccsr.service.images import InputError
from ccsr.service.inline import held_inline
from ccsr.settings import Settings
from ccsr.storage import BlobNotFound, Storage


class ServiceEdges:
    """Implements :class:`ccsr.jobs.edges.Edges` for the apps of ``registry``."""

    def __init__(self, settings: Settings, storage: Storage, registry: Registry):
        self.settings = settings
        self.storage = storage
        self.registry = registry

    def params_of(self, view: JobView) -> BaseModel:
        """The typed parameters: as submitted here, or parsed back from the
        stored input after a restart (the JSON the accepted model wrote)."""
        if view.params is not None:
            return view.params
        app = self.registry[view.app_id]
        try:
            return app.params_from(view.input)
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
        return Prepared(png, params, OutputSpec.of_request(view.input, self.settings.provenance).as_dict())

    async def _input_bytes(self, view: JobView) -> bytes:
        """The input's bytes: from the blob store for a data URI taken out of
        the row at submit, else fetched from its URL."""
        from ccsr.service.fetch import load_input_bytes

        try:
            kept = await self.storage.run(self.storage.kept_input, view.input)
        except (BlobNotFound, FileNotFoundError):
            raise InputError("image_url", "the submitted image is no longer stored (its blob is missing).") from None
        if kept is not None:
            return kept
        return await load_input_bytes(view.input.get("image_url", ""), settings=self.settings, files=self.storage.files)

    async def publish(self, view: JobView, done: Done) -> Published:
        app = self.registry[view.app_id]
        if sync_mode_of(view.input):
            # Not a stored file: the blob is held until the result is first
            # delivered, as a data URI (ccsr.service.inline), then deleted.
            file = held_inline(done, self.settings.max_sync_mode_bytes)
            return Published(app.render(done.fields, file), [file.url], app.summary(done.fields))
        ttl = view.ttl if view.ttl is not None else self.settings.result_ttl
        stored = await self.storage.run(
            self.storage.publish_result, done.output_key, size=done.file_size, content_type=done.content_type,
            file_name=random_file_name(done.extension), owner=view.owner, ttl=ttl)
        file = FileInfo(url=stored.url_path, content_type=stored.content_type, file_name=stored.file_name,
                        file_size=stored.size)
        return Published(app.render(done.fields, file), [stored.url_path], app.summary(done.fields))

    def delete_file(self, ref: str) -> None:
        """Remove a stored result ("/files/<key>/<name>") or a submitted input's
        blob ("blob:<key>"); missing files are fine."""
        self.storage.delete_owned(ref)
