"""A PNG result says what made it, and that reproduces it (issue 23, point 5):
fal-ai/ccsr with the tiny random checkpoint, a random seed at first, then
the parameters read back from the PNG's ``ccsr`` text chunk with Pillow."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
from PIL import Image

from ccsr.apps.finish import PROVENANCE_KEY, run_one
from ccsr.apps.output import OutputSpec
from ccsr.models.ccsr_v1.app import CCSRApp
from ccsr.models.ccsr_v1.engine import CCSRUpscaler


def _run(engine, image, params) -> Image.Image:
    out = run_one(CCSRApp(), engine, image, params, OutputSpec("png"), progress=lambda *a: None,
                  cancel=threading.Event(), log=lambda *a, **k: None)
    return Image.open(io.BytesIO(out.data))


def test_the_parameters_in_the_png_reproduce_it(monkeypatch, tiny_model, chelsea):
    import ccsr.models.ccsr_v1.engine as upscaler_mod

    monkeypatch.setattr(upscaler_mod, "NATIVE_SIZE", 64)  # a smaller diffusion canvas: the same code, quicker
    engine = CCSRUpscaler(tiny_model)
    app = CCSRApp()
    first = _run(engine, chelsea(24, 16), app.Params(steps=3, scale=2, color_fix_type="wavelet"))  # seed: random
    made = json.loads(first.info[PROVENANCE_KEY])
    assert made["app"] == "fal-ai/ccsr" and made["model"] == "ccsr-v1" and made["version"]
    params = made["parameters"]
    assert isinstance(params["seed"], int) and params["steps"] == 3 and params["color_fix_type"] == "wavelet"
    again = _run(engine, chelsea(24, 16), app.Params(**params))
    assert np.array_equal(np.asarray(again), np.asarray(first))
