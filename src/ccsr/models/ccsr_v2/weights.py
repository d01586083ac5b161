"""Finding and fetching CCSR-v2's weights: a folder in the official layout.

Order of precedence: an explicit folder (``--weights`` / API argument), then
``CCSR_V2_WEIGHTS``, then the copy ``ccsr weights download --model ccsr-v2``
put in the Hugging Face cache. Nothing here touches the network unless
:func:`download` is called, and nothing imports torch (the HTTP process
reads the random-weights marker from the files' headers).

The official links are Google Drive and Baidu; the Hugging Face re-host
``kharma1/ccsr_v2_repost`` holds the same three folders. Only the files
inference needs are fetched (safetensors, configs, the tokenizer), about
6.3 GB, not the whole repository.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Callable, Optional

from ccsr.engine.weights_files import has_random_marker, http_errors, progress_bar_class, random_marker  # noqa: F401
from ccsr.errors import WeightsNotFound

REPO_ID = "kharma1/ccsr_v2_repost"
APPROX_SIZE = "6.3 GB"
CONNECT_TIMEOUT = 10.0
#: The files inference reads (glob patterns over the repository's paths).
NEEDED = (
    "stable-diffusion-2-1-base/model_index.json",
    "stable-diffusion-2-1-base/scheduler/scheduler_config.json",
    "stable-diffusion-2-1-base/text_encoder/config.json",
    "stable-diffusion-2-1-base/text_encoder/model.safetensors",
    "stable-diffusion-2-1-base/tokenizer/*",
    "stable-diffusion-2-1-base/unet/config.json",
    "stable-diffusion-2-1-base/unet/diffusion_pytorch_model.safetensors",
    "[cC]ontrol[nN]et/config.json",
    "[cC]ontrol[nN]et/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
#: The files that must be present for a folder to load (besides the tokenizer).
REQUIRED = (
    "stable-diffusion-2-1-base/unet/diffusion_pytorch_model.safetensors",
    "stable-diffusion-2-1-base/text_encoder/model.safetensors",
    "stable-diffusion-2-1-base/scheduler/scheduler_config.json",
)

HOW_TO_GET = (
    f"Run `ccsr weights download --model ccsr-v2` to fetch the weights ({REPO_ID}, about {APPROX_SIZE}) "
    "into the Hugging Face cache, or pass --weights DIR (env CCSR_V2_WEIGHTS) for a folder in the official "
    "layout (stable-diffusion-2-1-base/, controlnet/, vae/). For a quick try without weights: "
    "`ccsr weights random --model ccsr-v2 -o DIR`."
)


def needed(path: str) -> bool:
    """Whether a repository file is one inference reads."""
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in NEEDED)


def _is_folder(path: Path) -> bool:
    return (path / "stable-diffusion-2-1-base").is_dir()


def cached_path(cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The cached snapshot folder, or None; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(REPO_ID, REQUIRED[0], cache_dir=cache_dir)
    if isinstance(found, str) and os.path.isfile(found):
        root = Path(found).parents[2]
        return root if _is_folder(root) else None
    return None


def resolve(explicit: Optional[Path | str] = None) -> Path:
    """The weights folder to load, or :class:`WeightsNotFound` saying how to get one."""
    for source, value in (("--weights", explicit), ("CCSR_V2_WEIGHTS", os.environ.get("CCSR_V2_WEIGHTS"))):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise WeightsNotFound(f"CCSR-v2 weights folder given by {source} does not exist: {path}. {HOW_TO_GET}")
            if not _is_folder(path):
                raise WeightsNotFound(f"{path} (from {source}) has no stable-diffusion-2-1-base/: not a CCSR-v2 "
                                      f"weights folder. {HOW_TO_GET}")
            return path
    found = cached_path()
    if found is None:
        raise WeightsNotFound(f"No CCSR-v2 weights found. {HOW_TO_GET}")
    return found


def is_random(folder: Path | str) -> bool:
    """True when the folder's UNet carries the random-weights marker
    (``ccsr weights random --model ccsr-v2`` writes it)."""
    return has_random_marker(Path(folder) / "stable-diffusion-2-1-base" / "unet" / "diffusion_pytorch_model.safetensors")


def download(cache_dir: Optional[Path] = None, force: bool = False, *, timeout: float = CONNECT_TIMEOUT,
             endpoint: Optional[str] = None) -> Path:
    """Fetch the files inference needs into the Hugging Face cache and return
    the folder. Each file is resumable (an interrupted download continues from
    its ``.incomplete`` part) and its size is checked against the hub's
    listing; a progress bar per file. The listing request goes first with a
    ``timeout``, so an unreachable hub fails within seconds."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    errors = (LocalEntryNotFoundError, HfHubHTTPError, OSError, *http_errors())
    try:
        info = HfApi(endpoint=endpoint).model_info(REPO_ID, files_metadata=True, timeout=timeout)
    except errors as exc:
        raise WeightsNotFound(f"Could not list {REPO_ID}: {exc.__class__.__name__}: {exc}. Check the network (and "
                              "HF_ENDPOINT / proxy settings), or copy a weights folder here and pass --weights DIR.") from exc
    files = [(s.rfilename, s.size) for s in (info.siblings or []) if needed(s.rfilename)]
    missing = [r for r in REQUIRED if r not in {f for f, _ in files}]
    if missing:
        raise WeightsNotFound(f"{REPO_ID} lacks {', '.join(missing)}: its layout changed; download a folder by hand "
                              "and pass --weights DIR")
    root: Optional[Path] = None
    for name, size in files:
        try:
            path = Path(hf_hub_download(REPO_ID, name, cache_dir=cache_dir, force_download=force, etag_timeout=timeout,
                                        endpoint=endpoint, tqdm_class=progress_bar_class()))
        except errors as exc:
            raise WeightsNotFound(f"Could not download {REPO_ID}/{name}: {exc.__class__.__name__}: {exc}. Run "
                                  "`ccsr weights download --model ccsr-v2` again; it resumes where it stopped.") from exc
        if size is not None and path.stat().st_size != size:
            raise WeightsNotFound(f"Downloaded {path} has {path.stat().st_size} bytes, the hub says {size}. Run "
                                  "`ccsr weights download --model ccsr-v2 --force` to fetch it again.")
        root = path.parents[len(Path(name).parts) - 1]
    assert root is not None
    return root


