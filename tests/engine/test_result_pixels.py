"""The pixel work of results (issue 23): what an input becomes before a model
sees it (ccsr.engine.normalize) and how a result is encoded (ccsr.engine.images)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageDraw

from ccsr.engine.images import encode_image, flatten, png_with_chunks, resize_alpha, with_alpha
from ccsr.engine.normalize import icc_space, normalize_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "images"))
from make_result_fixtures import display_p3_profile  # noqa: E402

P3 = display_p3_profile()


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _stripes() -> np.ndarray:
    """Saturated red with blue stripes and a green square: where 4:2:0 chroma bleeds."""
    a = np.zeros((64, 64, 3), np.uint8)
    a[:, :] = (255, 0, 0)
    for x in range(0, 64, 8):
        a[:, x:x + 3] = (0, 0, 255)
    a[20:40, 20:40] = (0, 255, 0)
    return a


# --- inputs ----------------------------------------------------------------------
def test_sixteen_bit_grey_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 256).astype(np.uint16)[None, :].repeat(4, 0)
    im = Image.fromarray(ramp)  # I;16
    assert im.convert("L").getextrema()[0] == 0 and np.asarray(im.convert("L"))[0, 128] == 255  # Pillow's own: clipped
    out = normalize_image(im)
    assert out.mode == "L"
    row = np.asarray(out)[0].astype(int)
    assert abs(row[128] - 128) <= 1 and row[0] == 0 and row[-1] == 255


@pytest.mark.parametrize("mode, want", [("1", "L"), ("L", "L"), ("P", "RGB"), ("CMYK", "RGB"), ("RGBX", "RGB"),
                                        ("I", "L"), ("YCbCr", "RGB")])
def test_every_mode_becomes_one_of_four(mode, want):
    im = Image.new("RGB", (4, 3), (10, 200, 30)).convert(mode)
    assert normalize_image(im).mode == want


def test_transparency_is_kept_and_an_opaque_alpha_dropped():
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 1)
    pal.info["transparency"] = 1
    out = normalize_image(pal)
    assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 0 and out.getpixel((1, 1)) == (255, 0, 0, 255)
    la = Image.new("LA", (4, 4), (90, 40))
    assert normalize_image(la).mode == "LA"
    assert normalize_image(Image.new("RGBA", (4, 4), (1, 2, 3, 255))).mode == "RGB"
    assert normalize_image(Image.new("LA", (4, 4), (7, 255))).mode == "L"


def test_orientation_is_applied_and_only_a_matching_profile_kept(fixtures_dir):
    with Image.open(fixtures_dir / "images" / "rocket-p3-rot6.jpg") as im:
        im.load()
        out = normalize_image(im)
    assert out.size == (48, 64) and out.mode == "RGB"  # stored 64x48, shown 48x64
    assert out.info == {"icc_profile": P3} and icc_space(P3) == b"RGB "
    assert "exif" not in out.info
    grey_with_rgb_profile = Image.new("L", (2, 2))
    grey_with_rgb_profile.info["icc_profile"] = P3
    assert normalize_image(grey_with_rgb_profile).info == {}  # a grey image with an RGB profile: dropped


def test_a_cmyk_input_goes_through_its_own_profile():
    im = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # red ink
    rgb = normalize_image(im)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0))[0] > 200 and rgb.info == {}


# --- outputs ---------------------------------------------------------------------
def test_jpeg_at_444_keeps_saturated_edges():
    a = _stripes()
    im = Image.fromarray(a)
    ours = np.asarray(_decode(encode_image(im, "jpeg")).convert("RGB")).astype(int)
    assert np.abs(ours - a).max() <= 20  # measured 13
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95)  # Pillow's default 4:2:0, for contrast
    usual = np.asarray(_decode(buf.getvalue())).astype(int)
    assert np.abs(usual - a).max() > 100


def test_webp_is_lossless_with_alpha():
    rgba = np.dstack([_stripes(), np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))])
    back = _decode(encode_image(Image.fromarray(rgba, "RGBA"), "webp"))
    assert back.format == "WEBP" and back.mode == "RGBA"
    got = np.asarray(back)
    seen = rgba[..., 3] > 0  # the colour under fully transparent pixels is not kept (nothing shows it)
    assert np.array_equal(got[..., 3], rgba[..., 3]) and np.array_equal(got[seen], rgba[seen])


def test_png_carries_the_profile_and_the_text():
    data = encode_image(Image.fromarray(_stripes()), "png", icc=P3, text={"ccsr": '{"seed": 3}'})
    im = _decode(data)
    assert im.info["icc_profile"] == P3 and im.info["ccsr"] == '{"seed": 3}'
    assert np.array_equal(np.asarray(im), _stripes())
    assert png_with_chunks(data[:33] + data[33:]) == data  # nothing to add: unchanged


@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_jpeg_and_webp_carry_the_profile(fmt):
    im = _decode(encode_image(Image.fromarray(_stripes()), fmt, icc=P3))
    assert im.info["icc_profile"] == P3
    ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))  # a profile lcms reads


def test_grey_stays_grey_where_the_format_has_grey():
    grey = Image.new("L", (8, 8), 77)
    assert _decode(encode_image(grey, "png")).mode == "L"
    assert _decode(encode_image(grey, "jpeg")).mode == "L"
    webp = _decode(encode_image(grey, "webp", icc=b"x" * 16))  # no grey in WebP: R = G = B, no grey profile
    assert webp.mode == "RGB" and webp.getpixel((3, 3)) == (77, 77, 77) and "icc_profile" not in webp.info


def test_bicubic_alpha_has_no_halo_where_lanczos_rings():
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    ours = np.asarray(resize_alpha(mask, (256, 256))).astype(int)
    lanczos = np.asarray(mask.resize((256, 256), Image.LANCZOS)).astype(int)
    outside = np.ones((256, 256), bool)
    outside[56:200, 56:200] = False  # more than 8 px (2 source px) outside the square
    assert ours[outside].max() == 0 and lanczos[outside].max() > 0
    assert ours[72:184, 72:184].min() == 255  # and no dip inside
    edge = ours[128, 60:70]
    assert edge[0] == 0 and edge[-1] == 255 and sum(0 < v < 255 for v in edge) <= 4  # as sharp: 4 px ramp at x4


def test_flatten_and_reattach():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 255, 0))
    rgba.putpixel((1, 1), (0, 0, 255, 255))
    flat = flatten(rgba)
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 255, 255) and flat.getpixel((1, 1)) == (0, 0, 255)
    alpha = rgba.getchannel("A")
    out = with_alpha(Image.new("RGB", (8, 8), (9, 9, 9)), alpha, grey=True)
    assert out.mode == "LA" and out.size == (8, 8) and out.getpixel((0, 0)) == (9, 0)
