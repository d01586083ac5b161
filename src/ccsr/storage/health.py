"""Whether the blob store answers, as one flag the service acts on.

A store that can be out of reach (S3) sets it after every call: down once a
call has failed for its whole retry window, up as soon as any call or check
succeeds. The scheduler claims no work while it is down, ``/readyz`` answers
503, and submits that must store bytes answer 503 at once instead of waiting
out another retry window. A periodic check (:meth:`ccsr.storage.Storage.check`)
notices both an outage on an idle server and the store's return.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

log = logging.getLogger("ccsr.storage")


class StoreHealth:
    """Up or down, since when and why (thread-safe: store calls run in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.ok = True
        self.since = time.time()
        self.reason: Optional[str] = None
        self._downs = 0  # how many times down() was called: orders a success against failures

    def mark(self) -> int:
        """Taken before a call or check starts, and handed to :meth:`up` when
        it succeeds: a success that began before a later failure is older
        news than that failure and must not bring the store back up."""
        return self._downs

    def down(self, reason: str) -> None:
        """The store failed a call for good (``reason``: for the server's log only)."""
        with self._lock:
            self._downs += 1
            was, self.ok, self.reason = self.ok, False, reason
            if was:
                self.since = time.time()
        if was:
            log.warning("the blob store is unavailable (%s): not ready, claiming no work until it answers", reason)

    def up(self, mark: Optional[int] = None) -> None:
        """A call or a check succeeded; ``mark`` (from :meth:`mark`, taken
        when it started) makes a success that overlapped a newer failure
        change nothing."""
        if self.ok:
            return
        with self._lock:
            if mark is not None and mark != self._downs:
                return
            was, self.ok, self.reason = self.ok, True, None
            down_for = time.time() - self.since
            self.since = time.time()
        if not was:
            log.warning("the blob store answers again after %.1f s", down_for)

    def state(self) -> str:
        """``ok`` or ``unavailable`` (what ``/readyz`` shows)."""
        return "ok" if self.ok else "unavailable"
