"""Adding a model is one folder and one registry line (docs/design.md, "How
to add a model"), followed literally: a throw-away model package is written
into a temporary folder, put on sys.path, and added to the registry's
BUILTIN with one line. With no other change it gets its settings section
(from its own environment variables), its readiness, its worker process
(which receives its section), the queue over real HTTP, the client command's
``--app``, ``ccsr upscale --model``, and its own command."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from ccsr.apps import registry
from ccsr.settings import Settings

from svc_helpers import png_data_uri, serve_app, wait_status

APP_ID = "ccsr-tests/echo"

# The folder of the model: src/ccsr/models/echo/ in a real checkout, here a package "echo_model".
FILES = {
    "__init__.py": "",
    # 1. Its parameters: one definition for the API, the CLI flags and the playground.
    "params.py": '''
        from typing import Literal

        from pydantic import BaseModel, ConfigDict, Field


        class EchoParams(BaseModel):
            model_config = ConfigDict(extra="forbid")

            border: int = Field(1, ge=0, le=16, description="Border added around the image, in pixels.")
            color: Literal["black", "white"] = Field("black", description="Colour of the border.")
            steps: int = Field(2, ge=1, le=50, description="Fake progress steps.")
    ''',
    # 2. Its settings section: environment variables CCSR_ECHO_<FIELD>, a flag of serve/upscale.
    "settings.py": '''
        from pydantic import Field
        from pydantic_settings import SettingsConfigDict

        from ccsr.settings import ModelSettings


        class EchoSettings(ModelSettings):
            model_config = SettingsConfigDict(env_prefix="CCSR_ECHO_")

            greeting: str = Field("hello", json_schema_extra={"cli": {}}, description="Said in every result.")
    ''',
    # 3. Its engine (a real model imports torch here, never in app.py's module body).
    "engine.py": '''
        import os

        from PIL import ImageOps


        class EchoEngine:
            def __init__(self, greeting, device):
                self.greeting, self.device, self.pid = greeting, device, os.getpid()

            def __call__(self, image, params, progress):
                for i in range(params.steps):
                    progress(i + 1, params.steps)
                return ImageOps.expand(image, border=params.border, fill=params.color)
    ''',
    # 4. The app: the seam the service, the queue, the workers and the CLI use.
    "app.py": '''
        from pydantic import BaseModel

        from ccsr.apps.base import App, Image, Produced, WeightsStatus, image_input_model
        from echo_model.params import EchoParams
        from echo_model.settings import EchoSettings


        class EchoOutput(BaseModel):
            image: Image
            greeting: str
            pid: int


        class EchoApp(App):
            app_id = "ccsr-tests/echo"
            name = "echo"
            title = "Echo (a throw-away test model)"
            Params = EchoParams
            Input = image_input_model("EchoInput", EchoParams, "Input of ccsr-tests/echo.", "https://example.com/a.png")
            Output = EchoOutput
            Settings = EchoSettings

            def weights_status(self, section):
                return WeightsStatus(weights="(none)", random=True, advice="It is a test model.")

            def register_cli(self, cli):
                from echo_model.cli import register

                register(cli)

            def load_engine(self, settings, device):
                from echo_model.engine import EchoEngine

                return EchoEngine(self.section(settings).greeting, device)

            def run(self, engine, image, params, *, progress, cancel, log):
                out = engine(image, params, progress)
                fields = {"width": out.width, "height": out.height, "greeting": engine.greeting, "pid": engine.pid}
                return Produced.of_image(out, fields)  # the output stage writes the file the request asks for

            def render(self, fields, file):
                return {"image": {**file.model_dump(), "width": fields["width"], "height": fields["height"]},
                        "greeting": fields["greeting"], "pid": fields["pid"]}
    ''',
    # 5. Its own command (optional).
    "cli.py": '''
        import typer

        from ccsr.settings import Settings


        def register(cli):
            group = typer.Typer(help="The echo test model.")

            @group.command("hello")
            def hello():
                """Print the configured greeting."""
                typer.echo(Settings().models["echo"].greeting)

            cli.add_typer(group, name="echo")
    ''',
}


@pytest.fixture
def echo_model(tmp_path, monkeypatch):
    """The folder, and the one registry line."""
    package = tmp_path / "pkgs" / "echo_model"
    package.mkdir(parents=True)
    for name, source in FILES.items():
        (package / name).write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.setattr(registry, "BUILTIN", (*registry.BUILTIN, "echo_model.app:EchoApp"))
    monkeypatch.setenv("CCSR_ECHO_GREETING", "hi from the environment")
    return package


def _png(path: Path, size=(6, 4)) -> Path:
    Image.new("RGB", size, (200, 10, 10)).save(path)
    return path


def test_a_new_model_is_served_through_the_queue_by_its_own_worker(echo_model, tmp_path, monkeypatch):
    from ccsr.cli import build
    from ccsr.service.app import create_app

    # The flat name of its setting is its environment variable's: CCSR_ECHO_GREETING -> echo_greeting.
    settings = Settings(data_dir=tmp_path / "data", apps=APP_ID, echo_greeting="hi from the server")
    assert Settings().models["echo"].greeting == "hi from the environment"
    app = create_app(settings)  # no executor given: its default, a spawned worker process
    runner = CliRunner()
    with serve_app(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        deadline = time.time() + 60
        while (ready := client.get("/readyz")).status_code != 200:
            assert time.time() < deadline, ready.json()
            time.sleep(0.1)
        assert ready.json()["random_weights"] is True  # its own status, nobody else's
        assert [(a["id"], a["random_weights"]) for a in client.get("/api/apps").json()["apps"]] == [(APP_ID, True)]

        image_url = png_data_uri(6, 4)
        sub = client.post(f"/queue/{APP_ID}", json={"image_url": image_url, "border": 2, "color": "white"}).json()
        done = wait_status(client, sub["status_url"], "COMPLETED", logs="1")
        assert not done.get("error"), done
        out = client.get(sub["response_url"]).json()
        # The section reached the worker process, with the server's value.
        assert out["greeting"] == "hi from the server" and out["pid"] != os.getpid()
        assert (out["image"]["width"], out["image"]["height"]) == (10, 8)
        assert client.post(f"/queue/{APP_ID}", json={"image_url": image_url, "color": "red"}).status_code == 422

        # The client command: --app picks it, its fields are flags, another model's are refused.
        cli = build()
        monkeypatch.setenv("CCSR_SERVER", base)
        dest = tmp_path / "remote.png"
        res = runner.invoke(cli, ["run", str(_png(tmp_path / "in.png")), "--app", APP_ID, "--border", "3", "-o", str(dest)])
        assert res.exit_code == 0, res.output
        assert Image.open(dest).size == (12, 10) and "greeting hi from the server" in res.output
        res = runner.invoke(cli, ["run", str(tmp_path / "in.png"), "--app", APP_ID, "--t-max", "0.5"])
        assert res.exit_code == 2 and "--t-max: not a field of ccsr-tests/echo" in res.output


def test_a_new_model_gets_the_local_commands(echo_model, tmp_path):
    from ccsr.cli import build

    cli = build()
    runner = CliRunner()
    res = runner.invoke(cli, ["echo", "hello"])
    assert res.exit_code == 0 and res.output.strip() == "hi from the environment"
    out = tmp_path / "out.png"
    res = runner.invoke(cli, ["upscale", str(_png(tmp_path / "in.png")), "-o", str(out), "--model", "echo",
                              "--border", "2", "--steps", "3", "--echo-greeting", "from a flag"])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size == (10, 8)
    assert "greeting=from a flag" in res.output and "RANDOM weights" in res.output
    for args, needle in ((["--border", "99"], "--border: Input should be less than or equal to 16"),
                         (["--t-max", "0.5"], "--t-max: not a field of echo"),
                         (["--weights", str(out)], "--weights: not a field of echo")):
        res = runner.invoke(cli, ["upscale", str(tmp_path / "in.png"), "-o", str(out), "--model", "echo", *args])
        assert res.exit_code == 2 and needle in res.output, res.output
