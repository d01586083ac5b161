"""Finding and fetching the official weights.

Order of precedence: an explicit path (``--weights`` / API argument), then the
``CCSR_WEIGHTS`` environment variable, then the copy that
``ccsr weights download`` put in the standard Hugging Face cache. Nothing here
touches the network unless :func:`download` is called.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ccsr.engine.weights_files import (RANDOM_MARKER, has_random_marker, http_errors, progress_bar_class,  # noqa: F401
                                       random_marker, safetensors_metadata)
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


#: Seconds to wait for the hub to answer before giving up (it may be unreachable).
CONNECT_TIMEOUT = 10.0


def is_random(path: Path | str) -> bool:
    """True when the checkpoint carries the random-weights marker (only
    ``.safetensors`` files written by ``ccsr weights random`` do)."""
    return has_random_marker(path)


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
                                    etag_timeout=timeout, endpoint=endpoint, tqdm_class=progress_bar_class()))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, *http_errors()) as exc:
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
