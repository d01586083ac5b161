"""Which weights the server runs, and whether they are random.

Read from the checkpoint itself (the marker ``ccsr weights random`` writes into
the safetensors metadata, see :func:`ccsr.models.ccsr_v1.weights.is_random`), once at start:
the start-up log warns, ``/readyz`` reports ``random_weights`` and the
playground shows a banner from it. Header-only: this process never imports torch.
"""

from __future__ import annotations

import logging
from typing import Optional

from ccsr.errors import CCSRError
from ccsr.settings import Settings

log = logging.getLogger("ccsr.service")


def weights_status(settings: Settings) -> dict[str, Optional[object]]:
    """``{"weights": path or None, "random_weights": True/False, or None when no file is found}``."""
    from ccsr.models.ccsr_v1 import weights

    try:
        path = weights.resolve(settings.weights)
    except CCSRError:
        return {"weights": None, "random_weights": None}
    return {"weights": str(path), "random_weights": weights.is_random(path)}


def announce(status: dict) -> None:
    """The start-up log line a person reads first."""
    if status.get("random_weights"):
        log.warning(
            "RANDOM WEIGHTS: %s was written by `ccsr weights random`; results show the pipeline working, "
            "not real super-resolution. Run `ccsr weights download` for the official weights.",
            status["weights"],
        )
    elif status.get("weights"):
        log.info("weights: %s", status["weights"])
