"""The one place the service turns settings into its blob store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ccsr.blobs.base import BlobStore
from ccsr.blobs.local import LocalBlobStore


def from_settings(settings: Any) -> BlobStore:
    """The blob store the settings ask for: for now a directory, ``<data_dir>/blobs``."""
    return LocalBlobStore(Path(settings.data_dir) / "blobs")
