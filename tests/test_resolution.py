"""Resolution control: each backbone encodes an image within the pixel range asked for, and says when it cannot."""

from __future__ import annotations

import pytest

import illava
from helpers import random_image
from illava import Resolution


def _tokens(lvlm: illava.LVLM, image, resolution: Resolution = Resolution()) -> int:
    return illava.encode(lvlm, image, resolution=resolution).counts()["llm_input_full"]


@pytest.fixture(params=["qwen", "llava_onevision", "internvl", "minicpmv"])
def any_lvlm(request, lvlm, llava_onevision, internvl, minicpmv) -> illava.LVLM:
    return {"qwen": lvlm, "llava_onevision": llava_onevision, "internvl": internvl, "minicpmv": minicpmv}[request.param]


def test_a_lower_max_pixels_gives_fewer_tokens(any_lvlm):
    large = random_image(7, 900, 1200)
    default = _tokens(any_lvlm, large)
    smallest = any_lvlm.backbone.smallest_image_pixels(any_lvlm.processor)
    capped = _tokens(any_lvlm, large, Resolution(max_pixels=smallest))
    assert capped < default


def test_qwen_takes_the_range_as_its_processors_min_and_max_pixels(lvlm):
    image = random_image(8, 300, 420)
    for resolution in (Resolution(max_pixels=112 * 112), Resolution(min_pixels=600 * 600), Resolution(min_pixels=200 * 200, max_pixels=300 * 300)):
        size = dict(lvlm.processor.image_processor.size)
        size.update({key: value for key, value in (("shortest_edge", resolution.min_pixels), ("longest_edge", resolution.max_pixels)) if value})
        grid = lvlm.processor.image_processor(images=[image], return_tensors="pt", size=size)["image_grid_thw"][0]
        merge = lvlm.processor.image_processor.merge_size
        assert _tokens(lvlm, image, resolution) == int(grid.prod()) // merge**2


def test_internvl_caps_its_tiles(internvl):
    tile = internvl.backbone.smallest_image_pixels(internvl.processor)
    wide = random_image(9, 200, 800)
    one_tile = _tokens(internvl, wide, Resolution(max_pixels=tile))
    two_tiles = _tokens(internvl, wide, Resolution(max_pixels=2 * tile))
    assert one_tile < two_tiles <= _tokens(internvl, wide)


def test_max_pixels_below_the_smallest_image_is_a_clear_error(any_lvlm):
    smallest = any_lvlm.backbone.smallest_image_pixels(any_lvlm.processor)
    with pytest.raises(ValueError, match="max_pixels .* below the smallest image"):
        illava.encode(any_lvlm, random_image(1, 64, 64), resolution=Resolution(max_pixels=smallest - 1))


@pytest.mark.parametrize("kwargs, field", [({"min_pixels": -1}, "min_pixels"), ({"max_pixels": 2.5}, "max_pixels"), ({"min_pixels": 900, "max_pixels": 800}, "min_pixels")])
def test_a_bad_range_names_its_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Resolution(**kwargs)
