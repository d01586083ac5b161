"""The cyclic garbage collector stays off while a model loads (engine/gc_pause.py)."""

from __future__ import annotations

import gc

import pytest

from ccsr.engine.gc_pause import paused_gc


def test_paused_gc_restores_the_previous_state_also_on_error():
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():  # nested: the inner block must not turn it back on
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), paused_gc():
        raise ValueError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # was off before: stays off
    finally:
        gc.enable()


def test_paused_gc_decorates_a_function():
    seen = []

    @paused_gc()
    def load(x: int) -> int:
        seen.append(gc.isenabled())
        return x + 1

    assert load(1) == 2 and seen == [False] and gc.isenabled()


def _collections_during(fn) -> int:
    """Collections started while ``fn`` ran; with the collector paused that is at
    most the one young collection that may fall due as the pause ends."""
    runs = []

    def cb(phase: str, info: dict) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.collect()
    gc.callbacks.append(cb)
    try:
        fn()
    finally:
        gc.callbacks.remove(cb)
    return len(runs)


def test_loading_ccsr_v2_runs_no_collection(v2_weights):
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    assert _collections_during(lambda: V2Upscaler.from_folder(v2_weights, device="cpu", dtype="fp32")) <= 1
    # The same load with the pause undone collects many times: the check above can fail.
    assert _collections_during(lambda: V2Upscaler.from_folder.__wrapped__(V2Upscaler, v2_weights, device="cpu",
                                                                            dtype="fp32")) > 3


def test_loading_ccsr_v1_runs_no_collection(tiny_checkpoint, tiny_config):
    from ccsr.models.ccsr_v1.engine import CCSRUpscaler

    assert _collections_during(lambda: CCSRUpscaler.from_checkpoint(tiny_checkpoint, tiny_config, device="cpu",
                                                                      dtype="fp32")) <= 1
