"""The CCSR-v2 engine on tiny random weights (official folder layout):
sizes, seeds, batching, tiling, progress, cancel and the memory plan."""

import threading

import numpy as np
import pytest
from PIL import Image

from ccsr.errors import Cancelled, InvalidParameter
from ccsr.models.ccsr_v2.params import V2Params

SMALL = dict(process_size=64)


def _img(seed=0, w=40, h=32):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _a(res):
    return np.asarray(res.image).astype(int)


def test_output_size_and_the_seed_decides(v2_upscaler):
    a = v2_upscaler(_img(), seed=1, **SMALL)
    b = v2_upscaler(_img(), seed=1, **SMALL)
    c = v2_upscaler(_img(), seed=2, **SMALL)
    assert a.image.size == (160, 128) and a.seed == 1 and a.passes == 1
    assert np.array_equal(_a(a), _a(b)) and not np.array_equal(_a(a), _a(c))
    assert v2_upscaler(_img(), **SMALL).seed >= 0  # a random seed is reported


def test_small_inputs_are_enlarged_then_the_output_is_input_times_scale(v2_upscaler):
    res = v2_upscaler(_img(w=20, h=12), seed=0, scale=2, process_size=64)
    assert res.image.size == (40, 24)


def test_every_option_changes_the_picture(v2_upscaler):
    base = _a(v2_upscaler(_img(), seed=3, **SMALL))
    for change in (dict(start_point="noise"), dict(color_fix_type="wavelet"), dict(color_fix_type="none"),
                   dict(steps=6, t_min=0.5, guidance_scale=4.5), dict(steps=6, t_min=0.5),
                   dict(prompt="a cat")):
        assert not np.array_equal(base, _a(v2_upscaler(_img(), seed=3, **SMALL, **change))), change


def test_negative_prompt_only_matters_with_guidance(v2_upscaler):
    one = dict(steps=6, t_min=0.5, seed=4, **SMALL)
    a = _a(v2_upscaler(_img(), **one, negative_prompt="x"))
    assert np.array_equal(a, _a(v2_upscaler(_img(), **one, negative_prompt="y")))
    g = _a(v2_upscaler(_img(), **one, guidance_scale=3, negative_prompt="x"))
    assert not np.array_equal(g, _a(v2_upscaler(_img(), **one, guidance_scale=3, negative_prompt="y")))


def test_one_tile_covering_the_latent_equals_untiled(v2_upscaler):
    kw = dict(seed=5, steps=6, t_min=0.5, guidance_scale=2.0, **SMALL)
    plain = _a(v2_upscaler(_img(w=32, h=32), **kw))
    tiled = _a(v2_upscaler(_img(w=32, h=32), **kw, tile_diffusion="gaussian", tile_diffusion_size=512, tile_diffusion_stride=256))
    # equal up to float rounding (tile weights divided out), as the goldens' tolerance says
    assert np.abs(plain - tiled).max() <= 2 and np.abs(plain - tiled).mean() < 0.05
    small = _a(v2_upscaler(_img(w=32, h=32), **kw, tile_diffusion="gaussian", tile_diffusion_size=64, tile_diffusion_stride=32))
    assert small.shape == plain.shape and not np.array_equal(small, plain)


def test_tiled_vae_decoder_runs_and_stays_close(v2_upscaler):
    plain = _a(v2_upscaler(_img(), seed=6, **SMALL))
    tiled = _a(v2_upscaler(_img(), seed=6, **SMALL, tile_vae=True, tile_vae_decoder_size=16))
    assert tiled.shape == plain.shape and np.abs(plain - tiled).mean() < 8


def test_batch_equals_one_by_one(v2_upscaler):
    p = [V2Params(seed=s, steps=6, t_min=0.5, guidance_scale=3.0, **SMALL) for s in (1, 2, 3)]
    batched = v2_upscaler.run_batch([_img(1), _img(2), _img(3)], p)
    for im, q, r in zip([_img(1), _img(2), _img(3)], p, batched):
        assert r.seed == q.seed and np.abs(_a(v2_upscaler.run(im, q)) - _a(r)).max() <= 1
    with pytest.raises(ValueError, match="differ only in the seed"):
        v2_upscaler.run_batch([_img(1), _img(2)], [p[0], p[0].model_copy(update={"scale": 2})])


def test_progress_per_pass_and_cancel_between_passes(v2_upscaler):
    seen = []
    v2_upscaler(_img(), seed=0, steps=6, t_min=0.5, progress=lambda d, n: seen.append((d, n)), **SMALL)
    assert seen == [(1, 2), (2, 2)]
    cancel = threading.Event()

    def progress(d, n):
        cancel.set()

    with pytest.raises(Cancelled):
        v2_upscaler(_img(), seed=0, steps=6, t_min=0.5, progress=progress, cancel=cancel, **SMALL)


