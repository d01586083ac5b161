"""Settings and flags of the Ray executor: checked at start-up with the
option's name, and ``ray`` imported only when the Ray executor is chosen."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from ccsr.cli import app
from ccsr.settings import check_actor_options
from ccsr.settings import Settings


def test_actor_options_merge_over_one_gpu():
    assert check_actor_options({}) == {"num_gpus": 1}
    opts = {"num_gpus": 0, "num_cpus": 1, "resources": {"ccsr_worker": 1}}
    assert check_actor_options(opts) == opts


@pytest.mark.parametrize(
    "options, words",
    [
        ({"max_restarts": 3}, ["max_restarts", "scheduler owns retries"]),
        ({"num_gpus": -1}, ["num_gpus", ">= 0"]),
        ({"num_cpus": "two"}, ["num_cpus"]),
        ({"resources": {"ccsr_worker": 0}}, ["resources", "> 0"]),
    ],
)
def test_bad_actor_options_name_the_field(options, words):
    with pytest.raises(ValidationError) as err:
        Settings(ray_actor_options=options)
    text = str(err.value)
    assert "ray_actor_options" in text and all(w in text for w in words), text


def test_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("CCSR_EXECUTOR", "ray")
    monkeypatch.setenv("CCSR_RAY_ADDRESS", "auto")
    monkeypatch.setenv("CCSR_RAY_WORKERS", "3")
    monkeypatch.setenv("CCSR_RAY_ACTOR_OPTIONS", '{"num_gpus": 0, "resources": {"ccsr_worker": 1}}')
    s = Settings()
    assert (s.executor, s.ray_address, s.ray_workers) == ("ray", "auto", 3)
    assert s.ray_actor_options == {"num_gpus": 0, "resources": {"ccsr_worker": 1}}
    monkeypatch.setenv("CCSR_EXECUTOR", "slurm")
    with pytest.raises(ValidationError, match="executor"):
        Settings()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--ray-actor-options", "{not json"], ["--ray-actor-options", "not valid JSON"]),
        (["--ray-actor-options", json.dumps({"max_task_retries": 2})], ["ray_actor_options", "max_task_retries"]),
        (["--ray-workers", "0"], ["ray_workers"]),
        (["--executor", "slurm"], ["executor"]),
        (["--ray-address", "ray://10.0.0.1:10001"], ["ray_address", "not supported", "host:6379"]),
    ],
)
def test_serve_refuses_bad_flags_before_starting(tmp_path, args, words):
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path), "--executor", "ray", *args])
    assert result.exit_code == 2, result.output
    assert all(w in result.output for w in words), result.output
    assert "Traceback" not in result.output


def _imports_ray(tmp_path, executor: str) -> bool:
    code = (
        "import sys\n"
        "from ccsr.service.app import create_app\n"
        "from ccsr.settings import Settings\n"
        f"create_app(Settings(data_dir={str(tmp_path)!r}, executor={executor!r}))\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def test_the_server_process_never_imports_ray(tmp_path):
    """Not even with executor=ray: Ray lives in the driver process the Ray
    executor starts (a process joined to Ray is Ray's to end when the head is
    lost; see ccsr.executors.ray_driver)."""
    assert _imports_ray(tmp_path / "local", "local") is False
    assert _imports_ray(tmp_path / "ray", "ray") is False


@pytest.mark.parametrize("bad, words", [
    ({"esrgan_ray_resources": {"GPU": 1}}, ["esrgan_ray_resources", "ray_num_gpus"]),
    ({"esrgan_ray_resources": {"x": 0}}, ["esrgan_ray_resources", "> 0"]),
    ({"ray_num_gpus": -0.5}, ["ray_num_gpus"]),
    ({"esrgan_ray_actors": 0}, ["esrgan_ray_actors"]),
])
def test_bad_per_app_ray_settings_name_the_setting(bad, words):
    with pytest.raises(ValidationError) as err:
        Settings(**bad)
    assert all(w in str(err.value) for w in words), str(err.value)
