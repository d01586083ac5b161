"""The HTTP server of ``ccsr serve``: uvicorn with the connection-level
defences it lacks on its own.

uvicorn (h11) has a keep-alive timeout but no limit on how long a client may
take to send its request headers, and no cap on open connections: a thousand
clients trickling header bytes hold a thousand file descriptors until the
process runs out and every accept fails (and logs). :class:`GuardedH11` adds:

- a header-read timeout: a connection that has not sent a complete request
  head ``header_timeout`` seconds after connecting (or after its previous
  response) is closed;
- a connection cap: above ``max_connections``, the oldest connection that is
  *waiting for headers* (a slow or idle client) is closed to make room; only
  when every connection is busy with a request is the new one refused. So a
  flood of slow connections cannot lock out a client that sends its request
  promptly (a health check, a poll).

:func:`build_server` also raises the soft open-file limit to the hard one,
keeps the cap below it, and rate-limits repeated log messages.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ccsr.service.logflood import install_rate_limit
from ccsr.settings import Settings

log = logging.getLogger("ccsr.service")
#: File descriptors kept free of client connections (database, files, worker pipes, logs).
FD_RESERVE = 128


class GuardedH11(H11Protocol):
    """h11 protocol with a header-read timeout and a connection cap (class
    attributes set by :func:`guarded_protocol`)."""

    header_timeout: float = 10.0
    max_connections: int = 1000

    def _waiting_set(self) -> dict:
        # Insertion-ordered: the first entry is the connection waiting longest.
        state = self.server_state
        if not hasattr(state, "ccsr_waiting"):
            state.ccsr_waiting = {}  # type: ignore[attr-defined]
        return state.ccsr_waiting  # type: ignore[attr-defined]

    def _start_waiting(self) -> None:
        self._stop_waiting()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)
        self._waiting_set()[self] = None

    def _stop_waiting(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None
        self._waiting_set().pop(self, None)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        self._waiting_set().pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._last_cycle = None
        self._start_waiting()
        if len(self.connections) > self.max_connections:
            waiting = self._waiting_set()
            victim = next((p for p in waiting if p is not self), None)
            if victim is None:
                victim = self  # every other connection is busy with a request
            victim._stop_waiting()
            victim.transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._last_cycle:
            self._last_cycle = self.cycle  # a complete request head arrived
            self._stop_waiting()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._start_waiting()  # the next request head has header_timeout too
        super().on_response_complete()


def guarded_protocol(header_timeout: float, max_connections: int) -> type:
    """A :class:`GuardedH11` subclass bound to these limits."""
    return type("GuardedH11Bound", (GuardedH11,), {"header_timeout": header_timeout,
                                                   "max_connections": max_connections})


def raise_nofile_limit() -> Optional[int]:
    """Raise the soft open-file limit to the hard one; returns the soft limit
    in force (None where the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(settings: Settings, nofile: Optional[int]) -> int:
    """``max_connections``, kept ``FD_RESERVE`` below the open-file limit."""
    if nofile is None:
        return settings.max_connections
    return max(16, min(settings.max_connections, nofile - FD_RESERVE))


def build_server(app: Any, settings: Settings, *, log_level: str = "info", **config: Any) -> uvicorn.Server:
    """The uvicorn server for ``app`` with every connection limit applied."""
    cap = connection_cap(settings, raise_nofile_limit())
    if cap < settings.max_connections:
        log.warning("max_connections lowered to %d: the open-file limit is too low (raise LimitNOFILE)", cap)
    uconfig = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        http=guarded_protocol(settings.header_timeout, cap),
        timeout_keep_alive=int(max(1, round(settings.keep_alive_timeout))),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        **config,
    )
    # uvicorn's Config configures its loggers; the filter goes on after that.
    install_rate_limit(settings.log_repeat_limit, settings.log_repeat_window)
    return uvicorn.Server(uconfig)
