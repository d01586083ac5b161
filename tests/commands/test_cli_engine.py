"""The engine's command line: `ccsr upscale` and `ccsr weights`."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from ccsr.cli import app

runner = CliRunner()


@pytest.fixture()
def small_inputs(tmp_path: Path, fixtures_dir: Path) -> list[Path]:
    paths = []
    for name in ("chelsea.png", "coffee.png"):
        with Image.open(fixtures_dir / "images" / name) as im:
            p = tmp_path / name
            im.convert("RGB").resize((48, 32)).save(p)
            paths.append(p)
    return paths


@pytest.fixture()
def small_diffusion(monkeypatch) -> None:
    """A 128 px diffusion image instead of the native 512 px: these tests are
    about files, formats, sizes and seeds, not the picture, and run ~16x cheaper."""
    import ccsr.models.ccsr_v1.engine as upscaler_mod

    monkeypatch.setattr(upscaler_mod, "NATIVE_SIZE", 128)


def _common(tiny_checkpoint, tiny_config_path):
    return ["--weights", str(tiny_checkpoint), "--config", str(tiny_config_path), "--steps", "4", "--device", "cpu", "--seed", "3"]


def test_upscale_one_file_to_jpeg(small_diffusion, tmp_path, small_inputs, tiny_checkpoint, tiny_config_path):
    out = tmp_path / "out.jpg"
    res = runner.invoke(app, ["upscale", str(small_inputs[0]), "-o", str(out), "--scale", "2", *_common(tiny_checkpoint, tiny_config_path)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG by extension
    with Image.open(out) as im:
        assert im.size == (96, 64)
    assert "seed=3, RANDOM weights)" in res.output  # the tiny checkpoint is random, and the summary says so


def test_upscale_several_files_into_a_folder_as_png(small_diffusion, tmp_path, small_inputs, tiny_checkpoint, tiny_config_path):
    folder = tmp_path / "results"
    res = runner.invoke(app, ["upscale", *map(str, small_inputs), "-o", str(folder), "--scale", "1.5",
                              "--color-fix-type", "wavelet", *_common(tiny_checkpoint, tiny_config_path)])
    assert res.exit_code == 0, res.output
    for src in small_inputs:
        out = folder / f"{src.stem}.png"
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(out) as im:
            assert im.size == (72, 48)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--t-min", "0.9", "--t-max", "0.5"], "--t-min: must be smaller than t_max"),
        (["--scale", "0"], "--scale"),
        (["--tile-diffusion", "nope"], "--tile-diffusion"),
        (["--tile-diffusion", "gaussian", "--tile-diffusion-size", "256", "--tile-diffusion-stride", "512"], "--tile-diffusion-stride: must not exceed"),
        (["--tile-diffusion", "gaussian", "--tile-diffusion-size", "260"], "--tile-diffusion-size: must be a multiple of 8"),
        (["--steps", "2"], "--steps: 2 steps"),
        (["--scale", "16"], "--scale: output 768x512"),
    ],
)
def test_upscale_bad_values_name_the_flag_before_loading(tmp_path, small_inputs, tiny_checkpoint, tiny_config_path, args, needle, monkeypatch):
    import ccsr.models.ccsr_v1.engine as up

    monkeypatch.setenv("CCSR_MAX_OUTPUT_PIXELS", str(512 * 512))
    monkeypatch.setattr(up.CCSRUpscaler, "from_checkpoint", lambda *a, **k: pytest.fail("model loaded"))
    res = runner.invoke(app, ["upscale", str(small_inputs[0]), "-o", str(tmp_path / "x.png"), *_common(tiny_checkpoint, tiny_config_path), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_upscale_without_weights_says_what_to_run(tmp_path, small_inputs, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.delenv("CCSR_WEIGHTS", raising=False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    res = runner.invoke(app, ["upscale", str(small_inputs[0]), "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 1
    assert "ccsr weights download" in res.output


def test_weights_random_writes_a_loadable_official_layout_file(tmp_path, tiny_config_path):
    from ccsr.models.ccsr_v1.checkpoint import load_state_dict

    out = tmp_path / "r.safetensors"
    res = runner.invoke(app, ["weights", "random", "--config", str(tiny_config_path), "-o", str(out), "--seed", "4", "--dtype", "fp16"])
    assert res.exit_code == 0, res.output
    assert "RANDOM" in res.output
    sd = load_state_dict(out)
    assert any(k.startswith("control_model.zero_convs.0.0.") for k in sd)
    w = sd["control_model.zero_convs.0.0.weight"]
    assert str(w.dtype) == "torch.float16" and w.abs().sum() > 0  # zero convs made non-zero


def test_weights_path_reports_missing_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.delenv("CCSR_WEIGHTS", raising=False)
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    res = runner.invoke(app, ["weights", "path"])
    assert res.exit_code == 1 and "ccsr weights download" in res.output


def test_upscale_unreadable_input_is_named_before_loading(tmp_path, small_inputs, monkeypatch):
    import ccsr.models.ccsr_v1.engine as up

    def no_load(*a, **k):
        raise AssertionError("the model must not load for a bad input")

    monkeypatch.setattr(up.CCSRUpscaler, "from_checkpoint", no_load)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    res = runner.invoke(app, ["upscale", str(small_inputs[0]), str(bad), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert "notes.png: not a readable image" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_upscale_unwritable_output_format_fails_before_loading(tmp_path, small_inputs, monkeypatch):
    import ccsr.models.ccsr_v1.engine as up

    monkeypatch.setattr(up.CCSRUpscaler, "from_checkpoint", lambda *a, **k: pytest.fail("model loaded"))
    res = runner.invoke(app, ["upscale", str(small_inputs[0]), "-o", str(tmp_path / "x.bmp")])
    assert res.exit_code == 2, res.output
    assert "--output: cannot write .bmp" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_upscale_unknown_device_is_a_clear_error(tmp_path, small_inputs, tiny_checkpoint, tiny_config_path):
    res = runner.invoke(app, ["upscale", str(small_inputs[0]), "-o", str(tmp_path / "x.png"),
                              "--weights", str(tiny_checkpoint), "--config", str(tiny_config_path), "--device", "gpu"])
    assert res.exit_code == 2, res.output
    assert "--device: expected auto, cpu" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_weights_random_unsupported_config_is_a_clear_error(tmp_path, tiny_config_path):
    cfg = tmp_path / "attn.yaml"
    cfg.write_text(tiny_config_path.read_text().replace("attn_resolutions: []", "attn_resolutions: [16]"))
    res = runner.invoke(app, ["weights", "random", "--config", str(cfg), "-o", str(tmp_path / "r.safetensors")])
    assert res.exit_code == 2, res.output
    assert "attn_resolutions" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_same_named_inputs_do_not_overwrite_each_other(tmp_path):
    from ccsr.commands.upscale import _output_paths

    a, b = tmp_path / "x" / "photo.png", tmp_path / "y" / "photo.png"
    assert _output_paths([a, b], tmp_path / "out") == [tmp_path / "out" / "photo.png", tmp_path / "out" / "photo-2.png"]
