"""ccsr: CCSR v1 and CCSR-v2 super-resolution, as a library, a command and a service."""

import os as _os

from ccsr.engine import allocator as _allocator
from ccsr.errors import Cancelled, CCSRError, CheckpointError, InvalidParameter, OutOfMemory, WeightsNotFound

__all__ = [
    "CCSRError", "Cancelled", "CheckpointError", "InvalidParameter", "OutOfMemory", "WeightsNotFound",
    "UpscaleParams", "CCSRUpscaler", "UpscaleResult", "V2Params", "V2Upscaler", "V2Result",
]

#: The public names of the default model, resolved on first use: strings, not
#: imports (nothing outside a model's folder imports it; importing torch and
#: diffusers costs seconds, and the HTTP process never needs them).
_LAZY = {
    "UpscaleParams": "ccsr.models.ccsr_v1.params:UpscaleParams",
    "CCSRUpscaler": "ccsr.models.ccsr_v1.engine:CCSRUpscaler",
    "UpscaleResult": "ccsr.models.ccsr_v1.engine:UpscaleResult",
    "V2Params": "ccsr.models.ccsr_v2.params:V2Params",
    "V2Upscaler": "ccsr.models.ccsr_v2.engine:V2Upscaler",
    "V2Result": "ccsr.models.ccsr_v2.engine:V2Result",
}


def __getattr__(name: str):
    if name in _LAZY:
        from ccsr.apps.base import resolve

        return resolve(_LAZY[name])
    raise AttributeError(name)


def _flag(name: str, default: bool) -> bool:
    value = _os.environ.get(name, "").strip().lower()
    return default if not value else value not in ("0", "false", "no", "off")


# Before anything imports torch: its allocator reads the variable once (setting
# ``huge_pages``; read here from the environment, as no settings object exists yet).
_allocator.use_huge_pages(_flag("CCSR_HUGE_PAGES", True))
