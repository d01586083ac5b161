"""`ccsr run|submit|status|result|cancel` against a real server (tiny model)."""

from __future__ import annotations

import pytest
from PIL import Image
from typer.testing import CliRunner

from ccsr.cli import app


@pytest.fixture
def ccsr(server, api_key, monkeypatch):
    """Run a `ccsr` command against the test server (server and key from the env vars)."""
    monkeypatch.setenv("CCSR_SERVER", server)
    monkeypatch.setenv("CCSR_KEY", api_key)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return run


def test_run_uploads_follows_and_saves(ccsr, photo, tmp_path):
    out = tmp_path / "big.png"
    res = ccsr("run", photo, "-o", out, "--steps", "3", "--scale", "2", "--seed", "11", "--color-fix-type", "wavelet", "--logs")
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (128, 128)
    assert "seed 11" in res.output and "128x128" in res.output
    assert "step 2/2" in res.output  # --logs prints the log lines beside the bar


def test_submit_status_result_cancel(ccsr, photo, tmp_path):
    res = ccsr("submit", photo, "--steps", "3")
    assert res.exit_code == 0, res.output
    rid = res.output.strip().splitlines()[-1]
    res = ccsr("status", rid, "--follow")
    assert res.exit_code == 0, res.output
    assert "COMPLETED" in res.output
    res = ccsr("status", rid, "--logs")
    assert "COMPLETED" in res.output and "step " in res.output
    dest = tmp_path / "r.png"
    res = ccsr("result", rid, "-o", dest)
    assert res.exit_code == 0, res.output
    assert '"seed"' in res.output and Image.open(dest).size == (128, 128)
    res = ccsr("cancel", rid)
    assert res.exit_code == 1 and "ALREADY_COMPLETED" in res.output


def test_bad_values_are_reported_by_flag(ccsr, photo):
    res = ccsr("run", photo, "--scale", "99")  # caught before any upload
    assert res.exit_code == 2 and "--scale" in res.output and "16" in res.output
    res = ccsr("run", photo, "--t-min", "0.9", "--t-max", "0.5", "--quiet")  # a cross-field rule: the server answers 422
    assert res.exit_code == 1 and "--t-min" in res.output
    res = ccsr("run", "no/such/file.png")
    assert res.exit_code == 2 and "no such file" in res.output


def test_wrong_key_and_unknown_request(ccsr, server):
    res = ccsr("status", "does-not-exist")
    assert res.exit_code == 1 and "404" in res.output
    res = ccsr("status", "x", "--key", "wrong", "--server", server)
    assert res.exit_code == 1 and "401" in res.output and "CCSR_KEY" in res.output


def test_another_app_with_its_own_fields(ccsr, photo, tmp_path, monkeypatch):
    """--app picks the app; its fields are flags (Real-ESRGAN's own --model, its
    output format), the default file name follows the result's format, and a
    field of another app is refused before anything is sent."""
    monkeypatch.chdir(tmp_path)
    res = ccsr("run", photo, "--app", "fal-ai/esrgan", "--model", "realesr-animevideov3", "--scale", "2",
               "--output-format", "jpeg", "--quiet")
    assert res.exit_code == 0, res.output
    with Image.open(tmp_path / "chelsea64_x2.jpg") as im:
        assert im.format == "JPEG" and im.size == (128, 128)
    res = ccsr("submit", photo, "--app", "fal-ai/esrgan", "--model", "realesr-animevideov3")
    assert res.exit_code == 0, res.output
    rid = res.output.strip().splitlines()[-1]
    res = ccsr("status", rid, "--app", "fal-ai/esrgan", "--follow")
    assert res.exit_code == 0 and "COMPLETED" in res.output, res.output
    res = ccsr("run", photo, "--app", "fal-ai/esrgan", "--steps", "3")
    assert res.exit_code == 2 and "--steps: not a field of fal-ai/esrgan (it belongs to fal-ai/ccsr" in res.output
    res = ccsr("run", photo, "--app", "fal-ai/esrgan", "--scale", "99")
    assert res.exit_code == 2 and "--scale" in res.output and "16" in res.output
    res = ccsr("run", photo, "--app", "fal-ai/nope")
    assert res.exit_code == 2 and "--app: unknown app 'fal-ai/nope'" in res.output
