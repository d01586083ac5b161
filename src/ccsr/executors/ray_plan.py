"""How many Ray actors each served app gets, and with which options.

Several apps share one Ray cluster, each with its own
:class:`~ccsr.executors.ray.RayExecutor`. If each sized its pool to the
whole cluster, a cluster of two GPUs would get two actors per app, and the
second app's actors would wait in Ray for ever (its requests too). So every
executor computes the same plan over all served apps (:func:`plan_counts`)
and takes its own entry:

* an app with a fixed count (its section's ``ray_actors``, else the shared
  ``ray_workers``) gets exactly that, and those actors' resources are set
  aside first;
* the apps left split what remains evenly: each gets the largest ``k`` such
  that ``k`` actors of every one of them fit, then one more each, in the
  order the apps are served, while it still fits; never fewer than one (an
  actor that does not fit waits in Ray for a node, and ``/readyz`` says what
  it waits for);
* an app whose actors ask for no GPU and no custom resource gets one actor
  (nothing to count it by).

A cluster that holds one actor of each app therefore serves every app with
the defaults. The actor options of an app (:func:`actor_options_for`) are the
shared ``ray_actor_options`` with its section's ``ray_num_gpus`` and
``ray_resources`` over them: a 67 MB GAN may take a tenth of a GPU beside a
diffusion model taking the rest.

Pure arithmetic on dicts: ``ray`` is not imported here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

from ccsr.settings import check_actor_options

#: Slack for sums of fractional amounts (0.1 * 10 is not 1.0 in floats).
_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class ActorDemand:
    """One app's actors as the plan sees them: ``key`` names the app (its
    ref), ``need`` the resources one actor holds (``GPU`` and custom
    resources), ``count`` a fixed number of actors or None for a share."""

    key: str
    need: Mapping[str, float]
    count: Optional[int] = None


def need_of(options: Mapping[str, Any]) -> dict[str, float]:
    """The resources one actor with ``options`` holds that the plan counts:
    its GPUs and its custom resources (CPUs and memory are not counted: an
    actor that asks for neither a GPU nor a custom resource gets one actor)."""
    need = {k: float(v) for k, v in (options.get("resources") or {}).items() if v}
    if options.get("num_gpus"):
        need["GPU"] = float(options["num_gpus"])
    return need


def actor_options_for(shared: Mapping[str, Any], section: Any) -> dict:
    """One app's actor options: ``shared`` (``ray_actor_options``) merged over
    the defaults, then the app's section's ``ray_num_gpus`` and
    ``ray_resources`` (its resources are added to the shared ones, its own
    amount winning)."""
    options = check_actor_options(dict(shared))
    gpus = getattr(section, "ray_num_gpus", None)
    if gpus is not None:
        options["num_gpus"] = gpus
    own = getattr(section, "ray_resources", None) or {}
    if own:
        options["resources"] = {**(options.get("resources") or {}), **own}
    return check_actor_options(options)


def demand_for(key: str, options: Mapping[str, Any], section: Any, shared_count: Optional[int]) -> ActorDemand:
    """An app's :class:`ActorDemand`: its section's ``ray_actors``, else
    ``shared_count`` (``ray_workers``), else a share of the cluster."""
    count = getattr(section, "ray_actors", None)
    return ActorDemand(key, need_of(options), count if count is not None else shared_count)


def _fits(need: Mapping[str, float], free: Mapping[str, float], times: int = 1) -> bool:
    return all(free.get(r, 0.0) + _EPS >= times * v for r, v in need.items())


def _take(need: Mapping[str, float], free: dict[str, float], times: int) -> None:
    for r, v in need.items():
        free[r] = free.get(r, 0.0) - times * v


def plan_counts(total: Mapping[str, float], demands: Sequence[ActorDemand]) -> dict[str, int]:
    """Actors per app (by ``key``) on a cluster whose resources are ``total``
    (``ray.cluster_resources()``); see the module docstring."""
    free = {k: float(v) for k, v in total.items()}
    counts: dict[str, int] = {}
    for d in demands:
        if d.count is not None:
            counts[d.key] = d.count
            _take(d.need, free, d.count)
    shared = [d for d in demands if d.count is None and d.need]
    for d in demands:
        if d.count is None and not d.need:
            counts[d.key] = 1
    if shared:
        per_round: dict[str, float] = {}
        for d in shared:
            for r, v in d.need.items():
                per_round[r] = per_round.get(r, 0.0) + v
        k = max(0, min(math.floor(max(free.get(r, 0.0), 0.0) / v + _EPS) for r, v in per_round.items()))
        for d in shared:
            counts[d.key] = k
            _take(d.need, free, k)
        for d in shared:  # what is left: one more each, in order, while it fits
            if _fits(d.need, free):
                counts[d.key] += 1
                _take(d.need, free, 1)
        for d in shared:
            counts[d.key] = max(1, counts[d.key])
    return counts


def shortfall(total: Mapping[str, float], demands: Sequence[ActorDemand]) -> Optional[str]:
    """Why the cluster cannot hold one actor of every app (None when it can):
    e.g. ``GPU: 2 needed, the cluster has 1``."""
    need: dict[str, float] = {}
    for d in demands:
        for r, v in d.need.items():
            need[r] = need.get(r, 0.0) + v * max(1, d.count or 1)
    short = [f"{r}: {v:g} needed, the cluster has {total.get(r, 0.0):g}"
             for r, v in sorted(need.items()) if total.get(r, 0.0) + _EPS < v]
    return "; ".join(short) or None
