"""`ccsr weights ...`: download, locate, or fabricate checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ccsr.errors import CCSRError

weights_app = typer.Typer(no_args_is_help=True, help="Get the official weights, or write random ones for tests and demos.")


@weights_app.command("download")
def download_cmd(
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    cache_dir: Optional[Path] = typer.Option(None, help="Hugging Face cache directory (default: HF_HUB_CACHE or ~/.cache/huggingface/hub)."),
) -> None:
    """Fetch real-world_ccsr-fp16.safetensors (3.44 GB) from Kijai/ccsr-safetensors."""
    from ccsr import weights

    try:
        path = weights.download(cache_dir=cache_dir, force=force)
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(str(path))


@weights_app.command("path")
def path_cmd(weights_path: Optional[Path] = typer.Option(None, "--weights", help="Explicit weights file.")) -> None:
    """Print the weights file the CLI and the service would load."""
    from ccsr import weights

    try:
        typer.echo(str(weights.resolve(weights_path)))
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


@weights_app.command("random")
def random_cmd(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="Official-format model YAML (e.g. ccsr-tiny.yaml)."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write (.safetensors or .ckpt)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or fp16."),
) -> None:
    """Write a random checkpoint of that architecture in the official key layout."""
    from ccsr.model.checkpoint import save_state_dict
    from ccsr.model.config import CCSRConfig
    from ccsr.model.random import random_state_dict

    if dtype not in ("fp32", "fp16"):
        typer.echo("error: --dtype must be fp32 or fp16", err=True)
        raise typer.Exit(2)
    cfg = CCSRConfig.from_yaml(config)
    sd = random_state_dict(cfg, seed=seed)
    if dtype == "fp16":
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    output.parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(sd, output)
    n = sum(v.numel() for v in sd.values())
    typer.echo(f"wrote {output} ({n / 1e6:.1f} M parameters, random weights: for tests and demos only)")


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
