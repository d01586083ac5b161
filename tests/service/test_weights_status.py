"""What the server says about its weights comes from the checkpoint's marker."""

from __future__ import annotations

import logging

from ccsr.models.ccsr_v1.checkpoint import load_state_dict, save_state_dict
from ccsr.service.weights_status import announce, weights_status
from ccsr.settings import Settings


def test_random_plain_and_missing_weights(tiny_checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("CCSR_WEIGHTS", raising=False)
    status = weights_status(Settings(weights=tiny_checkpoint, data_dir=tmp_path))
    assert status == {"weights": str(tiny_checkpoint), "random_weights": True}
    with caplog.at_level(logging.INFO, logger="ccsr.service"):
        announce(status)
    assert "RANDOM WEIGHTS" in caplog.text

    plain = save_state_dict(load_state_dict(tiny_checkpoint), tmp_path / "plain.safetensors")  # same tensors, no marker
    status = weights_status(Settings(weights=plain, data_dir=tmp_path))
    assert status["random_weights"] is False
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ccsr.service"):
        announce(status)
    assert "RANDOM" not in caplog.text

    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert weights_status(Settings(data_dir=tmp_path)) == {"weights": None, "random_weights": None}
