"""What the server says about its weights comes from each served app's own
status: CCSR's from the checkpoint's marker, read only when CCSR is served."""

from __future__ import annotations

import logging

import httpx

from ccsr.apps.registry import default_registry
from ccsr.executors.thread import ThreadExecutor
from ccsr.models.ccsr_v1.checkpoint import load_state_dict, save_state_dict
from ccsr.service import weights_status as ws
from ccsr.service.app import create_app
from ccsr.settings import Settings
from ccsr.testing import FakeEngine

from svc_helpers import serve_app

CCSR = default_registry()["fal-ai/ccsr"]


def test_random_plain_and_missing_weights(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("CCSR_WEIGHTS", raising=False)
    status = ws.weights_status(CCSR, Settings(weights=tiny_checkpoint, data_dir=tmp_path))
    assert (status.weights, status.random) == (str(tiny_checkpoint), True)
    with caplog.at_level(logging.INFO, logger="ccsr.service"):
        ws.announce({CCSR.app_id: status})
    assert "RANDOM WEIGHTS: fal-ai/ccsr" in caplog.text and "ccsr weights download" in caplog.text

    plain = save_state_dict(load_state_dict(tiny_checkpoint), tmp_path / "plain.safetensors")  # same tensors, no marker
    status = ws.weights_status(CCSR, Settings(weights=plain, data_dir=tmp_path))
    assert status.random is False
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ccsr.service"):
        ws.announce({CCSR.app_id: status})
    assert "RANDOM" not in caplog.text and str(plain) in caplog.text

    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    status = ws.weights_status(CCSR, Settings(data_dir=tmp_path))
    assert (status.weights, status.random) == (None, None)


def test_readyz_combines_the_served_apps(tiny_checkpoint):
    random, real, unknown = ws.WeightsStatus("a", True), ws.WeightsStatus("b", False), ws.WeightsStatus()
    assert ws.random_weights({"x": random, "y": real}) is True
    assert ws.random_weights({"x": real, "y": unknown, "z": None}) is False
    assert ws.random_weights({"x": unknown, "z": None}) is None


def _serve(tmp_path, **settings):
    """A server with in-process executors (no worker processes): only the status is under test."""
    settings = Settings(data_dir=tmp_path, **settings)
    apps = [a.strip() for a in (settings.apps or "fal-ai/ccsr,fal-ai/esrgan").split(",")]
    return create_app(settings, executors={a: ThreadExecutor(FakeEngine(0.0)) for a in apps})


def test_a_server_serving_only_esrgan_never_reads_the_ccsr_weights(tiny_checkpoint, tmp_path, monkeypatch):
    import ccsr.models.ccsr_v1.weights as ccsr_weights

    def no_read(*a, **k):
        raise AssertionError("the CCSR weights were read by a server that does not serve CCSR")

    monkeypatch.setattr(ccsr_weights, "resolve", no_read)
    monkeypatch.setattr(ccsr_weights, "is_random", no_read)
    app = _serve(tmp_path, apps="fal-ai/esrgan", weights=tiny_checkpoint)
    with serve_app(app) as base:
        ready = httpx.get(f"{base}/readyz").json()
        apps = httpx.get(f"{base}/api/apps").json()["apps"]
    assert ready["random_weights"] is False  # Real-ESRGAN's own status: real weights
    assert [(a["id"], a["random_weights"]) for a in apps] == [("fal-ai/esrgan", False)]


def test_random_ccsr_weights_show_on_readyz_and_on_their_app_only(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("CCSR_WEIGHTS", raising=False)
    app = _serve(tmp_path, weights=tiny_checkpoint)
    with caplog.at_level(logging.INFO, logger="ccsr.service"), serve_app(app) as base:
        ready = httpx.get(f"{base}/readyz").json()
        apps = {a["id"]: a["random_weights"] for a in httpx.get(f"{base}/api/apps").json()["apps"]}
    assert ready["random_weights"] is True
    assert apps == {"fal-ai/ccsr": True, "fal-ai/esrgan": False}
    assert "RANDOM WEIGHTS: fal-ai/ccsr runs" in caplog.text  # said at start-up
