"""The ``apps`` setting picks which built-in apps a server serves."""

import pytest

from ccsr.service.app import create_app
from ccsr.settings import Settings


def test_apps_setting_limits_the_registry(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, apps="fal-ai/esrgan"))
    assert app.state.registry.ids() == ["fal-ai/esrgan"] and list(app.state.executors) == ["fal-ai/esrgan"]
    assert "/queue/fal-ai/ccsr" not in {getattr(r, "path", "") for r in app.routes}


def test_default_serves_every_builtin_app(tmp_path):
    assert create_app(Settings(data_dir=tmp_path)).state.registry.ids() == ["fal-ai/ccsr", "fal-ai/esrgan"]


def test_unknown_app_is_named(tmp_path):
    with pytest.raises(ValueError, match="apps: unknown app id 'fal-ai/nope'"):
        create_app(Settings(data_dir=tmp_path, apps="fal-ai/ccsr,fal-ai/nope"))
