"""Weights files, whatever the model: the random-weights marker in a
safetensors header, reading that header without torch, and the pieces every
download shares (the transport errors to catch, a progress bar that always
shows)."""

from __future__ import annotations

import json
import struct
from pathlib import Path


#: safetensors metadata key that ``ccsr weights random`` sets to "true": whether a
#: checkpoint is random is then a property of the file, not a guess from its size.
RANDOM_MARKER = "ccsr.random_weights"


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



def has_random_marker(path: Path | str) -> bool:
    """True when a ``.safetensors`` file carries :data:`RANDOM_MARKER`."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    return safetensors_metadata(path).get(RANDOM_MARKER) == "true"


def http_errors() -> tuple[type[BaseException], ...]:
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


def progress_bar_class() -> type:
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
