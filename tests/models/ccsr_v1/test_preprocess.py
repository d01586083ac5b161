import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from ccsr.engine.images import encode_image, save_image, to_tensor01
from ccsr.models.ccsr_v1.preprocess import finalize, prepare


def _img(w, h, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def test_prepare_scale_then_min_short_then_multiple_of_64():
    img = _img(100, 75)
    out, target = prepare(img, 2.5, 512)
    assert target == (250, math.ceil(75 * 2.5))  # (250, 188)
    r = 512 / 188
    w, h = math.ceil(250 * r), math.ceil(188 * r)
    assert out.size == (w // 64 * 64, h // 64 * 64) and out.mode == "RGB"
    # the same pipeline by hand
    a = img.resize((250, 188), Image.BICUBIC)
    a = a.resize((w, h), Image.BICUBIC).resize((w // 64 * 64, h // 64 * 64), Image.LANCZOS)
    assert np.array_equal(np.asarray(out), np.asarray(a))


def test_prepare_scale_one_and_large_input():
    img = _img(700, 600, "RGBA")
    out, target = prepare(img, 1, 512)
    assert target == (700, 600)
    assert out.size == (640, 576)
    ref = img.convert("RGB").resize((640, 576), Image.LANCZOS)
    assert np.array_equal(np.asarray(out), np.asarray(ref))


def test_prepare_tile_min_short():
    out, target = prepare(_img(300, 200), 4, 1024)
    assert target == (1200, 800)
    assert out.size == (math.ceil(1200 * 1024 / 800) // 64 * 64, 1024)


def test_to_tensor01():
    img = _img(9, 7)
    t = to_tensor01(img)
    assert t.shape == (1, 3, 7, 9) and t.dtype == torch.float32
    expected = torch.from_numpy(np.asarray(img) / 255.0).float().permute(2, 0, 1)
    assert torch.equal(t[0], expected)


def test_finalize_truncates_then_lanczos():
    x = torch.tensor([0.999, 0.5, -0.2, 1.7]).view(1, 1, 1, 4).repeat(1, 3, 4, 1)
    img = finalize(x, (4, 4))
    assert np.asarray(img)[0, :, 0].tolist() == [254, 127, 0, 255]
    big = finalize(torch.rand(1, 3, 16, 16), (40, 24))
    assert big.size == (40, 24)


def test_finalize_roundtrip_exact():
    img = _img(16, 8)
    assert np.array_equal(np.asarray(finalize(to_tensor01(img), img.size)), np.asarray(img))


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_encode_image(fmt, magic):
    img = _img(33, 21)
    data = encode_image(img, fmt)
    assert data.startswith(magic)
    back = Image.open(io.BytesIO(data)).convert("RGB")
    assert back.size == (33, 21)
    if fmt == "png":
        assert np.array_equal(np.asarray(back), np.asarray(img))
    with pytest.raises(ValueError, match="output_format"):
        encode_image(img, "gif")


def test_save_image(tmp_path):
    img = _img(10, 12)
    p = save_image(img, tmp_path / "a.webp")
    assert p.read_bytes()[:4] == b"RIFF"
    p = save_image(img, tmp_path / "b")
    assert p.name == "b.png" and np.array_equal(np.asarray(Image.open(p)), np.asarray(img))
    assert save_image(img, tmp_path / "c.JPG").read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match="extension"):
        save_image(img, tmp_path / "d.bmp")
