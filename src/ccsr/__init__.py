"""ccsr: CCSR v1 super-resolution, as a library, a command and a service."""

from ccsr.errors import Cancelled, CCSRError, CheckpointError, InvalidParameter, OutOfMemory, WeightsNotFound
from ccsr.models.ccsr_v1.params import UpscaleParams

__all__ = [
    "CCSRError", "Cancelled", "CheckpointError", "InvalidParameter", "OutOfMemory", "WeightsNotFound",
    "UpscaleParams", "CCSRUpscaler", "UpscaleResult",
]


def __getattr__(name: str):
    # Lazy: importing torch/diffusers costs seconds; the HTTP process never needs them.
    if name in ("CCSRUpscaler", "UpscaleResult"):
        from ccsr.models.ccsr_v1 import engine as upscaler

        return getattr(upscaler, name)
    raise AttributeError(name)
