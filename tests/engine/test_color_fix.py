import numpy as np
import pytest
import torch

from ccsr.engine.color_fix import adain, color_fix, wavelet


def _imgs(seed=0, h=40, w=37):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g, dtype=torch.float64), torch.rand(1, 3, h, w, generator=g, dtype=torch.float64) * 0.5 + 0.2


def np_adain(x, r):
    out = np.empty_like(x)
    for c in range(x.shape[0]):
        xm, xs = x[c].mean(), np.sqrt(x[c].var(ddof=1) + 1e-5)
        rm, rs = r[c].mean(), np.sqrt(r[c].var(ddof=1) + 1e-5)
        out[c] = (x[c] - xm) / xs * rs + rm
    return out


def np_blur(img, d):
    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    p = np.pad(img, ((0, 0), (d, d), (d, d)), mode="edge")
    h, w = img.shape[1:]
    out = np.zeros_like(img)
    for dy in range(3):
        for dx in range(3):
            out += k[dy, dx] * p[:, dy * d : dy * d + h, dx * d : dx * d + w]
    return out


def np_wavelet(x, r):
    def split(img):
        high = np.zeros_like(img)
        for i in range(5):
            low = np_blur(img, 2**i)
            high += img - low
            img = low
        return high, img
    return split(x)[0] + split(r)[1]


def test_adain_formula():
    x, r = _imgs()
    np.testing.assert_allclose(adain(x, r)[0].numpy(), np_adain(x[0].numpy(), r[0].numpy()), rtol=1e-10, atol=1e-12)


def test_wavelet_formula():
    x, r = _imgs(1, 48, 70)
    np.testing.assert_allclose(wavelet(x, r)[0].numpy(), np_wavelet(x[0].numpy(), r[0].numpy()), rtol=1e-10, atol=1e-12)


def test_wavelet_of_same_image_is_identity():
    x, _ = _imgs(2)
    torch.testing.assert_close(wavelet(x, x), x)


def test_dispatch():
    x, r = _imgs(3)
    assert torch.equal(color_fix(x, r, "none"), x)
    assert torch.equal(color_fix(x, r, "adain"), adain(x, r))
    with pytest.raises(ValueError, match="color_fix_type"):
        color_fix(x, r, "bogus")
