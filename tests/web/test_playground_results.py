"""The playground and results (issue 23): the output fields in the form of
every app, a transparent logo run as webp with sync_mode, the inline image
shown and downloadable under its name, and a history that keeps no copy of
it. Real Chromium, real server, fake engine."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

from PIL import Image

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "service")]

from ccsr.executors.thread import ThreadExecutor  # noqa: E402
from ccsr.service.app import create_app  # noqa: E402
from ccsr.settings import Settings  # noqa: E402
from ccsr.testing import FakeEngine  # noqa: E402
from svc_helpers import serve_app  # noqa: E402

READY = "body[data-ready=true]"


def test_a_transparent_logo_as_inline_webp(page, tmp_path):
    with serve_app(create_app(Settings(data_dir=tmp_path / "data"), executor=ThreadExecutor(FakeEngine(0.0)))) as base:
        _inline_webp(page, base, tmp_path)


def _inline_webp(page, base: str, tmp_path: Path) -> None:
    page.goto(base + "/")
    page.wait_for_selector(READY)
    options = page.locator("[name=output_format] option").evaluate_all("els => els.map(e => e.value)")
    assert options == ["png", "jpeg", "webp"] and page.locator("[name=sync_mode]").count() == 1
    page.set_input_files("#image-file", str(TESTS / "fixtures" / "images" / "logo-rgba.png"))
    page.fill("[name=steps]", "3")
    page.select_option("[name=output_format]", "webp")
    page.check("[name=sync_mode]")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30000)
    assert page.inner_text("#result-size").replace(" ", "") == "96×80"
    href = page.get_attribute("#download", "href")
    name = page.get_attribute("#download", "download")
    assert href.startswith("data:image/webp;base64,") and name.endswith(".webp")
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "dl.webp"
    info.value.save_as(saved)
    assert saved.read_bytes() == base64.b64decode(href.split(",", 1)[1])
    im = Image.open(io.BytesIO(saved.read_bytes()))
    assert im.format == "WEBP" and im.mode == "RGBA"

    history = json.loads(page.evaluate("localStorage.getItem('ccsr.history.v1')"))
    assert history[0]["result"]["inline"] is True and history[0]["result"]["url"] is None  # no copy here either
    assert "base64" not in json.dumps(history)
    page.locator("#history li").first.click()
    page.wait_for_function("document.querySelector('#status-text').innerText.includes('sync_mode')")
    assert "not kept" in page.inner_text("#status-text")
    assert page.js_errors == []