#: Precisions ``convert`` writes, by the names the settings and flags use.
DTYPES = ("fp32", "fp16", "bf16")
#: Pickled weight files and the safetensors name ``convert`` gives them.
PICKLE_NAMES = {"diffusion_pytorch_model.bin": "diffusion_pytorch_model.safetensors",
                "pytorch_model.bin": "model.safetensors"}


def convert(src: Path | str, dst: Path | str, dtype: str, *, allow_pickle: bool = False,
            progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """Copy the weights folder ``src`` to ``dst`` with every floating-point
    tensor in ``dtype`` (fp32, fp16 or bf16); configs, tokenizer and other
    files are copied as they are, and each file's safetensors metadata (the
    random-weights marker too) is kept.

    Why: a model loaded in another precision than its files converts 6.6 GB
    on every load (seconds on a CPU) and keeps the converted copies resident.
    Loaded in the files' own precision, the weights stay mapped from the files
    and each network's pages go back to the kernel after its turn (setting
    ``v2_release_weights``). Pickled ``.bin`` weights are read only with
    ``allow_pickle`` and written as safetensors. ``progress(done, total)``
    counts bytes of weight files read. Raises :class:`CCSRError` naming what
    is wrong; ``dst`` must not exist or be empty."""
    import shutil

    from ccsr.errors import CCSRError

    if dtype not in DTYPES:
        raise CCSRError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    src = resolve(src)
    dst = Path(dst).expanduser()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise CCSRError(f"{dst} already exists and is not an empty folder: choose a new output folder")
    from ccsr.models.ccsr_v2.networks import Layout

    Layout.of(src)  # a complete folder, or an error naming what is missing
    files = sorted(p for p in src.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts))
    weights, others = [], []
    for p in files:
        if p.suffix == ".safetensors":
            weights.append((p, p.name))
        elif p.name in PICKLE_NAMES and p.parent.joinpath(PICKLE_NAMES[p.name]).is_file():
            continue  # the safetensors copy beside it is the one converted
        elif p.name in PICKLE_NAMES:
            if not allow_pickle:
                raise CCSRError(f"{p} is a pickle (it can run code when loaded): convert it only with allow_pickle "
                                "(--allow-pickle)")
            weights.append((p, PICKLE_NAMES[p.name]))
        else:
            others.append(p)
    total, done = sum(p.stat().st_size for p, _ in weights), 0
    dst.mkdir(parents=True, exist_ok=True)
    for p in others:
        out = dst / p.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, out)
    for p, name in weights:
        out = dst / p.relative_to(src).parent / name
        out.parent.mkdir(parents=True, exist_ok=True)
        _convert_file(p, out, dtype)
        done += p.stat().st_size
        if progress is not None:
            progress(done, total)
    return dst


def _convert_file(src: Path, dst: Path, dtype: str) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    target = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    out: dict = {}
    if src.suffix == ".safetensors":
        with safe_open(str(src), framework="pt") as f:
            meta = dict(f.metadata() or {})
            for key in f.keys():
                t = f.get_tensor(key)
                out[key] = t.to(target) if t.is_floating_point() else t
    else:
        meta = {}
        for key, t in torch.load(str(src), map_location="cpu", weights_only=True).items():
            out[key] = t.to(target) if t.is_floating_point() else t.contiguous()
    save_file(out, str(dst), metadata={**meta, "ccsr_dtype": dtype})
