"""CCSR v1's own commands: ``ccsr weights path`` and ``ccsr weights random``
(added to the shared ``ccsr weights`` group by :meth:`CCSRApp.register_cli`;
``ccsr weights download`` reaches :func:`ccsr.models.ccsr_v1.weights.download`
through :meth:`CCSRApp.download_weights`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ccsr.errors import CCSRError

#: The reduced architecture of the tests and the demo, shipped inside the package.
TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "ccsr-tiny.yaml"


def path_cmd(weights_path: Optional[Path] = typer.Option(None, "--weights", help="Explicit weights file.")) -> None:
    """Print the CCSR weights file the CLI and the service would load."""
    from ccsr.models.ccsr_v1 import weights

    try:
        typer.echo(str(weights.resolve(weights_path)))
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


def random_cmd(
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help="Official-format model YAML. Default: the tiny test architecture that ships with the package."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write (.safetensors or .ckpt)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16."),
) -> None:
    """Write a random CCSR checkpoint of that architecture in the official key layout.

    The file's metadata marks it as random weights; everything that loads it
    (``ccsr upscale``, ``ccsr serve``, the playground) says so."""
    import torch

    from ccsr.models.ccsr_v1.networks.config import CCSRConfig
    from ccsr.models.ccsr_v1.random_weights import write_random_checkpoint

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        typer.echo(f"error: --dtype must be one of {', '.join(dtypes)}, got {dtype!r}", err=True)
        raise typer.Exit(2)
    if output.suffix.lower() != ".safetensors":
        typer.echo("error: -o/--output must end in .safetensors", err=True)
        raise typer.Exit(2)
    try:
        cfg = CCSRConfig.from_yaml(config or TINY_CONFIG)
    except CCSRError as exc:
        typer.echo(f"error: --config: {exc}", err=True)
        raise typer.Exit(2)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Streamed one tensor at a time: the full v1 size never sits in memory whole.
    write_random_checkpoint(cfg, output, seed=seed, dtype=dtypes[dtype])
    size = output.stat().st_size / 1e6
    typer.echo(f"wrote {output} ({size:.1f} MB of RANDOM weights: for tests, demos and benchmarks only)")


def register(cli: typer.Typer) -> None:
    from ccsr.commands.weights import weights_group

    group = weights_group(cli)
    group.command("path")(path_cmd)
    group.command("random")(random_cmd)
