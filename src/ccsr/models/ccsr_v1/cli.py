"""CCSR v1's own command ``ccsr weights path`` (added to the shared ``ccsr
weights`` group by :meth:`CCSRApp.register_cli`), and what ``ccsr weights
random --model ccsr-v1`` writes (:func:`write_random`;
``ccsr weights download`` reaches :func:`ccsr.models.ccsr_v1.weights.download`
through :meth:`CCSRApp.download_weights`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ccsr.errors import CCSRError

#: The reduced architecture of the tests and the demo, shipped inside the package.
TINY_CONFIG = Path(__file__).resolve().parent / "configs" / "ccsr-tiny.yaml"
#: The official architecture (random full-size weights for benchmarks).
FULL_CONFIG = Path(__file__).resolve().parent / "configs" / "ccsr-v1.yaml"


def path_cmd(weights_path: Optional[Path] = typer.Option(None, "--weights", help="Explicit weights file.")) -> None:
    """Print the CCSR weights file the CLI and the service would load."""
    from ccsr.models.ccsr_v1 import weights

    try:
        typer.echo(str(weights.resolve(weights_path)))
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


def write_random(output: Path, *, seed: int, dtype: str, arch: str, config: Optional[Path]) -> str:
    """``ccsr weights random`` for CCSR v1: one safetensors checkpoint in the
    official key layout, of the tiny test architecture (``arch`` tiny), the
    official one (full) or ``config``'s (an official-format YAML)."""
    import torch

    from ccsr.models.ccsr_v1.networks.config import CCSRConfig
    from ccsr.models.ccsr_v1.random_weights import write_random_checkpoint

    if output.suffix.lower() != ".safetensors":
        raise CCSRError("-o/--output must end in .safetensors (CCSR v1's random weights are one file)")
    try:
        cfg = CCSRConfig.from_yaml(config or (FULL_CONFIG if arch == "full" else TINY_CONFIG))
    except CCSRError as exc:
        raise CCSRError(f"--config: {exc}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    # Streamed one tensor at a time: the full v1 size never sits in memory whole.
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    write_random_checkpoint(cfg, output, seed=seed, dtype=dt)
    size = output.stat().st_size / 1e6
    return f"wrote {output} ({size:.1f} MB of RANDOM weights: for tests, demos and benchmarks only)"


def register(cli: typer.Typer) -> None:
    from ccsr.commands.weights import weights_group

    group = weights_group(cli)
    group.command("path")(path_cmd)
