"""The image quality measures of ccsr.engine.quality on controlled inputs: identical
images score 0, and more damage scores worse, in the way each measure claims."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from ccsr.engine.quality import gmsd, radial_power_spectrum, spectrum_distance


@pytest.fixture(scope="module")
def photo(fixtures_dir) -> np.ndarray:
    return np.asarray(Image.open(fixtures_dir / "images" / "astronaut.png").convert("RGB").crop((128, 128, 384, 384)))


def _blur(a: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(radius)))


def test_identical_images_score_zero(photo):
    assert gmsd(photo, photo) == 0.0
    assert spectrum_distance(photo, photo) == 0.0


def test_more_blur_scores_worse(photo):
    g = [gmsd(_blur(photo, r), photo) for r in (0.5, 1.5, 3.0)]
    s = [spectrum_distance(_blur(photo, r), photo) for r in (0.5, 1.5, 3.0)]
    assert 0 < g[0] < g[1] < g[2], g
    assert 0 < s[0] < s[1] < s[2], s


def test_spectrum_sees_missing_high_frequencies_and_added_noise(photo):
    """Blur removes power at the top of the spectrum; white noise adds it: both move away from the photo."""
    ref = radial_power_spectrum(photo)
    blurred = radial_power_spectrum(_blur(photo, 2.0))
    rng = np.random.default_rng(0)
    noisy = np.clip(photo + rng.normal(0, 25, photo.shape), 0, 255).astype(np.uint8)
    top = slice(len(ref) * 3 // 4, None)
    assert (blurred[top] < ref[top] - 1).all()  # more than 10x less power in the top quarter of bands
    assert (radial_power_spectrum(noisy)[top] > ref[top]).all()
    assert spectrum_distance(noisy, photo) > 0.15  # measured 0.25
    # The low bands (the picture's layout) are nearly untouched by a light blur.
    assert np.abs(blurred[:4] - ref[:4]).max() < 0.3


def test_shape_and_size_errors(photo):
    with pytest.raises(ValueError, match="differ in size"):
        gmsd(photo, photo[:-2])
    with pytest.raises(ValueError, match="differ in size"):
        spectrum_distance(photo, photo[:, :-2])
    with pytest.raises(ValueError, match="too small"):
        spectrum_distance(photo[:40, :40], photo[:40, :40])
