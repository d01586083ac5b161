"""The scheduler's timings and limits, as one value.

:class:`SchedulerConfig` groups what used to be a dozen keyword arguments of
the scheduler; :meth:`SchedulerConfig.from_settings` reads them from the
service's settings (``ccsr serve``), tests build one with the few fields they
change.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    from ccsr.settings import Settings

#: Seconds a result stays downloadable after delivery when X-Fal-Store-IO is 0.
STORE_IO_GRACE = 60.0

#: The longest lease a claim gets (the setting lease_seconds may not exceed
#: it, and the job store cuts longer ones): a dead server's running jobs wait
#: at most this long before another server runs them again.
MAX_LEASE_SECONDS = 60.0


@dataclasses.dataclass
class SchedulerConfig:
    """How long things last and how often the scheduler looks (docs/scale-out.md
    for the cluster ones). The settings of the same names document each."""

    result_ttl: float = 7 * 24 * 3600  # seconds a finished request and its files are kept
    max_attempts: int = 2  # runs a request gets when its worker crashes
    max_interruptions: int = 3  # runs a server kill or restart may cut short
    sweep_interval: float = 30.0  # seconds between retention sweeps
    store_io_grace: float = STORE_IO_GRACE
    cache_size: int = 20000  # finished requests kept in memory for status polls
    finished_cache_bytes: int = 64 * 2**20  # ... and at most about this many bytes of them
    node_id: Optional[str] = None  # default: host-pid-random (ccsr.jobs.cluster.make_node_id)
    lease_seconds: float = 10.0
    heartbeat_interval: float = 2.0
    poll_interval: float = 0.5
    log_flush_interval: float = 0.5
    store_check_interval: float = 2.0  # seconds between checks of the blob store (ccsr.storage.health)

    def __post_init__(self) -> None:
        if self.lease_seconds > MAX_LEASE_SECONDS:
            raise ValueError(f"lease_seconds ({self.lease_seconds}) must be at most {MAX_LEASE_SECONDS:g}")
        if self.lease_seconds < 3 * self.heartbeat_interval:
            raise ValueError(f"lease_seconds ({self.lease_seconds}) must be at least 3 x heartbeat_interval "
                             f"({self.heartbeat_interval})")

    @classmethod
    def from_settings(cls, settings: "Settings", **overrides: Any) -> "SchedulerConfig":
        """The fields of the same names in ``settings``, then ``overrides``."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: getattr(settings, name) for name in names if hasattr(settings, name)}
        return cls(**{**values, **overrides})
