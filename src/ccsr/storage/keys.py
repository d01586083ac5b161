"""Every blob key the server makes, named in one place.

A blob store holds several kinds of bytes side by side; each kind lives
under its own prefix, and no other module spells one (a test checks)::

    submitted/<request_id>        a data: URI's bytes, taken out of the job row at submit
    servers/<token>               a running server's marker: servers sharing a database
                                  check that they share the store (service.store_check)
    inputs/<request_id>.<run>     a run's prepared input (PNG), read by the worker: one
                                  per run, so a server ending a request (or failing to)
                                  never removes the input of a run another server holds
    files/<key[:2]>/<key>         a stored file's bytes (uploads, and results: the
                                  worker writes a result here, and publishing it
                                  registers it in place)
    files/<key[:2]>/<key>.json    the file's metadata (it is visible while this exists)
    uploads/<upload_id>/meta      an initiated upload; parts at .../<n>, ETags at .../<n>.etag
    secrets/upload-token          the upload-token signing secret
    secrets/probe                 never stored: the store's health check asks for its size

Keys are made from server-made ids only (request ids, ``secrets.token_urlsafe``
keys), never user text; the stores check them against
:data:`ccsr.storage.base.KEY_RE` again.

A job row refers to a submitted input's blob as ``image_url:
"blob:submitted/<request_id>"`` (:data:`INPUT_REF`). Clients cannot send this
scheme (``image_url`` must be http(s) or data:), so a reference always names a
blob the server wrote.
"""

from __future__ import annotations

import re
from typing import Optional

SUBMITTED = "submitted/"
RUN_INPUTS = "inputs/"
FILES = "files/"
UPLOADS = "uploads/"
SECRETS = "secrets/"
SERVERS = "servers/"
#: Every prefix above: nothing else is ever stored.
PREFIXES = (SUBMITTED, RUN_INPUTS, FILES, UPLOADS, SECRETS, SERVERS)

#: The upload-token signing secret (never under files/, so no URL reaches it).
UPLOAD_TOKEN_SECRET = SECRETS + "upload-token"
#: The key the periodic health check of the store looks up (never written: a
#: "not found" is an answer, which is all the check wants).
PROBE = SECRETS + "probe"
#: Directory under a local store's root where request bodies and upload parts
#: are written before they enter the store (a rename from there: same disk).
#: Not a key: the store never lists it.
SCRATCH_DIR = "tmp"
#: ``image_url`` of a stored input whose bytes live in the blob store.
INPUT_REF = "blob:"

_META = ".json"
_FILE_KEY = re.compile(r"^[A-Za-z0-9_-]{22,86}$")


# --- requests ------------------------------------------------------------------
def submitted_input(request_id: str) -> str:
    """Where a submitted data URI's bytes are kept until the request ends."""
    return f"{SUBMITTED}{request_id}"


def run_input(request_id: str, run: str) -> str:
    """The prepared input (PNG bytes) of one run of a request (``run``: a
    server-made token, new for every run)."""
    return f"{RUN_INPUTS}{request_id}.{run}"


def run_inputs(request_id: str) -> str:
    """The prefix under which every run of a request keeps its input: what the
    server that ends the request removes (a killed server's run leaves one)."""
    return f"{RUN_INPUTS}{request_id}."


def input_ref(key: str) -> str:
    """The ``image_url`` a job row stores for an input kept at ``key``."""
    return INPUT_REF + key


def input_ref_key(stored_input: Optional[dict]) -> Optional[str]:
    """The blob key a stored input refers to, or None (a URL or no input)."""
    url = (stored_input or {}).get("image_url")
    return ref_key(url) if isinstance(url, str) else None


def ref_key(ref: str) -> Optional[str]:
    """The key in a ``blob:<key>`` reference, else None."""
    return ref[len(INPUT_REF):] if ref.startswith(INPUT_REF) else None


def run_leftovers(input_key: Optional[str], output_key: Optional[str], stored_input: Optional[dict],
                  ended: bool) -> list[str]:
    """The working blobs a run of this server leaves behind: its prepared
    input (``input_key``), its result when it was not published
    (``output_key``: None once it became a stored file), and, once the
    request has ended, its submitted input: no run needs it any more. (The
    other runs' inputs, under :func:`run_inputs`, go with the ending too; the
    store lists them.)"""
    keys = [k for k in (input_key, output_key) if k]
    submitted = input_ref_key(stored_input) if ended else None
    return keys + ([submitted] if submitted else [])


# --- stored files --------------------------------------------------------------
def is_file_key(key: object) -> bool:
    """True when ``key`` has the shape of a file key the server hands out."""
    return isinstance(key, str) and bool(_FILE_KEY.match(key))


def file_bytes(file_key: str) -> str:
    """The blob holding a stored file's bytes (the caller checked the key)."""
    return f"{FILES}{file_key[:2]}/{file_key}"


def file_meta(file_key: str) -> str:
    """The blob holding a stored file's metadata."""
    return file_bytes(file_key) + _META


def file_key_of(blob_key: str) -> Optional[str]:
    """The file key whose bytes (or metadata) live at ``blob_key``, or None
    when ``blob_key`` is no file blob."""
    head, _, name = blob_key.rpartition("/")
    key = name[: -len(_META)] if name.endswith(_META) else name
    return key if is_file_key(key) and head == f"{FILES}{key[:2]}" else None


def is_file_meta(blob_key: str) -> bool:
    return blob_key.endswith(_META) and file_key_of(blob_key) is not None


# --- initiated uploads ---------------------------------------------------------
def upload_dir(upload_id: str) -> str:
    """The folder of an initiated upload: its metadata and its parts."""
    return f"{UPLOADS}{upload_id}/"


def upload_meta(upload_id: str) -> str:
    return upload_dir(upload_id) + "meta"


def upload_part(upload_id: str, number: int) -> str:
    return f"{upload_dir(upload_id)}{number}"


def upload_etag(upload_id: str, number: int) -> str:
    return upload_part(upload_id, number) + ".etag"


def upload_part_number(blob_key: str) -> Optional[int]:
    """The part number of an upload part's blob, None for its metadata or an ETag."""
    tail = blob_key.rsplit("/", 1)[-1]
    return int(tail) if tail.isascii() and tail.isdigit() else None


def upload_id_of(blob_key: str) -> str:
    """The upload id of a blob under :data:`UPLOADS`."""
    return blob_key[len(UPLOADS):].split("/", 1)[0]


# --- servers -------------------------------------------------------------------
def server_marker(token: str) -> str:
    """The marker a running server keeps in its store (``token``: hex, server-made)."""
    return f"{SERVERS}{token}"
