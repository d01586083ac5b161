"""`ccsr weights ...`: the shared group of weights commands.

``ccsr weights download`` is generic: ``--model NAME`` picks the model by its
name (``ccsr-v1``, ``esrgan``) or by a weights name one model knows
(``RealESRGAN_x2plus``); without it, the first registered model that has
weights to download. The fetching is the model's (``App.download_weights``).
Models add commands of their own to the group from ``App.register_cli``
through :func:`weights_group` (CCSR v1: ``path``). ``ccsr weights random
--model NAME`` is generic too: the model writes its own (``App.write_random_weights``),
as is ``ccsr weights convert --model NAME`` (``App.convert_weights``: a copy in
another precision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ccsr.apps.base import App
from ccsr.apps.registry import Registry
from ccsr.errors import CCSRError

GROUP = "weights"
HELP = "Get the official weights, or write random ones for tests and demos."


def weights_group(cli: typer.Typer) -> typer.Typer:
    """The ``ccsr weights`` group of ``cli`` (made by :func:`register`)."""
    for info in cli.registered_groups:
        if info.name == GROUP and info.typer_instance is not None:
            return info.typer_instance
    raise LookupError("the ccsr weights group is not registered on this command")


def downloaders(registry: Registry) -> list[App]:
    """The apps whose model has weights to download, in registry order."""
    return [a for a in registry if type(a).download_weights is not App.download_weights]


def pick(registry: Registry, model: Optional[str]) -> tuple[App, Optional[str]]:
    """(app, weights name) for ``--model``: a model's name, a weights name one model knows, or None (the first)."""
    apps = downloaders(registry)
    if model is None:
        return apps[0], None
    for app in apps:
        if model == app.name:
            return app, None
    for app in apps:
        if model.strip().lower().removesuffix(".pth") in (n.lower() for n in app.weights_names()):
            return app, model
    known = ", ".join(a.name for a in apps)
    raise typer.BadParameter(f"no model has weights named {model!r}; use a model ({known}) or a weights name "
                             "one of them knows", param_hint="--model")


def register(cli: typer.Typer, registry: Registry) -> None:
    group = typer.Typer(no_args_is_help=True, help=HELP)
    apps = downloaders(registry)
    names = ", ".join(a.name for a in apps)
    example = next((n for a in apps for n in a.weights_names()), None)
    example_text = f" (e.g. {example})" if example else ""

    @group.command("download")
    def download_cmd(
        model: Optional[str] = typer.Option(None, "--model", help=f"Which weights: a model ({names}; default: the first) or a weights name a model knows{example_text}."),
        force: bool = typer.Option(False, "--force", help="Download again even if cached."),
        cache_dir: Optional[Path] = typer.Option(None, help="Directory to download into (default: the model's own cache, where the CLI and the server look)."),
        timeout: Optional[float] = typer.Option(None, "--timeout", min=0.1, help="Seconds to wait for the server to answer before giving up (default: the model's own; 10 for CCSR's Hugging Face hub).", show_default=False),
        url: Optional[str] = typer.Option(None, "--url", help="Fetch from this mirror URL instead of the official source (same size and hash checks), where the model supports it."),
    ) -> None:
        """Fetch a model's official weights (resumable where the source allows; size and hash checked)."""
        app, name = pick(registry, model)
        try:
            path = app.download_weights(name, dest=cache_dir, force=force, timeout=timeout, url=url)
        except CCSRError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1)
        typer.echo(str(path))

    makers = [a for a in registry if type(a).write_random_weights is not App.write_random_weights]
    maker_names = ", ".join(a.name for a in makers)

    @group.command("random")
    def random_cmd(
        output: Path = typer.Option(..., "-o", "--output", help="Where to write: a .safetensors file (ccsr-v1) or a folder (ccsr-v2)."),
        model: Optional[str] = typer.Option(None, "--model", help=f"Which model's architecture: {maker_names} (default: the first)."),
        arch: str = typer.Option("tiny", "--arch", help="tiny (a few MB, the tests') or full (the official sizes, for benchmarks)."),
        config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help="CCSR v1 only: an official-format model YAML (instead of --arch)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
        dtype: str = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16."),
    ) -> None:
        """Write random weights of a model's architecture, marked as random.

        Everything that loads them (``ccsr upscale``, ``ccsr serve``, the
        playground) says so: for tests, demos and benchmarks only."""
        app = next((a for a in makers if a.name == model), None) if model else makers[0]
        if app is None:
            raise typer.BadParameter(f"no model {model!r} has random weights; choose one of {maker_names}", param_hint="--model")
        if arch not in ("tiny", "full"):
            raise typer.BadParameter(f"must be tiny or full, got {arch!r}", param_hint="--arch")
        if dtype not in ("fp32", "fp16", "bf16"):
            raise typer.BadParameter(f"must be fp32, fp16 or bf16, got {dtype!r}", param_hint="--dtype")
        try:
            typer.echo(app.write_random_weights(output, seed=seed, dtype=dtype, arch=arch, config=config))
        except CCSRError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2)

    converters = [a for a in registry if type(a).convert_weights is not App.convert_weights]
    converter_names = ", ".join(a.name for a in converters) or "none"

    @group.command("convert")
    def convert_cmd(
        source: Path = typer.Argument(..., help="The weights to convert (a folder in the model's official layout)."),
        output: Path = typer.Option(..., "-o", "--output", help="Where to write the copy (a new or empty folder)."),
        dtype: str = typer.Option(..., "--dtype", help="fp32, fp16 or bf16: the precision you will load it in (--dtype of upscale/serve)."),
        model: Optional[str] = typer.Option(None, "--model", help=f"Whose weights: {converter_names} (default: the first)."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Also read pickled .bin weights (a pickle can run code when loaded); the copy is safetensors."),
    ) -> None:
        """Copy weights in another precision, so that loading in it maps the
        files instead of converting every tensor on every load (and on a CPU
        the weights' pages can go back to the kernel after each network's turn)."""
        app = next((a for a in converters if a.name == model), None) if model else (converters[0] if converters else None)
        if app is None:
            raise typer.BadParameter(f"no model {model!r} has a weights converter; choose one of {converter_names}",
                                     param_hint="--model")
        if dtype not in ("fp32", "fp16", "bf16"):
            raise typer.BadParameter(f"must be fp32, fp16 or bf16, got {dtype!r}", param_hint="--dtype")
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn(f"converting to {dtype}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task("convert", total=None)
            try:
                line = app.convert_weights(source, output, dtype=dtype, allow_pickle=allow_pickle,
                                           progress=lambda done, total: bar.update(task, completed=done, total=total))
            except CCSRError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2)
        typer.echo(line)

    cli.add_typer(group, name=GROUP)
