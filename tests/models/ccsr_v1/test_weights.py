"""Weights resolution: explicit path, CCSR_WEIGHTS, then the Hugging Face cache."""

from __future__ import annotations

import pytest

from ccsr.models.ccsr_v1 import weights
from ccsr.errors import WeightsNotFound


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("CCSR_WEIGHTS", raising=False)
    return tmp_path / "hub"


def _fake_cached_file(cache):
    repo = cache / ("models--" + weights.REPO_ID.replace("/", "--"))
    rev = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    f = repo / "snapshots" / rev / weights.FILENAME
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x")
    return f


def test_nothing_found_names_the_command(cache):
    with pytest.raises(WeightsNotFound) as exc:
        weights.resolve()
    assert "ccsr weights download" in str(exc.value) and "--weights" in str(exc.value)


def test_cache_is_found(cache):
    f = _fake_cached_file(cache)
    assert weights.resolve() == f


def test_env_var_overrides_cache(cache, tmp_path, monkeypatch):
    _fake_cached_file(cache)
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"y")
    monkeypatch.setenv("CCSR_WEIGHTS", str(mine))
    assert weights.resolve() == mine


def test_explicit_path_overrides_env(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CCSR_WEIGHTS", str(tmp_path / "env.safetensors"))
    mine = tmp_path / "explicit.safetensors"
    mine.write_bytes(b"z")
    assert weights.resolve(mine) == mine


def test_missing_explicit_file_is_clear(cache, tmp_path):
    with pytest.raises(WeightsNotFound) as exc:
        weights.resolve(tmp_path / "nope.safetensors")
    assert "--weights" in str(exc.value) and "does not exist" in str(exc.value)


def test_download_without_network_is_one_clear_message(cache, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)  # no test touches the network
    with pytest.raises(WeightsNotFound) as exc:
        weights.download()
    assert "ccsr weights download" in str(exc.value)
