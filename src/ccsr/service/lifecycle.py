"""How long a stored object lives: the ``x-fal-object-lifecycle-preference``
header, parsed strictly and bounded.

The header is ``{"expiration_duration_seconds": N}``. N must be a finite
number above zero and at most the ``max_expiration_seconds`` setting: an
``Infinity`` or a huge N would otherwise make a file that is never purged.
Anything else in the header is answered with a 422 naming the header, the
same on the queue routes and the upload routes (one function for both).
"""

from __future__ import annotations

import math
from typing import Optional

from starlette.requests import Request

from ccsr.service.guards import RequestProblem, parse_json_header

HEADERS = ("x-fal-object-lifecycle-preference", "x-fal-object-lifecycle")
#: Shorter lifetimes are raised to this (the purge sweep runs about once a minute).
MIN_TTL = 60.0


def ttl_from_header(name: str, raw: str, default: Optional[float], max_seconds: float) -> Optional[float]:
    """Seconds to keep an object for one header value (or ``default`` when
    the object carries no expiration), or :class:`RequestProblem`."""
    value = parse_json_header(name, raw)
    loc = ("header", name)
    if not isinstance(value, dict):
        raise RequestProblem(loc, 'must be a JSON object such as {"expiration_duration_seconds": 3600}')
    seconds = value.get("expiration_duration_seconds")
    if seconds is None:
        return default
    where = ("header", name, "expiration_duration_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise RequestProblem(where, "must be a finite number of seconds")
    if seconds <= 0:
        raise RequestProblem(where, f"must be greater than 0, got {seconds}")
    if seconds > max_seconds:
        raise RequestProblem(
            where, f"is {seconds:g} s; the limit is {max_seconds:g} s (setting max_expiration_seconds)"
        )
    return max(MIN_TTL, float(seconds))


def lifecycle_ttl(request: Request, default: Optional[float]) -> Optional[float]:
    """The lifetime a request asks for with its lifecycle header, or ``default``."""
    settings = getattr(request.app.state, "settings", None)
    cap = float(getattr(settings, "max_expiration_seconds", 30 * 24 * 3600))
    for name in HEADERS:
        raw = request.headers.get(name)
        if raw:
            return ttl_from_header(name, raw, default, cap)
    return default
