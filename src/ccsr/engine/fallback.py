"""One warning per process when a CPU speed-up falls back to PyTorch's own op.

Why: a kernel that refuses a call (NNPACK, oneDNN) costs the speed-up, not
the request, since the fallback computes the same result; the user should
hear of it once, not on every layer of every request.
"""

from __future__ import annotations

import logging


class FallbackLog:
    """Logs the first fallback as a warning and later ones at debug level."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.warned = False

    def __call__(self, msg: str, *args: object) -> None:
        level = logging.DEBUG if self.warned else logging.WARNING
        self.warned = True
        self.logger.log(level, msg, *args)
