"""The plan that splits a Ray cluster between the served apps (pure
arithmetic: no cluster here; tests/executors/test_ray_apps.py runs it on one)."""

from __future__ import annotations

import pytest

from ccsr.executors.ray_plan import ActorDemand, actor_options_for, demand_for, need_of, plan_counts, shortfall
from ccsr.service.app import ray_demands
from ccsr.apps.registry import default_registry
from ccsr.settings import Settings

CCSR, ESRGAN = "ccsr", "esrgan"


def gpus(n: float, count=None, key=CCSR) -> ActorDemand:
    return ActorDemand(key, {"GPU": n}, count)


@pytest.mark.parametrize("total, want", [
    (1, {CCSR: 1, ESRGAN: 1}),  # cannot hold both: one each anyway (one waits, /readyz says so)
    (2, {CCSR: 1, ESRGAN: 1}),  # the cluster: not 2 + 2
    (3, {CCSR: 2, ESRGAN: 1}),  # the odd one goes to the first app
    (4, {CCSR: 2, ESRGAN: 2}),
    (8, {CCSR: 4, ESRGAN: 4}),
])
def test_whole_gpus_are_split_evenly_at_least_one_each(total, want):
    assert plan_counts({"GPU": total}, [gpus(1), gpus(1, key=ESRGAN)]) == want


def test_one_app_alone_takes_the_whole_cluster_as_before():
    assert plan_counts({"GPU": 4}, [gpus(1)]) == {CCSR: 4}
    assert plan_counts({"GPU": 4, "ccsr_worker": 3}, [ActorDemand(CCSR, {"ccsr_worker": 1})]) == {CCSR: 3}


def test_a_fraction_of_a_gpu_shares_gpus_with_the_other_app():
    # 0.9 + 0.1: each GPU holds one actor of each.
    assert plan_counts({"GPU": 2}, [gpus(0.9), gpus(0.1, key=ESRGAN)]) == {CCSR: 2, ESRGAN: 2}
    # A whole GPU for CCSR leaves 0.9 of the second: one more ESRGAN actor, never a flood of them.
    assert plan_counts({"GPU": 2}, [gpus(1), gpus(0.1, key=ESRGAN)]) == {CCSR: 1, ESRGAN: 2}


def test_fixed_counts_are_set_aside_first():
    assert plan_counts({"GPU": 4}, [gpus(1), gpus(1, count=1, key=ESRGAN)]) == {CCSR: 3, ESRGAN: 1}
    assert plan_counts({"GPU": 1}, [gpus(1, count=3), gpus(1, key=ESRGAN)]) == {CCSR: 3, ESRGAN: 1}


def test_actors_asking_for_no_counted_resource_get_one():
    assert plan_counts({"GPU": 4}, [ActorDemand(CCSR, {}), gpus(1, key=ESRGAN)]) == {CCSR: 1, ESRGAN: 4}


def test_shortfall_names_the_resource():
    assert shortfall({"GPU": 2}, [gpus(1), gpus(1, key=ESRGAN)]) is None
    assert shortfall({"GPU": 1}, [gpus(1), gpus(1, key=ESRGAN)]) == "GPU: 2 needed, the cluster has 1"
    assert "x: 1 needed, the cluster has 0" in shortfall({}, [ActorDemand(CCSR, {"x": 1})])


def test_per_app_options_go_over_the_shared_ones():
    s = Settings(ray_actor_options={"num_cpus": 1, "resources": {"site": 1}}, esrgan_ray_num_gpus=0.1,
                 esrgan_ray_resources={"small_gpu": 1}, esrgan_ray_actors=2)
    esrgan = default_registry()["fal-ai/esrgan"]
    opts = actor_options_for(s.ray_actor_options, s.section(esrgan))
    assert opts == {"num_gpus": 0.1, "num_cpus": 1, "resources": {"site": 1, "small_gpu": 1}}
    assert need_of(opts) == {"GPU": 0.1, "site": 1.0, "small_gpu": 1.0}
    by_key = {d.key: d for d in ray_demands(list(default_registry()), s)}
    assert by_key[esrgan.ref].count == 2 and by_key[esrgan.ref].need["GPU"] == 0.1
    ccsr = default_registry()["fal-ai/ccsr"]
    assert by_key[ccsr.ref].count is None and by_key[ccsr.ref].need == {"GPU": 1.0, "site": 1.0}
    # ray_workers: the count of every app that sets none of its own.
    assert demand_for("k", {}, s.section(ccsr), 3).count == 3


def test_per_app_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("CCSR_ESRGAN_RAY_NUM_GPUS", "0.25")
    monkeypatch.setenv("CCSR_ESRGAN_RAY_ACTORS", "2")
    monkeypatch.setenv("CCSR_RAY_NUM_GPUS", "0.75")
    monkeypatch.setenv("CCSR_ESRGAN_RAY_RESOURCES", '{"esrgan_gpu": 1}')
    s = Settings()
    assert (s.models["esrgan"].ray_num_gpus, s.models["esrgan"].ray_actors) == (0.25, 2)
    assert s.models["esrgan"].ray_resources == {"esrgan_gpu": 1}
    assert s.models["ccsr-v1"].ray_num_gpus == 0.75
