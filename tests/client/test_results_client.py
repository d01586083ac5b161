"""Results in our client and the `ccsr run` command (issue 23): the output
format asked by flag or by the -o extension, and sync_mode's inline image
saved like any other (against the real `ccsr serve` of the client tests)."""

from __future__ import annotations

import base64

import pytest
from PIL import Image
from typer.testing import CliRunner

from ccsr.cli import app
from ccsr.client import Client, ClientError


@pytest.fixture
def logo(fixtures_dir):
    return fixtures_dir / "images" / "logo-rgba.png"


def test_run_asks_the_format_of_its_output_file_and_saves_an_inline_result(server, api_key, logo, tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_SERVER", server)
    monkeypatch.setenv("CCSR_KEY", api_key)
    out = tmp_path / "logo.webp"
    res = CliRunner().invoke(app, ["run", str(logo), "-o", str(out), "--sync-mode", "--steps", "3", "--scale", "2",
                                   "--json", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert '"url": "data:image/webp;base64,' in res.output  # the inline image, in the JSON answer
    im = Image.open(out)
    assert im.format == "WEBP" and im.mode == "RGBA" and im.size == (96, 80)
    res = CliRunner().invoke(app, ["run", str(logo), "-o", str(tmp_path / "x.png"), "--output-format", "jpeg"])
    assert res.exit_code == 2 and "--output-format jpeg does not match" in res.output  # before any upload
    help_text = CliRunner().invoke(app, ["run", "--help"], terminal_width=200).output
    assert "--output-format" in help_text and "--sync-mode" in help_text


def test_the_python_client_downloads_an_inline_result(server, api_key, logo, tmp_path):
    with Client(server, api_key) as client:
        out = client.run({"image_url": str(logo), "steps": 3, "scale": 2, "sync_mode": True, "output_format": "jpeg"})
        url = out["image"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        data = client.download(url, tmp_path / "logo.jpg")
        assert data == base64.b64decode(url.split(",", 1)[1]) == (tmp_path / "logo.jpg").read_bytes()
        assert len(data) == out["image"]["file_size"] and Image.open(tmp_path / "logo.jpg").mode == "RGB"
        with pytest.raises(ClientError, match="base64"):
            client.download("data:image/png;base64,@@@")
