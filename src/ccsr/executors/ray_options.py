"""The Ray actor options ``ccsr serve --executor ray`` accepts.

Separate from :mod:`ccsr.executors.ray` so the settings can check
``ray_actor_options`` at start-up without importing ``ray``.
"""

from __future__ import annotations

#: Options Ray gets for every actor unless ``ray_actor_options`` says otherwise.
DEFAULT_ACTOR_OPTIONS: dict = {"num_gpus": 1}
#: Actor options a user may set; restarts and retries belong to the scheduler.
ALLOWED_ACTOR_OPTIONS = frozenset(
    {"num_gpus", "num_cpus", "memory", "resources", "accelerator_type", "runtime_env", "label_selector"}
)


def check_actor_options(options: dict) -> dict:
    """Validate ``ray_actor_options``; return them merged over the defaults.

    Raises ValueError naming the option and what is allowed.
    """
    if not isinstance(options, dict):
        raise ValueError("ray_actor_options: must be a JSON object")
    bad = sorted(set(options) - ALLOWED_ACTOR_OPTIONS)
    if bad:
        raise ValueError(
            f"ray_actor_options: unsupported key(s) {', '.join(bad)}; allowed: {', '.join(sorted(ALLOWED_ACTOR_OPTIONS))}"
            " (restarts and retries are fixed at 0: the scheduler owns retries)"
        )
    for key in ("num_gpus", "num_cpus", "memory"):
        value = options.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"ray_actor_options: {key} must be a number >= 0, got {value!r}")
    res = options.get("resources", {})
    if not isinstance(res, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in res.values()
    ):
        raise ValueError("ray_actor_options: resources must map names to amounts > 0")
    return {**DEFAULT_ACTOR_OPTIONS, **options}
