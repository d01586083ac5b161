"""The GPU fast paths (CCSRModel.optimize) on the CPU: torch.compile with inductor, channels_last."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from ccsr.models.ccsr_v1.networks.model import CCSRModel
from ccsr.models.ccsr_v1.engine import CCSRUpscaler
from ccsr.settings import Settings


@pytest.fixture()
def small(monkeypatch) -> None:
    import ccsr.models.ccsr_v1.params as params_mod

    monkeypatch.setattr(params_mod, "NATIVE_SIZE", 64)


@pytest.fixture(scope="module")
def photo(chelsea) -> Image.Image:
    return chelsea(32, 24)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_compiled_model_matches_eager_on_the_cpu(small, tiny_checkpoint, tiny_config, tiny_model, photo):
    """The compiled path end to end: ``optimize(compile=...)`` captures the UNet and
    the ControlNet whole with TorchDynamo, AOTAutograd functionalizes and
    decomposes them (the graphs inductor turns into kernels), and the compiled
    request equals the eager one up to float rounding; later calls of the same
    shape reuse the graphs. ``aot_eager`` stops short of inductor's code
    generation, which costs over two minutes of C++ compiling for the tiny
    networks on a small CPU (the GPU check, benchmarks/gpu_check.py, runs inductor)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = CCSRModel.from_file(tiny_checkpoint, tiny_config).optimize(compile="default", channels_last=False,
                                                                      backend="aot_eager")
    assert model.compile_mode == "default"
    kw = dict(seed=4, steps=4, scale=2)
    got = CCSRUpscaler(model, auto_memory=False)(photo, **kw)
    want = CCSRUpscaler(tiny_model, auto_memory=False)(photo, **kw)
    assert np.abs(_arr(got.image) - _arr(want.image)).max() <= 1
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs >= 2  # the UNet and the ControlNet were captured
    assert not torch._dynamo.utils.counters["graph_break"]  # each whole, nothing left to Python
    CCSRUpscaler(model, auto_memory=False)(photo, **dict(kw, seed=5))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # same shapes: no recompile
    assert model.state_dict().keys() == tiny_model.state_dict().keys()  # compiled in place: same keys


def test_channels_last_matches_contiguous(small, tiny_checkpoint, tiny_config, tiny_model, photo):
    model = CCSRModel.from_file(tiny_checkpoint, tiny_config).optimize(channels_last=True)
    assert model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    kw = dict(seed=4, steps=4, scale=2)
    got = CCSRUpscaler(model, auto_memory=False)(photo, **kw)
    want = CCSRUpscaler(tiny_model, auto_memory=False)(photo, **kw)
    assert np.abs(_arr(got.image) - _arr(want.image)).max() <= 1


def test_channels_last_auto_is_off_on_the_cpu(tiny_checkpoint, tiny_config):
    model = CCSRModel.from_file(tiny_checkpoint, tiny_config).optimize()
    assert model.compile_mode == "off"
    assert not model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_bad_compile_mode_is_refused_clearly(tiny_model):
    with pytest.raises(ValueError, match="compile must be one of"):
        tiny_model.optimize(compile="fastest")
    with pytest.raises(ValidationError, match="compile"):
        Settings(compile="fastest")


def test_app_passes_the_fast_path_settings_to_the_engine(tiny_checkpoint, tiny_config_path):
    from ccsr.models.ccsr_v1.app import CCSRApp

    app = CCSRApp()
    # What a worker process receives: the shared engine options and CCSR v1's section.
    worker = app.worker_settings(Settings(weights=tiny_checkpoint, config=tiny_config_path, dtype="fp32", channels_last="on",
                                          compile="off", batch_size=3, auto_memory=False, memory_budget=12345))
    assert worker["section"]["memory_budget"] == 12345 and "channels_last" not in worker
    engine = app.load_engine(worker, "cpu")
    assert engine.batch_size == 3 and engine.auto_memory is False and engine.memory_budget == 12345
    assert engine.model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
