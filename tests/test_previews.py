"""Previews are drawn from the host pixels only when something reads them, for every family."""

import numpy as np
import pytest

import illava

FAMILIES = ("qwen25", "llava_onevision", "internvl", "minicpmv")
STAGE1 = illava.MergeConfig(stage1_layers=(1,), stage1_keep=0.5)


@pytest.mark.parametrize("config", [illava.MergeConfig(), STAGE1], ids=["stock", "stage1"])
@pytest.mark.parametrize("family", FAMILIES)
def test_encode_draws_no_preview_until_one_is_read(request, family, config, images):
    lvlm = request.getfixturevalue(family)
    visuals = illava.encode(lvlm, images[:2], config)
    for item in visuals.items:
        # Drawing copies every pixel off the device and resizes it on the CPU: no encode may pay for it.
        assert "preview" not in vars(item.layout)
        assert item.layout.pixels.device.type == "cpu"
    for item in visuals.items:
        preview = item.preview
        assert preview.dtype == np.uint8 and preview.shape[0] == item.token_grid[0] and preview.shape[-1] == 3
        assert preview.std() > 0  # the item's own picture, not an empty canvas
    first, second = (item.preview for item in visuals.items)
    assert first.shape != second.shape or not np.array_equal(first, second)
