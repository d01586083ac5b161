"""Results returned inline (``sync_mode: true``): the image as a data URI in
the result, and no copy kept.

When such a request completes, its result blob is not registered as a stored
file (no ``/files`` URL ever reaches it): the stored result names it as
``"url": "blob:<key>"`` (:data:`ccsr.storage.keys.INPUT_REF`, a scheme clients
cannot send), the request owns it (retention deletes it if nobody asks), and
the first answer carrying the result (the queue's result GET, the sync run's
answer, the stream's last event) reads it, puts it in ``url`` as
``data:<type>;base64,...`` and deletes it. Later answers are a 410 that
says so (:func:`gone_body`), with the result's other fields; webhooks carry
those fields with ``url`` null (a webhook body is kept in the outbox table,
and the image must not be). The data URI's length is limited by the setting
``max_sync_mode_bytes``: a larger result fails the request with a 422 on
``sync_mode`` (:func:`held_inline`), never an oversized answer.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Callable, Optional

from ccsr.apps.base import FileInfo, random_file_name
from ccsr.errors import InvalidParameter
from ccsr.executors.base import Done
from ccsr.storage import BlobNotFound, Storage, keys

GONE_DETAIL = (
    "This request ran with sync_mode=true: its image was returned inline (as a data URI) in the first answer "
    "and is not kept. Run it again to get the image (with sync_mode=false for a stored file URL)."
)


def data_uri_length(size: int, content_type: str) -> int:
    """Characters of the data URI of ``size`` bytes of ``content_type``."""
    return len(f"data:{content_type};base64,") + 4 * math.ceil(size / 3)


def held_inline(done: Done, limit: int) -> FileInfo:
    """The file description of a sync_mode result (its ``url`` the held blob's
    reference), or :class:`InvalidParameter` on ``sync_mode`` when its data
    URI would be longer than ``limit`` (``max_sync_mode_bytes``)."""
    length = data_uri_length(done.file_size, done.content_type)
    if length > limit:
        raise InvalidParameter(
            "sync_mode",
            f"the result is {done.file_size} bytes, {length} as a data URI; results returned inline are limited to "
            f"{limit} bytes (setting max_sync_mode_bytes). Send sync_mode=false to get a file URL, or ask for "
            "output_format jpeg (smaller).",
        )
    return FileInfo(url=keys.input_ref(done.output_key), content_type=done.content_type,
                    file_name=random_file_name(done.extension), file_size=done.file_size)


def _map_urls(value: Any, fn: Callable[[dict], Any]) -> Any:
    """``value`` with each ``url`` held inline replaced by ``fn(the file dict)``."""
    if isinstance(value, dict):
        url = value.get("url")
        if isinstance(url, str) and keys.ref_key(url) is not None:
            return {**value, "url": fn(value)}
        return {k: _map_urls(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_urls(v, fn) for v in value]
    return value


def held_keys(result: Any) -> list[str]:
    """The blob keys of the images a stored result holds inline."""
    found: list[str] = []
    _map_urls(result, lambda f: found.append(keys.ref_key(f["url"])))
    return found


def without_images(result: Any) -> Any:
    """A stored result with every inline image's ``url`` null (webhooks, the 410 body)."""
    return _map_urls(result, lambda f: None)


def gone_body(result: Any) -> dict:
    """The 410 answer of a sync_mode result asked for again."""
    return {"detail": GONE_DETAIL, "sync_mode": True, "result": without_images(result)}


def take_inline(result: Any, storage: Storage) -> Optional[Any]:
    """The result with its inline images as data URIs, their blobs deleted;
    None when they are gone (delivered before, or expired). Blocking I/O."""
    held = held_keys(result)
    if not held:
        return result
    datas: dict[str, bytes] = {}
    try:
        for key in held:
            datas[key] = storage.blobs.read(key)
    except (BlobNotFound, FileNotFoundError):
        return None

    def uri(f: dict) -> str:
        data = datas[keys.ref_key(f["url"])]
        return f"data:{f.get('content_type') or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"

    answer = _map_urls(result, uri)
    storage.discard(held)
    return answer
