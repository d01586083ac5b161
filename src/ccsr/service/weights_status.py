"""Which weights each served app runs, and whether they are random.

Each app says it itself (``App.weights_status``, read from its own settings
section: CCSR reads the marker ``ccsr weights random`` writes into the
checkpoint's metadata), once at start: the start-up log warns, ``/readyz``
reports ``random_weights`` (true when any served app runs random weights) and
``/api/apps`` each app's own, and the playground shows a banner from it. An
app that is not served is never asked. Header reads only: this process never
imports torch.
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional

from ccsr.apps.base import App, WeightsStatus
from ccsr.errors import CCSRError
from ccsr.settings import Settings

log = logging.getLogger("ccsr.service")


def weights_status(app: App, settings: Settings) -> Optional[WeightsStatus]:
    """The app's status; weights that cannot be found are "unknown" (random None),
    the worker then says why when it loads."""
    try:
        return app.weights_status(settings.section(app))
    except CCSRError:
        return WeightsStatus()


def statuses(apps: Iterable[App], settings: Settings) -> dict[str, Optional[WeightsStatus]]:
    """Each served app's status, by app id."""
    return {app.app_id: weights_status(app, settings) for app in apps}


def random_weights(found: dict[str, Optional[WeightsStatus]]) -> Optional[bool]:
    """For ``/readyz``: True when any app runs random weights, False when every
    app that can tell runs real ones, None when none can tell."""
    known = [s.random for s in found.values() if s is not None and s.random is not None]
    return any(known) if known else None


def announce(found: dict[str, Optional[WeightsStatus]]) -> None:
    """The start-up log lines a person reads first."""
    for app_id, status in found.items():
        if status is None:
            continue
        if status.random:
            log.warning("RANDOM WEIGHTS: %s runs %s; results show the pipeline working, not real "
                        "super-resolution. %s", app_id, status.weights, status.advice)
        elif status.weights:
            log.info("%s weights: %s", app_id, status.weights)
