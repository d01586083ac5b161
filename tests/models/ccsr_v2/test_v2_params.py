"""CCSR-v2's parameters: defaults, ranges and the cross-field rules, each
error naming its field before any model loads."""

import pytest
from pydantic import ValidationError

from ccsr.errors import InvalidParameter
from ccsr.models.ccsr_v2.params import V2Params, check_params, check_size, passes, sizes


def test_defaults_are_the_one_step_recipe_at_scale_4():
    p = V2Params()
    assert (p.steps, p.t_max, p.t_min, p.guidance_scale, p.scale) == (1, 0.6666, 0.0, 1.0, 4)
    assert (p.start_point, p.color_fix_type, p.process_size, p.tile_diffusion) == ("lr", "adain", 512, "none")
    assert p.prompt == "clean, high-resolution, 8k" and p.negative_prompt.startswith("blurry, dotted")
    assert (p.tile_diffusion_size, p.tile_diffusion_stride, p.tile_vae, p.tile_vae_decoder_size) == (512, 256, False, 224)
    assert passes(p) == 1


def test_the_two_step_recipe_is_two_passes():
    assert passes(V2Params(steps=6, t_min=0.5, guidance_scale=4.5)) == 2
    assert passes(V2Params(steps=6, t_max=0.6667, t_min=0.5)) == 2
    assert passes(V2Params(steps=10, t_max=0.6, t_min=0.2)) == 1 + 6 - 2
    assert passes(V2Params(steps=4, t_max=1.0)) == 4  # no re-noise pass: the loop runs every timestep


@pytest.mark.parametrize("fields, field, words", [
    (dict(steps=1, t_min=0.5), "t_min", "must be 0 with steps=1"),
    (dict(steps=1, t_max=1.0), "t_max", "must be below 1"),
    (dict(steps=6, t_min=0.7, t_max=0.6), "t_min", "smaller than t_max"),
    (dict(steps=6, t_max=0.05), "t_max", "round(steps*t_max)"),
    (dict(steps=6, t_min=0.05), "t_min", "round(steps*t_min)"),
    (dict(steps=2, t_max=0.5, t_min=0.4), "steps", "leave no sampling step"),
    (dict(tile_diffusion="gaussian", tile_diffusion_size=100), "tile_diffusion_size", "multiple of 8"),
    (dict(tile_diffusion="gaussian", tile_diffusion_stride=12), "tile_diffusion_stride", "multiple of 8"),
    (dict(tile_diffusion="gaussian", tile_diffusion_size=128, tile_diffusion_stride=256), "tile_diffusion_stride", "must not exceed"),
])
def test_cross_field_rules_name_the_field(fields, field, words):
    with pytest.raises(InvalidParameter) as err:
        check_params(V2Params(**fields))
    assert err.value.field == field and words in err.value.message


@pytest.mark.parametrize("fields", [dict(scale=0), dict(scale=2.5), dict(guidance_scale=0.5), dict(steps=0),
                                    dict(t_max=0), dict(t_min=1), dict(start_point="x"), dict(color_fix_type="mix"),
                                    dict(tile_diffusion="mix"), dict(process_size=8), dict(seed=-1), dict(typo=1)])
def test_ranges_and_enums_are_checked(fields):
    with pytest.raises(ValidationError) as err:
        V2Params(**fields)
    assert next(iter(fields)) in str(err.value)


def test_sizes_follow_the_official_resizes():
    p = V2Params(scale=4, process_size=512)
    assert sizes(200, 100, p) == ((1024, 512), (800, 400))  # short side 100 < 128: enlarged to 128 first
    assert sizes(130, 131, p) == ((520, 520), (520, 524))
    assert sizes(129, 130, V2Params(scale=4, process_size=64)) == ((512, 520), (516, 520))  # crop to multiples of 8


def test_size_limits_name_the_field():
    with pytest.raises(InvalidParameter) as err:
        check_size(V2Params(scale=8), 1000, 1000, 4096 * 4096)
    assert err.value.field == "scale" and "max_output_pixels" in err.value.message
    with pytest.raises(InvalidParameter) as err:
        check_size(V2Params(scale=1, process_size=4096), 1, 3000, 4096 * 4096)
    assert err.value.field == "process_size"
    check_size(V2Params(), 128, 128, 4096 * 4096)
