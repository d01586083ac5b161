"""One settings object with a section per model, built from the registry:
every old environment variable and keyword still works, a section's error
names its flat name, and a worker receives exactly its model's section."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ccsr.apps.registry import default_registry
from ccsr.settings import ENGINE_FIELDS, ModelSettings, Settings, documented

CCSR, ESRGAN = default_registry()["fal-ai/ccsr"], default_registry()["fal-ai/esrgan"]


def test_the_sections_come_from_the_registry():
    settings = Settings()
    assert list(settings.models) == default_registry().names() == ["ccsr-v1", "esrgan", "ccsr-v2"]
    assert isinstance(settings.section(CCSR), CCSR.Settings) and isinstance(settings.section(ESRGAN), ESRGAN.Settings)
    assert "weights" not in Settings.model_fields and "esrgan_weights_dir" not in Settings.model_fields


@pytest.mark.parametrize("env, value, app, field, want", [
    ("CCSR_WEIGHTS", "/w.safetensors", CCSR, "weights", "/w.safetensors"),
    ("CCSR_CONFIG", "/c.yaml", CCSR, "config", "/c.yaml"),
    ("CCSR_TILE_BATCH_SIZE", "7", CCSR, "tile_batch_size", 7),
    ("CCSR_COMPILE", "default", CCSR, "compile", "default"),
    ("CCSR_ESRGAN_WEIGHTS_DIR", "/esr", ESRGAN, "weights_dir", "/esr"),
])
def test_old_environment_variables_reach_their_model_section(monkeypatch, env, value, app, field, want):
    monkeypatch.setenv(env, value)
    got = getattr(Settings().section(app), field)
    assert (str(got) if isinstance(want, str) else got) == want


def test_flat_keywords_and_models_dicts_set_a_section(tmp_path):
    flat = Settings(weights=tmp_path / "a", esrgan_weights_dir=tmp_path / "b", tile_batch_size=2)
    assert flat.section(CCSR).weights == tmp_path / "a" and flat.section(CCSR).tile_batch_size == 2
    assert flat.section(ESRGAN).weights_dir == tmp_path / "b"
    nested = Settings(models={"esrgan": {"weights_dir": tmp_path / "c"}})
    assert nested.section(ESRGAN).weights_dir == tmp_path / "c"


def test_a_section_error_names_the_flat_name(monkeypatch):
    with pytest.raises(ValidationError) as err:
        Settings(compile="fastest")
    assert err.value.errors()[0]["loc"] == ("compile",)
    monkeypatch.setenv("CCSR_TILE_BATCH_SIZE", "0")
    with pytest.raises(ValidationError) as err:
        Settings()
    assert err.value.errors()[0]["loc"] == ("tile_batch_size",) and "greater than or equal to 1" in str(err.value)


def test_flat_names_are_unique_and_documented():
    docs = documented()
    names = [d.name for d in docs]
    assert len(names) == len(set(names)), "two options share a flat name (env var)"
    assert all(d.field.description for d in docs), [d.name for d in docs if not d.field.description]
    assert all(d.env == "CCSR_" + d.name.upper() for d in docs)


def test_a_section_prefix_outside_ccsr_is_refused():
    from pydantic_settings import SettingsConfigDict

    class Stray(ModelSettings):
        model_config = SettingsConfigDict(env_prefix="OTHER_")
        x: int = 1

    with pytest.raises(ValueError, match="env_prefix must start with CCSR_"):
        Stray.flat_name("x")


def test_a_worker_receives_the_engine_options_and_its_own_section_only(tmp_path):
    settings = Settings(weights=tmp_path / "w.safetensors", esrgan_weights_dir=tmp_path / "e", device="cpu", batch_size=3)
    ccsr = CCSR.worker_settings(settings)
    assert set(ccsr) == {*ENGINE_FIELDS, "section"} and ccsr["device"] == "cpu" and ccsr["batch_size"] == 3
    assert ccsr["section"]["weights"] == str(tmp_path / "w.safetensors") and "weights_dir" not in ccsr["section"]
    esrgan = ESRGAN.worker_settings(settings)
    assert esrgan["section"] == {"weights_dir": str(tmp_path / "e")}
    # The worker reads its section back typed, without the environment (the server's values win).
    assert CCSR.section(ccsr) == settings.section(CCSR)
