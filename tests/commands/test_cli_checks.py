"""`ccsr upscale` finds every mistake it can before the model loads: exit 2, the flag named.

Tests that must not reach the model replace ``CCSRUpscaler.from_checkpoint``
with a function that fails the test: loading is exactly what they prove
does not happen.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from ccsr.cli import app

runner = CliRunner()


@pytest.fixture()
def photo_dir(tmp_path: Path, fixtures_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        with Image.open(fixtures_dir / "images" / name) as im:
            im.convert("RGB").resize((40, 24)).save(folder / name)
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


@pytest.fixture()
def no_model(monkeypatch):
    import ccsr.models.ccsr_v1.engine as up

    monkeypatch.setattr(up.CCSRUpscaler, "from_checkpoint", lambda *a, **k: pytest.fail("the model loaded"))


def _invoke(*args: str):
    return runner.invoke(app, ["upscale", *args])


def test_output_suffix_that_is_not_an_image_format_is_refused(tmp_path, photo_dir, tiny_checkpoint, no_model):
    out = tmp_path / "out.gif"
    res = _invoke(str(photo_dir / "chelsea.png"), "-o", str(out), "--weights", str(tiny_checkpoint))
    assert res.exit_code == 2, res.output
    assert "--output: cannot write .gif files" in res.output
    assert not out.exists()  # no folder named out.gif either


def test_unwritable_output_is_found_before_loading(tmp_path, photo_dir, tiny_checkpoint, no_model):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where a folder would have to be")
    res = _invoke(str(photo_dir / "chelsea.png"), "-o", str(blocker / "out.png"), "--weights", str(tiny_checkpoint))
    assert res.exit_code == 2, res.output
    assert "--output: cannot write into" in res.output and "Traceback" not in res.output


def test_several_inputs_need_a_folder(tmp_path, photo_dir, tiny_checkpoint, no_model):
    res = _invoke(str(photo_dir), "-o", str(tmp_path / "one.png"), "--weights", str(tiny_checkpoint))
    assert res.exit_code == 2, res.output
    assert "--output: 2 inputs need a folder" in res.output


def test_missing_input_and_empty_glob_are_usage_errors(tmp_path, no_model):
    res = _invoke(str(tmp_path / "nope.png"))
    assert res.exit_code == 2 and "INPUT: " in res.output and "does not exist" in res.output
    res = _invoke(str(tmp_path / "*.jpg"))
    assert res.exit_code == 2 and "no file matches" in res.output


def test_pixel_limit_names_the_flag_and_the_input(tmp_path, photo_dir, tiny_checkpoint, no_model, monkeypatch):
    monkeypatch.setenv("CCSR_MAX_OUTPUT_PIXELS", "10000")
    res = _invoke(str(photo_dir / "coffee.png"), "-o", str(tmp_path / "x.png"), "--scale", "4", "--weights", str(tiny_checkpoint))
    assert res.exit_code == 2, res.output
    assert "--scale: output 160x96" in res.output and "coffee.png" in res.output


def test_folders_and_globs_are_inputs_and_random_weights_are_said(tmp_path, photo_dir, tiny_checkpoint, tiny_config_path):
    """A real run on the tiny random model: a folder (its images, not the .txt)
    and a quoted glob expanded by the command itself; the random weights are
    said before the work and on every summary line."""
    other = tmp_path / "more"
    other.mkdir()
    (photo_dir / "chelsea.png").rename(other / "chelsea.png")
    out = tmp_path / "results"
    res = _invoke(str(photo_dir), str(other / "chel*.png"), "-o", str(out), "--weights", str(tiny_checkpoint),
                  "--config", str(tiny_config_path), "--steps", "3", "--device", "cpu", "--seed", "1", "--scale", "1",
                  # tiles of 64 px: the diffusion image stays small (a plain run enlarges to 512 px)
                  "--tile-diffusion", "gaussian", "--tile-diffusion-size", "64", "--tile-diffusion-stride", "64")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "coffee.png"]
    with Image.open(out / "coffee.png") as im:
        assert im.size == (40, 24)
    assert "holds RANDOM weights" in res.output  # before the work
    assert res.output.count("seed=1, RANDOM weights)") == 2  # the summary line of each file
    assert "done with RANDOM weights" in res.output


def test_half_precision_on_an_emulating_cpu_warns(tmp_path, photo_dir, tiny_checkpoint, monkeypatch):
    """The CPU's flags are replaced by an empty set (the rule, whatever CPU runs
    the test), and loading by a stop: the warning comes before it."""
    import ccsr.engine.device as device
    import ccsr.models.ccsr_v1.engine as up
    from ccsr.errors import CCSRError

    def stop(*a, **k):
        raise CCSRError("stopped before loading")

    monkeypatch.setattr(up.CCSRUpscaler, "from_checkpoint", stop)
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset())
    monkeypatch.setattr(device.platform, "system", lambda: "Linux")
    res = _invoke(str(photo_dir / "coffee.png"), "-o", str(tmp_path / "c.png"), "--weights", str(tiny_checkpoint),
                  "--device", "cpu", "--dtype", "fp16")
    assert "warning: dtype fp16 on this CPU: it has no native fp16 arithmetic" in res.output
    assert res.output.count("no native fp16") == 1
    assert "stopped before loading" in res.output
