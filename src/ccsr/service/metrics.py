"""Prometheus metrics of the queue, served at /metrics.

Gauges are read from the scheduler's memory when scraped; counters and
histograms are fed by the scheduler's hooks. One registry per app, so tests
that build several apps in one process do not collide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ccsr.jobs.models import CANCELLED, COMPLETED, FAILED
from ccsr.jobs.edges import Hooks
from ccsr.jobs.view import JobView

if TYPE_CHECKING:
    from ccsr.jobs.scheduler import Scheduler

_INFERENCE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, float("inf"))
_STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, float("inf"))


class ServiceMetrics(Hooks):
    """The scheduler hooks that count, plus the registry they count into."""

    def __init__(self, after_finish: Optional[Callable[[JobView], Any]] = None):
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("ccsr_queue_depth", "Requests waiting in the queue.", registry=r)
        self.running = Gauge("ccsr_requests_running", "Requests running on a worker.", registry=r)
        self.workers_ready = Gauge("ccsr_workers_ready", "Model workers with the model loaded.", registry=r)
        self.started = Counter("ccsr_requests_started", "Runs started (retries included).", registry=r)
        self.finished = Counter("ccsr_requests_finished", "Requests finished, by outcome.", ["outcome"], registry=r)
        self.completed = self.finished.labels(outcome=COMPLETED)
        self.failed = self.finished.labels(outcome=FAILED)
        self.cancelled = self.finished.labels(outcome=CANCELLED)
        self.inference = Histogram(
            "ccsr_inference_seconds", "Model time per completed request.", buckets=_INFERENCE_BUCKETS, registry=r
        )
        self.step = Histogram(
            "ccsr_step_seconds", "Time per sampling step (network evaluation).", buckets=_STEP_BUCKETS, registry=r
        )
        self.after_finish = after_finish

    def bind(self, scheduler: "Scheduler") -> None:
        self.queue_depth.set_function(lambda: scheduler.queue_depth())
        self.running.set_function(lambda: scheduler.running_count())
        self.workers_ready.set_function(lambda: sum(1 for ex in scheduler.executors.values() for w in ex.describe() if w.get("ready")))

    # --- hooks ------------------------------------------------------------------
    def job_started(self, view: JobView) -> None:
        self.started.inc()

    def job_step(self, view: JobView, seconds: float) -> None:
        if seconds >= 0:
            self.step.observe(seconds)

    def job_finished(self, view: JobView) -> None:
        self.finished.labels(outcome=view.status).inc()
        if view.status == COMPLETED and view.inference_time is not None:
            self.inference.observe(view.inference_time)
        if self.after_finish is not None:
            self.after_finish(view)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
