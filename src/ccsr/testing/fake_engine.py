"""A fake engine for tests and benchmarks of the queue, not of the picture.

It stands in for an app's engine by reading the request's typed parameters
by field name, whatever the app's schema (no app's model is imported):

* ``steps``: how many progress steps it reports (:data:`DEFAULT_STEPS` when
  the schema has no such field); a schema that samples only a window of its
  schedule (``t_min`` and ``t_max`` fields, as CCSR's truncated sampler does)
  runs that part, as the real engine would;
* ``scale``: the output is the input resized by it (the same size otherwise);
* ``seed``: reported back (a random one when absent or null).

It sleeps ``step_seconds`` per step (no CPU burnt), honours cancel between
steps, and offers the call shapes the built-in apps use: ``run`` and
``run_batch`` (CCSR's engine) and ``get(model)`` returning a callable taking
the fields as keywords, beside a ``max_output_pixels`` limit (Real-ESRGAN's).
"""

from __future__ import annotations

import math
import os
import random
import time
import types
from typing import Any, Optional

#: Steps of a request whose schema has no ``steps`` field.
DEFAULT_STEPS = 4


def _field(params: Any, name: str, default: Any = None) -> Any:
    """``params.<name>`` when the schema has it and it is set, else ``default``."""
    value = getattr(params, name, None)
    return default if value is None else value


def fake_steps(params: Any) -> int:
    """The number of steps the fake engine runs for ``params`` (see the module docstring)."""
    steps = _field(params, "steps")
    if steps is None:
        return DEFAULT_STEPS
    t_max, t_min = _field(params, "t_max"), _field(params, "t_min")
    if t_max is not None and t_min is not None:
        return max(1, round(steps * t_max) - round(steps * t_min))
    return max(1, int(steps))


def fake_size(width: int, height: int, params: Any) -> tuple[int, int]:
    """The output size: each side times ``scale``, rounded up (the input size without one)."""
    scale = float(_field(params, "scale", 1))
    if scale == 1:
        return width, height
    return math.ceil(width * scale), math.ceil(height * scale)


class FakeResult:
    """What an engine call returns: the image, the seed, timings, and for
    per-model engines the model name and the tile count."""

    def __init__(self, image: Any, seed: int, timings: dict, model: Optional[str] = None, tiles: int = 1):
        self.image, self.seed, self.timings, self.model, self.tiles = image, seed, timings, model, tiles


class FakeEngine:
    """Sleeps ``step_seconds`` per step instead of computing (module docstring).
    ``run_log`` names a file each finished run appends "<seed> <pid>" to;
    ``batches`` records the size of each batch run."""

    #: Read by apps that pass their engine's output limit along (not enforced).
    max_output_pixels = 4096 * 4096

    def __init__(self, step_seconds: float = 0.02, device: str = "cpu", run_log: str | None = None):
        self.step_seconds = step_seconds
        self.device = device
        self.run_log = run_log
        self.batches: list[int] = []

    def __call__(self, image, params=None, *, progress=None, cancel=None, log=None):  # noqa: ANN001
        return self.run_batch([image], [params], progress=progress, cancel=cancel, log=log)[0]

    def run(self, image, params, *, progress=None, cancel=None, log=None):  # noqa: ANN001
        """The worker's entry point of an engine taking the typed parameters; the same as calling it."""
        return self(image, params, progress=progress, cancel=cancel, log=log)

    def get(self, model: str, log=None) -> "_FakeModel":  # noqa: ANN001
        """A per-model engine's lookup: a callable taking the fields as keywords."""
        return _FakeModel(self, model)

    def run_batch(self, images, params, *, progress=None, cancel=None, log=None):  # noqa: ANN001
        """The steps once for the whole batch (those of its first request)."""
        from ccsr.errors import Cancelled

        self.batches.append(len(images))
        total = fake_steps(params[0])
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
            seed = _field(p, "seed")
            seed = random.randrange(2**31) if seed is None else int(seed)
            if self.run_log:
                # One line per finished run, appended in one write: tests count
                # how often each request really ran, and where.
                with open(self.run_log, "a") as f:
                    f.write(f"{seed} {os.getpid()}\n")
            results.append(FakeResult(image.resize(fake_size(image.width, image.height, p)), seed, {"total": 0.0}))
        return results


class _FakeModel:
    """One model of a per-model engine (``engine.get(model)``), called with the
    request's fields as keywords."""

    def __init__(self, engine: FakeEngine, model: str):
        self.engine, self.model = engine, model

    def __call__(self, image, *, progress=None, cancel=None, log=None, **fields):  # noqa: ANN001
        fields.pop("max_output_pixels", None)  # the engine's limit, not a request field
        result = self.engine(image, types.SimpleNamespace(**fields), progress=progress, cancel=cancel, log=log)
        result.model = self.model
        return result


def fake_engine_factory(settings: dict, device: str) -> FakeEngine:
    """Engine factory ("ccsr.testing:fake_engine_factory", ``ccsr serve
    --engine-factory``) for any app whose engine it can stand in for;
    CCSR_FAKE_STEP_SECONDS sets the time per step; CCSR_FAKE_RUN_LOG names a
    file each finished run appends its seed and worker pid to."""
    return FakeEngine(float(os.environ.get("CCSR_FAKE_STEP_SECONDS", "0.02")), device,
                      os.environ.get("CCSR_FAKE_RUN_LOG") or None)
