"""Finding and fetching the official weights.

Order of precedence: an explicit path (``--weights`` / API argument), then the
``CCSR_WEIGHTS`` environment variable, then the copy that
``ccsr weights download`` put in the standard Hugging Face cache. Nothing here
touches the network unless :func:`download` is called.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Optional

from ccsr.errors import WeightsNotFound

REPO_ID = "Kijai/ccsr-safetensors"
FILENAME = "real-world_ccsr-fp16.safetensors"
#: Approximate size, for messages; the exact size is checked against the hub's metadata.
APPROX_SIZE = "3.44 GB"

HOW_TO_GET = (
    "Run `ccsr weights download` to fetch the official weights "
    f"({REPO_ID}/{FILENAME}, {APPROX_SIZE}) into the Hugging Face cache, "
    "or pass --weights PATH (env CCSR_WEIGHTS) for a file you already have. "
    "For a quick try without weights: `ccsr weights random --config CONFIG.yaml -o random.safetensors`."
)


#: safetensors metadata key that ``ccsr weights random`` sets to "true": whether a
#: checkpoint is random is then a property of the file, not a guess from its size.
RANDOM_MARKER = "ccsr.random_weights"
#: Seconds to wait for the hub to answer before giving up (it may be unreachable).
CONNECT_TIMEOUT = 10.0


def random_marker(seed: int) -> dict[str, str]:
    """The metadata that marks a safetensors file as random weights."""
    return {RANDOM_MARKER: "true", "ccsr.random_seed": str(int(seed))}


def safetensors_metadata(path: Path | str) -> dict[str, str]:
    """The ``__metadata__`` of a .safetensors file (header only: no tensor is read,
    no torch import, so the HTTP process can call it)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return {}
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:  # not a safetensors header
            return {}
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def is_random(path: Path | str) -> bool:
    """True when the checkpoint carries the random-weights marker (only
    ``.safetensors`` files written by ``ccsr weights random`` do)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    return safetensors_metadata(path).get(RANDOM_MARKER) == "true"


def cached_path(cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The cached official file, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(REPO_ID, FILENAME, cache_dir=cache_dir)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    return None


def resolve(explicit: Optional[Path | str] = None) -> Path:
    """Return the weights file to load, or raise :class:`WeightsNotFound` with
    the command to run."""
    for source, value in (("--weights", explicit), ("CCSR_WEIGHTS", os.environ.get("CCSR_WEIGHTS"))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise WeightsNotFound(f"weights file given by {source} does not exist: {path}. {HOW_TO_GET}")
            return path
    found = cached_path()
    if found is None:
        raise WeightsNotFound(f"No CCSR weights found. {HOW_TO_GET}")
    return found


def download(
    cache_dir: Optional[Path] = None,
    force: bool = False,
    *,
    timeout: float = CONNECT_TIMEOUT,
    endpoint: Optional[str] = None,
) -> Path:
    """Fetch the fp16 safetensors with huggingface_hub (a progress bar on the
    terminal; resumable: an interrupted download continues from its
    ``.incomplete`` file) and check its size against the hub's metadata.

    One metadata request with a ``timeout`` goes first, so an unreachable hub
    fails within seconds instead of hanging or retrying."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        meta = get_hf_file_metadata(hf_hub_url(REPO_ID, FILENAME, endpoint=endpoint), timeout=timeout, endpoint=endpoint)
        path = Path(hf_hub_download(REPO_ID, FILENAME, cache_dir=cache_dir, force_download=force,
                                    etag_timeout=timeout, endpoint=endpoint, tqdm_class=_progress_bar_class()))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, *_http_errors()) as exc:
        raise WeightsNotFound(
            f"Could not download {REPO_ID}/{FILENAME}: {exc.__class__.__name__}: {exc}. "
            "Check the network (and HF_ENDPOINT / proxy settings), then run `ccsr weights download` again; "
            "it resumes where it stopped. Or copy the file to this machine and pass --weights PATH."
        ) from exc
    if meta.size is not None and path.stat().st_size != meta.size:
        raise WeightsNotFound(
            f"Downloaded {path} has {path.stat().st_size} bytes, the hub says {meta.size}. "
            "Run `ccsr weights download --force` to fetch it again."
        )
    return path


def _http_errors() -> tuple[type[BaseException], ...]:
    """Transport errors of the HTTP library huggingface_hub uses (httpx, or its
    fork httpx2 in recent releases): timeouts and refused connections."""
    import importlib

    found = []
    for name in ("httpx2", "httpx", "requests"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        err = getattr(mod, "HTTPError", None) or getattr(getattr(mod, "exceptions", None), "RequestException", None)
        if isinstance(err, type) and issubclass(err, BaseException):
            found.append(err)
    return tuple(found)


def _progress_bar_class() -> type:
    """A plain tqdm bar on stderr, always drawn: huggingface_hub's own bar hides
    itself in some set-ups (log level, no TTY), and a 3.44 GB download without
    one looks like a hang."""
    from tqdm.auto import tqdm

    class DownloadBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = False
            kwargs.setdefault("mininterval", 0.5)
            super().__init__(*args, **kwargs)

    return DownloadBar
