"""`ccsr weights ...`: download, locate, or fabricate checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ccsr.errors import CCSRError

#: The reduced architecture of the tests and the demo, shipped inside the package.
TINY_CONFIG = Path(__file__).resolve().parents[1] / "models" / "ccsr_v1" / "configs" / "ccsr-tiny.yaml"

weights_app = typer.Typer(no_args_is_help=True, help="Get the official weights, or write random ones for tests and demos.")


@weights_app.command("download")
def download_cmd(
    force: bool = typer.Option(False, "--force", help="Download again even if cached."),
    cache_dir: Optional[Path] = typer.Option(None, help="Hugging Face cache directory (default: HF_HUB_CACHE or ~/.cache/huggingface/hub)."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds to wait for the hub to answer before giving up."),
    model: Optional[str] = typer.Option(None, "--model", help="A Real-ESRGAN model instead of CCSR (e.g. realesrgan-x4plus, RealESRGAN_x4plus); see `ccsr esrgan models`."),
    url: Optional[str] = typer.Option(None, "--url", help="With --model: fetch from this mirror URL instead of the GitHub release (same size and hash checks)."),
) -> None:
    """Fetch real-world_ccsr-fp16.safetensors (3.44 GB) from Kijai/ccsr-safetensors, or with --model a Real-ESRGAN .pth."""
    from ccsr.models.ccsr_v1 import weights

    if model is not None:
        from ccsr.models.esrgan.cli import download_esrgan

        download_esrgan(model, dest_dir=cache_dir, force=force, url=url)
        return
    try:
        path = weights.download(cache_dir=cache_dir, force=force, timeout=timeout)
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo(str(path))


@weights_app.command("path")
def path_cmd(weights_path: Optional[Path] = typer.Option(None, "--weights", help="Explicit weights file.")) -> None:
    """Print the weights file the CLI and the service would load."""
    from ccsr.models.ccsr_v1 import weights

    try:
        typer.echo(str(weights.resolve(weights_path)))
    except CCSRError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)


@weights_app.command("random")
def random_cmd(
    config: Optional[Path] = typer.Option(None, "--config", exists=True, dir_okay=False, help="Official-format model YAML. Default: the tiny test architecture that ships with the package."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write (.safetensors or .ckpt)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random weights."),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32, fp16 or bf16."),
) -> None:
    """Write a random checkpoint of that architecture in the official key layout.

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


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
