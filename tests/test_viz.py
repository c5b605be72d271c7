import numpy as np

import illava
from illava.merge import DROPPED, KEPT, MERGED, RECYCLED
from illava.trace import ItemTrace
from illava.viz import stage_maps, token_map, trace_figure


def test_token_map_shows_kept_cells_as_they_are_and_darkens_the_rest():
    image = np.full((40, 60, 3), 200, dtype=np.uint8)
    codes = np.array([[KEPT, DROPPED, MERGED], [RECYCLED, KEPT, KEPT]], dtype=np.int8)
    out = token_map(image, codes)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.all(out[5:15, 5:15] == 200)  # kept
    assert np.all(out[5:15, 25:35] == 40)  # dropped, darkened to 20%
    merged = out[3:17, 43:57].astype(int)
    hatched = merged[..., 2] > merged[..., 0]
    assert 0.1 < hatched.mean() < 0.4  # folded into a recycled token: dimmed, with blue hatching
    assert np.all(merged[~hatched] == 40)
    recycled = out[25:35, 5:15].astype(int)
    assert np.all(recycled[..., 0] > recycled[..., 2])  # holds a recycled token: amber


def test_maps_follow_the_trace_of_a_real_run(qwen25, images):
    config = illava.MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)
    visuals = illava.encode(qwen25, images[0], config)
    result = illava.generate(qwen25, visuals, "Describe.", config, illava.GenerationOptions(max_new_tokens=1))
    trace = result.traces[0][0]
    assert trace.stage2 is not None
    stage1_kept = np.isin(trace.stage1, [KEPT, RECYCLED]).sum()
    stage2_kept = np.isin(trace.stage2, [KEPT, RECYCLED]).sum()
    assert stage1_kept == visuals.items[0].tokens_kept and stage2_kept < stage1_kept
    preview = visuals.items[0].preview
    assert preview.shape[0] == 1
    figure = trace_figure(trace, preview)
    assert figure.shape[0] == preview.shape[1] and figure.shape[1] > 3 * preview.shape[2]
    first, second = stage_maps(trace, preview[0], 1)[0], stage_maps(trace, preview[0], 2)[0]
    assert first.mean() > second.mean()


def test_a_trace_without_stage2_says_so():
    trace = ItemTrace("image", (1, 2, 2), np.ones((1, 2, 2), dtype=np.int8))
    try:
        stage_maps(trace, np.zeros((4, 4, 3), dtype=np.uint8), 2)
    except ValueError as error:
        assert "run Generate with stage 2 layers" in str(error)
    else:
        raise AssertionError("expected a ValueError")
