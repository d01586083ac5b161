"""`ccsr upscale --model ccsr-v2 --weights DIR` with every v2 flag, errors
naming the flag before the model loads, and `ccsr weights random --model
ccsr-v2` writing a folder the engine loads."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from ccsr.cli import app
from ccsr.models.ccsr_v2 import weights

runner = CliRunner()


def _photo(tmp_path, fixtures_dir):
    src = tmp_path / "in.png"
    Image.open(fixtures_dir / "images" / "chelsea.png").convert("RGB").crop((150, 50, 190, 82)).save(src)
    return src


def test_upscale_with_every_v2_flag(v2_weights, tmp_path, fixtures_dir):
    out = tmp_path / "out.png"
    args = ["upscale", str(_photo(tmp_path, fixtures_dir)), "-o", str(out), "--model", "ccsr-v2", "--weights", str(v2_weights),
            "--scale", "2", "--process-size", "64", "--steps", "6", "--t-max", "0.6667", "--t-min", "0.5",
            "--guidance-scale", "4.5", "--prompt", "a cat", "--negative-prompt", "blur", "--start-point", "noise",
            "--color-fix-type", "wavelet", "--seed", "11", "--tile-diffusion", "gaussian", "--tile-diffusion-size", "64",
            "--tile-diffusion-stride", "32", "--tile-vae", "--tile-vae-decoder-size", "16", "--device", "cpu",
            "--dtype", "fp32"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (80, 64) and "seed=11" in res.output and "RANDOM" in res.output
    again = tmp_path / "again.png"
    assert runner.invoke(app, [*args[:3], str(again), *args[4:]]).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_v2_errors_name_the_flag_before_loading(v2_weights, tmp_path, fixtures_dir):
    photo = str(_photo(tmp_path, fixtures_dir))
    base = ["upscale", photo, "-o", str(tmp_path / "o.png"), "--model", "ccsr-v2", "--weights", str(v2_weights)]
    for extra, words in ((["--t-min", "0.5"], "--t-min: must be 0 with steps=1"),
                         (["--tile-vae-encoder-size", "512"], "--tile-vae-encoder-size: not a field of ccsr-v2"),
                         (["--tile-diffusion", "mix"], "--tile-diffusion"),
                         (["--scale", "1.5"], "--scale")):
        res = runner.invoke(app, [*base, *extra])
        assert res.exit_code == 2 and words in res.output, (extra, res.output)
    res = runner.invoke(app, ["upscale", photo, "--model", "ccsr-v2", "--weights", str(tmp_path / "none")])
    assert res.exit_code == 1 and "ccsr weights download --model ccsr-v2" in res.output


def test_weights_random_writes_a_loadable_folder(tmp_path):
    res = runner.invoke(app, ["weights", "random", "--model", "ccsr-v2", "-o", str(tmp_path / "w"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "RANDOM tiny CCSR-v2 weights" in res.output and weights.is_random(tmp_path / "w")
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    up = V2Upscaler.from_folder(tmp_path / "w", device="cpu", dtype="fp32")
    assert up(Image.new("RGB", (16, 16), (90, 120, 200)), seed=0, process_size=64).image.size == (64, 64)
    bad = runner.invoke(app, ["weights", "random", "--model", "ccsr-v2", "-o", str(tmp_path / "x"), "--arch", "huge"])
    assert bad.exit_code == 2 and "--arch" in bad.output


def test_weights_convert_writes_a_copy_and_names_bad_flags(v2_weights, tmp_path):
    res = runner.invoke(app, ["weights", "convert", str(v2_weights), "-o", str(tmp_path / "bf16"), "--dtype", "bf16",
                              "--model", "ccsr-v2"])
    assert res.exit_code == 0, res.output
    assert "--dtype bf16" in res.output and (tmp_path / "bf16" / "vae" / "config.json").is_file()
    again = runner.invoke(app, ["weights", "convert", str(v2_weights), "-o", str(tmp_path / "bf16"), "--dtype", "bf16"])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(app, ["weights", "convert", str(v2_weights), "-o", str(tmp_path / "x"), "--dtype", "fp8"])
    assert bad.exit_code == 2 and "--dtype" in bad.output
    other = runner.invoke(app, ["weights", "convert", str(v2_weights), "-o", str(tmp_path / "y"), "--dtype", "bf16",
                                "--model", "esrgan"])
    assert other.exit_code == 2 and "--model" in other.output


# Runs the `ccsr` entry point with an atexit hook that prints; argv from the command line.
ENTRY = """
import atexit, sys
atexit.register(lambda: print("TEARDOWN", flush=True))
sys.argv = ["ccsr", *sys.argv[1:]]
from ccsr.cli import main
main()
"""


def test_the_entry_point_skips_the_teardown_after_a_model_ran(v2_weights, tmp_path, fixtures_dir):
    """Once `ccsr upscale` has run a model and written its files, the process
    ends without the interpreter's teardown (seconds of freeing tensors for a
    full-size model); what it printed still arrives, and its exit code. Other
    commands, and upscale failing before a model loads, end normally."""
    import subprocess
    import sys

    def entry(*args):
        return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=300)

    out = tmp_path / "out.png"
    ran = entry("upscale", str(_photo(tmp_path, fixtures_dir)), "-o", str(out), "--model", "ccsr-v2",
                "--weights", str(v2_weights), "--device", "cpu", "--process-size", "64", "--seed", "1")
    assert ran.returncode == 0, ran.stderr
    assert out.is_file() and "->" in ran.stdout and "RANDOM" in ran.stderr  # flushed before the exit
    assert "TEARDOWN" not in ran.stdout
    bad = entry("upscale", str(_photo(tmp_path, fixtures_dir)), "--model", "ccsr-v2", "--scale", "9")
    assert bad.returncode == 2 and "TEARDOWN" in bad.stdout
    listed = entry("weights", "--help")
    assert listed.returncode == 0 and "TEARDOWN" in listed.stdout
