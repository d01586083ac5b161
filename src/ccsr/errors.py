"""Errors the engine raises on purpose.

Each carries enough context for a person to act on it: the CLI prints the
message, the service maps the class to an HTTP status (InvalidParameter -> 422
with the field in ``loc``).
"""

from __future__ import annotations


class CCSRError(Exception):
    """Base class of every error this package raises deliberately."""


class InvalidParameter(CCSRError, ValueError):
    """A request parameter is out of range or inconsistent with another one."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CheckpointError(CCSRError):
    """A weights file is missing keys, truncated, or not a CCSR checkpoint."""


class WeightsNotFound(CCSRError):
    """No weights were given and none are in the local cache."""


class Cancelled(CCSRError):
    """The caller's cancel hook fired; raised between network evaluations."""


class OutOfMemory(CCSRError):
    """The device ran out of memory; the message names the settings to change."""
