import numpy as np

import illava
from illava.merge import DROPPED, KEPT, MERGED, RECYCLED
from illava.trace import ItemTrace
from illava.viz import (
    caption_strip,
    frame_group_labels,
    labelled_map,
    stage_caption,
    token_map,
    trace_figure,
    video_strip,
)


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
    first, second = token_map(preview[0], trace.stage1[0]), token_map(preview[0], trace.stage2[0])
    assert first.mean() > second.mean()
    item = visuals.items[0]
    assert stage_caption(1, trace.stage1[0]).endswith(f": {item.tokens_kept} / {item.tokens_full} tokens kept")
    assert stage_caption(2, trace.stage2[0]).endswith(f": {stage2_kept} / {item.tokens_full} tokens kept")


def test_captions_count_kept_and_recycled_slots_of_the_stage():
    codes = np.array([[KEPT, KEPT, DROPPED, MERGED], [RECYCLED, KEPT, DROPPED, DROPPED]], dtype=np.int8)
    assert stage_caption(1, codes) == "stage 1 (vision encoder): 4 / 8 tokens kept"
    assert stage_caption(2, codes) == "after stage 2 (LLM): 4 / 8 tokens kept"


def test_a_small_map_is_enlarged_crisply_under_its_caption():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (28, 42, 3), dtype=np.uint8)
    codes = np.full((2, 3), KEPT, dtype=np.int8)
    panel = labelled_map(frame, codes, "stage 1 (vision encoder): 6 / 6 tokens kept")
    strip = panel.shape[0] - 28 * 14  # 384 / 28 rounds up to a 14x enlargement
    assert strip >= 15 and panel.shape[1] == 42 * 14
    assert np.array_equal(panel[strip:], frame.repeat(14, axis=0).repeat(14, axis=1))  # kept cells unchanged, no blur
    assert (panel[:strip] < 100).any(), "the caption strip holds dark text"
    assert not np.array_equal(caption_strip("4 / 8 tokens kept", 300), caption_strip("5 / 8 tokens kept", 300))


def test_a_large_map_keeps_its_size():
    frame = np.zeros((400, 500, 3), dtype=np.uint8)
    panel = labelled_map(frame, np.full((2, 2), KEPT, dtype=np.int8), "x")
    assert panel.shape[1] == 500 and 400 < panel.shape[0] < 460


def test_frame_groups_are_named_by_their_sampled_frames():
    assert frame_group_labels(8, 4) == ["frames 1-2", "frames 3-4", "frames 5-6", "frames 7-8"]
    assert frame_group_labels(7, 4)[-1] == "frame 7"
    assert frame_group_labels(3, 3) == ["frame 1", "frame 2", "frame 3"]


def test_a_video_strip_has_a_cell_per_frame_group_and_a_row_per_stage():
    stage1 = np.full((3, 2, 2), KEPT, dtype=np.int8)
    stage2 = stage1.copy()
    stage2[:, 0] = DROPPED
    frames = np.full((3, 28, 28, 3), 128, dtype=np.uint8)
    one_stage = video_strip(ItemTrace("video", (3, 2, 2), stage1), frames, frame_count=6)
    both = video_strip(ItemTrace("video", (3, 2, 2), stage1, stage2), frames, frame_count=6)
    cell = 28 * 7  # enlarged to at least 192 px
    assert one_stage.shape[1] == both.shape[1] == 3 * cell + 2 * 6
    assert both.shape[0] > 2 * one_stage.shape[0] - 20
    wrapped = video_strip(ItemTrace("video", (3, 2, 2), stage1), frames, frame_count=6, columns=2)
    assert wrapped.shape[1] == 2 * cell + 6 and wrapped.shape[0] > 2 * cell + 18  # a second row for the third group
