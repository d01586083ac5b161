"""CCSR-v2's weights: finding a folder in the official layout, the random
marker, refusing pickles, and `ccsr weights download --model ccsr-v2` against
a stand-in hub on 127.0.0.1 (no test reaches the real hub or downloads
weights: the hub serves the tiny random folder's files)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ccsr.errors import CheckpointError, WeightsNotFound
from ccsr.models.ccsr_v2 import weights
from ccsr.models.ccsr_v2.networks import Layout, read_tensors


def test_resolve_takes_a_folder_and_says_how_to_get_one(v2_weights, tmp_path, monkeypatch):
    monkeypatch.delenv("CCSR_V2_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weights.resolve(v2_weights) == v2_weights
    with pytest.raises(WeightsNotFound, match="ccsr weights download --model ccsr-v2"):
        weights.resolve(tmp_path / "nope")
    with pytest.raises(WeightsNotFound, match="not a CCSR-v2 weights folder"):
        weights.resolve(tmp_path)
    monkeypatch.setenv("CCSR_V2_WEIGHTS", str(v2_weights))
    assert weights.resolve() == v2_weights


def test_random_weights_are_marked(v2_weights, tmp_path):
    assert weights.is_random(v2_weights)
    real = tmp_path / "real"
    shutil.copytree(v2_weights, real)
    unet = real / "stable-diffusion-2-1-base" / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(unet)), str(unet))  # the same tensors without the marker
    assert not weights.is_random(real)


def test_capitalised_controlnet_folder_and_missing_parts(v2_weights, tmp_path):
    other = tmp_path / "w"
    shutil.copytree(v2_weights, other)
    (other / "controlnet").rename(other / "Controlnet")
    assert Layout.of(other).controlnet.name == "Controlnet"
    shutil.rmtree(other / "Controlnet")
    with pytest.raises(CheckpointError, match="controlnet/ missing"):
        Layout.of(other)


def test_a_pickle_loads_only_when_allowed(v2_weights, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "vae"
    shutil.copytree(v2_weights / "vae", folder)
    sd = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(sd, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickle"):
        read_tensors(folder)
    assert read_tensors(folder, allow_pickle=True).keys() == sd.keys()


def test_only_needed_files_are_fetched():
    assert weights.needed("stable-diffusion-2-1-base/unet/diffusion_pytorch_model.safetensors")
    assert weights.needed("Controlnet/config.json") and weights.needed("vae/config.json")
    assert not weights.needed("stable-diffusion-2-1-base/unet/diffusion_pytorch_model.bin")
    assert not weights.needed("stable-diffusion-2-1-base/vae/diffusion_pytorch_model.safetensors")
    assert not weights.needed("README.md")


class _Hub(http.server.BaseHTTPRequestHandler):
    """The requests huggingface_hub makes: the repository listing with sizes,
    then HEAD and GET per file."""

    root: Path
    lie_about: str = ""
    fetched: list

    def log_message(self, *args) -> None:
        pass

    def _files(self) -> dict[str, Path]:
        found = {str(p.relative_to(self.root)): p for p in self.root.rglob("*") if p.is_file()}
        found["README.md"] = self.root / "stable-diffusion-2-1-base" / "model_index.json"  # listed, not needed
        return found

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith(f"/api/models/{weights.REPO_ID}"):
            siblings = [{"rfilename": n, "size": p.stat().st_size + (1 if n == self.lie_about else 0)}
                        for n, p in self._files().items()]
            body = json.dumps({"id": weights.REPO_ID, "sha": "a" * 40, "siblings": siblings}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path = self._file()
        if path is not None:
            self.fetched.append(self.path)
            self.wfile.write(path.read_bytes())

    def do_HEAD(self) -> None:  # noqa: N802
        self._file()

    def _file(self):
        prefix = f"/{weights.REPO_ID}/resolve/main/"
        name = self.path[len(prefix):] if self.path.startswith(prefix) else None
        path = self._files().get(name) if name else None
        if path is None:
            self.send_error(404)
            return None
        self.send_response(200)
        self.send_header("X-Repo-Commit", "a" * 40)
        self.send_header("ETag", f'"{hash(name) & 0xFFFFFF:x}"')
        self.send_header("Content-Length", str(path.stat().st_size))
        self.end_headers()
        return path


def _serve(root: Path, lie_about: str = ""):
    handler = type("Hub", (_Hub,), {"root": root, "lie_about": lie_about, "fetched": []})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, handler


def _download(endpoint: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_ETAG_TIMEOUT": "5"}
    return subprocess.run([sys.executable, "-m", "ccsr.cli", "weights", "download", "--model", "ccsr-v2",
                           "--cache-dir", str(cache)], env=env, capture_output=True, text=True, timeout=120)


def test_download_fetches_the_needed_files_with_a_progress_bar(v2_weights, tmp_path):
    srv, handler = _serve(v2_weights)
    try:
        res = _download(f"http://127.0.0.1:{srv.server_address[1]}", tmp_path / "cache")
    finally:
        srv.shutdown()
        srv.server_close()
    assert res.returncode == 0, res.stderr
    folder = Path(res.stdout.strip().splitlines()[-1])
    assert (folder / "stable-diffusion-2-1-base" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert weights.is_random(folder) and Layout.of(folder).vae.is_dir()
    assert not any("README.md" in p for p in handler.fetched)
    assert "%" in res.stderr or "it/s" in res.stderr or "B/s" in res.stderr  # the progress bars


def test_download_checks_sizes(v2_weights, tmp_path):
    srv, _ = _serve(v2_weights, lie_about="vae/config.json")
    try:
        res = _download(f"http://127.0.0.1:{srv.server_address[1]}", tmp_path / "cache")
    finally:
        srv.shutdown()
        srv.server_close()
    assert res.returncode == 1 and "the hub says" in res.stderr


def test_an_unreachable_hub_fails_quickly_and_clearly(tmp_path):
    with socketless_port() as port:
        res = _download(f"http://127.0.0.1:{port}", tmp_path / "cache")
    assert res.returncode == 1 and "Could not list" in res.stderr and "--weights DIR" in res.stderr


class socketless_port:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        return self.port

    def __exit__(self, *exc) -> None:
        pass


def _tensors(folder: Path) -> dict[str, dict]:
    from safetensors import safe_open

    out = {}
    for f in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            out[str(f.relative_to(folder))] = {"meta": st.metadata(), **{k: st.get_tensor(k) for k in st.keys()}}
    return out


def test_convert_writes_every_float_tensor_in_the_precision_and_keeps_the_rest(v2_weights, tmp_path):
    import torch

    seen = []
    out = weights.convert(v2_weights, tmp_path / "bf16", "bf16", progress=lambda done, total: seen.append((done, total)))
    src, dst = _tensors(v2_weights), _tensors(out)
    assert src.keys() == dst.keys() and len(dst) == 4  # unet, text encoder, controlnet, vae
    for name, tensors in dst.items():
        meta = tensors.pop("meta")
        assert meta["ccsr_dtype"] == "bf16"
        for key, t in tensors.items():
            ref = src[name][key]
            assert t.dtype == (torch.bfloat16 if ref.is_floating_point() else ref.dtype), (name, key)
            assert torch.equal(t, ref.to(t.dtype)), (name, key)
    assert weights.is_random(out)  # the random-weights marker travels with the copy
    for f in v2_weights.rglob("*"):
        if f.is_file() and f.suffix != ".safetensors":
            assert (out / f.relative_to(v2_weights)).read_bytes() == f.read_bytes(), f
    assert seen and seen[-1][0] == seen[-1][1] == sum(f.stat().st_size for f in v2_weights.rglob("*.safetensors"))


def test_converted_weights_load_mapped_and_paint_what_converting_on_load_paints(v2_weights, tmp_path):
    """Loaded in their own precision, the converted files are mapped, not
    copied (the point of converting), and the picture equals the fp32
    folder's loaded in bf16 (the same rounding, once ahead of time)."""
    import numpy as np
    from PIL import Image

    from ccsr.models.ccsr_v2.engine import V2Upscaler

    out = weights.convert(v2_weights, tmp_path / "bf16", "bf16")
    ahead = V2Upscaler.from_folder(out, device="cpu", dtype="bf16")
    on_load = V2Upscaler.from_folder(v2_weights, device="cpu", dtype="bf16")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    a, b = ahead(img, seed=5, process_size=64), on_load(img, seed=5, process_size=64)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    if sys.platform.startswith("linux"):
        unet_file = str(out / "stable-diffusion-2-1-base" / "unet" / "diffusion_pytorch_model.safetensors")
        spans = []
        for line in open("/proc/self/maps"):
            if line.rstrip().endswith(unet_file):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                spans.append((lo, hi))
        ptrs = [p.data_ptr() for p in ahead.nets.unet.parameters()]
        assert spans and all(any(lo <= ptr < hi for lo, hi in spans) for ptr in ptrs)


def test_convert_refuses_what_it_should(v2_weights, tmp_path):
    import torch
    from safetensors.torch import load_file

    from ccsr.errors import CCSRError

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("mine")
    with pytest.raises(CCSRError, match="already exists"):
        weights.convert(v2_weights, taken, "bf16")
    with pytest.raises(CCSRError, match="dtype"):
        weights.convert(v2_weights, tmp_path / "a", "int8")
    with pytest.raises(WeightsNotFound):
        weights.convert(tmp_path / "nope", tmp_path / "b", "bf16")
    pickled = tmp_path / "pickled"
    shutil.copytree(v2_weights, pickled)
    vae = pickled / "vae" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(vae)), vae.with_suffix(".bin"))
    vae.unlink()
    with pytest.raises(CCSRError, match="pickle"):
        weights.convert(pickled, tmp_path / "c", "fp16")
    out = weights.convert(pickled, tmp_path / "d", "fp16", allow_pickle=True)
    assert not (out / "vae" / "diffusion_pytorch_model.bin").exists()
    assert {t.dtype for t in load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors")).values()} == {torch.float16}