def test_bad_values_are_refused_naming_the_field(v2_upscaler):
    with pytest.raises(InvalidParameter) as err:
        v2_upscaler(_img(), steps=1, t_min=0.5)
    assert err.value.field == "t_min"
    with pytest.raises(InvalidParameter) as err:
        v2_upscaler(_img(), scale=9)
    assert err.value.field == "scale"


def test_memory_plan_turns_on_the_tiled_decoder_when_the_budget_is_small(v2_upscaler):
    lines = []
    old = v2_upscaler.memory_budget
    v2_upscaler.memory_budget = 200_000
    try:
        res = v2_upscaler(_img(), seed=0, log=lines.append, **SMALL)
    finally:
        v2_upscaler.memory_budget = old
    assert res.memory_plan is not None and res.memory_plan.tile_vae and res.memory_plan.changed
    assert any("memory plan" in line for line in lines)


def test_the_python_api_names(v2_weights):
    import ccsr

    up = ccsr.V2Upscaler.from_folder(v2_weights, device="cpu", dtype="fp32")
    res = up(_img(), seed=2, **SMALL)
    assert isinstance(res, ccsr.V2Result) and res.image.size == (160, 128)
    with pytest.raises(ccsr.InvalidParameter):
        up(_img(), params=ccsr.V2Params(steps=2, t_max=0.5, t_min=0.4))


def test_on_the_cpu_each_network_hands_back_its_weight_pages_after_its_turn(v2_weights, monkeypatch):
    """release_weights: the text encoder after the prompts, the VAE after
    encoding, per pass the ControlNet before the UNet runs and the UNet after
    it, the VAE after decoding; the picture is the same as with every network
    resident (the pages come back from the file). The drop itself:
    tests/engine/test_resident.py."""
    from ccsr.engine import resident
    from ccsr.models.ccsr_v2.engine import V2Upscaler

    calls: list[str] = []
    real = resident.release
    monkeypatch.setattr(resident, "release", lambda *ms: calls.extend(type(m).__name__ for m in ms) or real(*ms))
    kept = V2Upscaler.from_folder(v2_weights, device="cpu", dtype="fp32", release_weights=False)
    dropping = V2Upscaler.from_folder(v2_weights, device="cpu", dtype="fp32")
    two_step = dict(seed=6, steps=6, t_min=0.5, guidance_scale=4.5, **SMALL)
    a = _a(kept(_img(), **two_step))
    assert calls == []
    b = _a(dropping(_img(), **two_step))
    assert np.array_equal(a, b)
    assert calls == ["CLIPTextModel", "CLIPTextModel", "AutoencoderKL", "ControlNetModel", "UNet2DConditionModel",
                     "ControlNetModel", "UNet2DConditionModel", "AutoencoderKL"]


def test_in_bf16_on_the_cpu_the_networks_get_channels_last_activations(v2_weights, v2_upscaler, monkeypatch):
    """oneDNN's half-precision CPU kernels want channels-last input (several
    times faster, docs/ccsr-v2.md): the VAE encoder, the ControlNet, the UNet
    and the VAE decoder all get it in bf16; in fp32 the image goes into the VAE
    encoder plainly laid out (after it, the latents follow the official
    code's layouts: channels-last under guidance), and the bf16 picture stays
    within a few grey levels of the fp32 one."""
    import torch

    from ccsr.models.ccsr_v2.engine import V2Upscaler

    half = V2Upscaler.from_folder(v2_weights, device="cpu", dtype="bf16")
    seen: dict[str, list[bool]] = {}

    def spy(up, name, module):
        def hook(_m, args, kwargs):
            x = args[0] if args else kwargs["sample"]
            seen.setdefault(f"{up}:{name}", []).append(x.dim() == 4 and not x.is_contiguous()
                                                        and x.is_contiguous(memory_format=torch.channels_last))
        return module.register_forward_pre_hook(hook, with_kwargs=True)

    handles = []
    for up, eng in (("bf16", half), ("fp32", v2_upscaler)):
        n = eng.nets
        for name, m in (("encoder", n.vae.encoder), ("controlnet", n.controlnet), ("unet", n.unet), ("decoder", n.vae.decoder)):
            handles.append(spy(up, name, m))
    two_step = dict(seed=6, steps=6, t_min=0.5, guidance_scale=4.5, **SMALL)
    try:
        a, b = _a(half(_img(), **two_step)), _a(v2_upscaler(_img(), **two_step))
    finally:
        for h in handles:
            h.remove()
    assert half.nets.channels_last and not v2_upscaler.nets.channels_last
    for name in ("encoder", "controlnet", "unet", "decoder"):
        assert seen[f"bf16:{name}"] and all(seen[f"bf16:{name}"]), (name, seen)
    assert not any(seen["fp32:encoder"]), seen
    assert np.abs(a - b).mean() < 3, np.abs(a - b).mean()
