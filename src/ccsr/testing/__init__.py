"""Helpers for tests and benchmarks: a throw-away PostgreSQL database.

Kept in the package (not under tests/) so the job tests, the service tests and
the benchmark script share one implementation.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

#: Server used by the tests; override with CCSR_TEST_POSTGRES_URL.
DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get("CCSR_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL)


@contextlib.contextmanager
def temporary_postgres_database(admin_url: str | None = None) -> Iterator[str]:
    """Create a fresh database, yield its URL, drop it afterwards (also on error)."""
    import psycopg

    admin_url = admin_url or postgres_admin_url()
    name = f"ccsr_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _db = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class FakeResult:
    def __init__(self, image, seed: int, timings: dict):
        self.image, self.seed, self.timings = image, seed, timings


class FakeEngine:
    """Stands in for CCSRUpscaler where the queue, not the picture, is under
    test: same call signature, sleeps ``step_seconds`` per step, honours cancel,
    and returns the input resized by ``scale``."""

    def __init__(self, step_seconds: float = 0.02, device: str = "cpu", run_log: str | None = None):
        self.step_seconds = step_seconds
        self.device = device
        self.run_log = run_log
        self.batches: list[int] = []

    def __call__(self, image, params=None, *, progress=None, cancel=None, log=None):  # noqa: ANN001
        return self.run_batch([image], [params], progress=progress, cancel=cancel, log=log)[0]

    def run(self, image, params, *, progress=None, cancel=None, log=None):  # noqa: ANN001
        """CCSRUpscaler.run's signature (the worker's entry point); the same as calling it."""
        return self(image, params, progress=progress, cancel=cancel, log=log)

    def run_batch(self, images, params, *, progress=None, cancel=None, log=None):  # noqa: ANN001
        """CCSRUpscaler.run_batch's signature: the steps once for the whole batch;
        ``batches`` records each batch's size."""
        import random
        import time

        from ccsr.apps.registry import builtin_classes
        from ccsr.engine.sizes import target_size
        from ccsr.errors import Cancelled

        params = [p or builtin_classes()[0].Params() for p in params]  # the default model's defaults
        first = params[0]
        self.batches.append(len(images))
        total = max(1, round(first.steps * first.t_max) - round(first.steps * first.t_min))
        if log:
            log(f"fake engine: {total} steps" + (f", batch of {len(images)}" if len(images) > 1 else ""))
        for i in range(total):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            time.sleep(self.step_seconds)
            if progress:
                progress(i + 1, total)
        results = []
        for image, p in zip(images, params):
            seed = p.seed if p.seed is not None else random.randrange(2**31)
            if self.run_log:
                # One line per finished run ("<seed> <worker pid>"), appended in one
                # write: tests count how often each request really ran, and where.
                import os

                with open(self.run_log, "a") as f:
                    f.write(f"{seed} {os.getpid()}\n")
            results.append(FakeResult(image.resize(target_size(image.width, image.height, p.scale)), seed, {"total": 0.0}))
        return results


def fake_engine_factory(settings: dict, device: str) -> FakeEngine:
    """Worker factory ("ccsr.testing:fake_engine_factory") for pool tests;
    CCSR_FAKE_STEP_SECONDS sets the time per step; CCSR_FAKE_RUN_LOG names a
    file each finished run appends its seed and worker pid to."""
    import os

    return FakeEngine(float(os.environ.get("CCSR_FAKE_STEP_SECONDS", "0.02")), device,
                      os.environ.get("CCSR_FAKE_RUN_LOG") or None)
