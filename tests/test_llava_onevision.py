"""LLaVA-OneVision: exactness against vanilla transformers, cached decoding against a fresh forward,
the packing of kept tokens with image newlines, and the token maps."""

from functools import partial

import numpy as np
import pytest
import torch

from helpers import (
    BASELINE_CONFIGS,
    PEERS,
    assert_alone_equals_batched,
    assert_baseline_method_runs,
    assert_cached_decoding_equals_a_fresh_forward,
    assert_equals_vanilla,
    placed_peer,
    random_image,
    vanilla_media_generate,
)
from helpers import illava_media_generate as ours
import illava
from illava import GenerationOptions, MergeConfig
from illava.backbones.llava_onevision.layout import image_layout, packing
from illava.merge import DROPPED, KEPT, RECYCLED
from illava.prompt import build_inputs
from illava.video import load_video
from illava.viz import trace_figure

# Stage layers present but keeping everything: iLLaVA's own encoder and decoder loops run.
IDENTITY = MergeConfig(stage1_layers=(1, 3), stage1_keep=1.0, stage2_layers=(1, 2), stage2_keep=1.0)
BOTH = MergeConfig(stage1_layers=(1, 3), stage1_keep=0.4, stage1_recycled=2, stage2_layers=(2,), stage2_keep=0.5)
STEPS = 6
PROMPTS = ("Describe the picture in detail.", "What differs here?", "List every object.", "Tell a story.")


@pytest.fixture(scope="module")
def pictures():
    """A wide image whose anyres grid is cropped (padding rows), a square one that fills its grid, a tall one."""
    return {"wide": random_image(11, 40, 130), "square": random_image(12, 120, 120), "tall": random_image(13, 90, 70)}


@pytest.fixture(scope="module")
def clip():
    """Four frames, all sampled (2 fps from a 2 fps stack)."""
    rng = np.random.default_rng(5)
    return load_video((rng.random((4, 50, 64, 3)) * 255).astype(np.uint8), fps=2, max_frames=8, source_fps=2)


# Each prompt's images go to the processor as one nested list, as LLaVA-OneVision batches them.
vanilla = partial(vanilla_media_generate, nested_images=True)


def cases(pictures):
    return {
        "one image": [([pictures["wide"]], "What is this?")],
        "two images": [([pictures["wide"], pictures["tall"]], "Compare the two pictures.")],
        "batch of two": [
            ([pictures["tall"]], "Describe it."),
            ([pictures["square"], pictures["wide"]], "Which one is brighter?"),
        ],
    }


@pytest.mark.parametrize("case", ["one image", "two images", "batch of two"])
def test_merging_off_equals_vanilla_generate_exactly(llava_onevision, pictures, case):
    requests = cases(pictures)[case]
    expected_ids, expected_logits, _ = vanilla(llava_onevision, requests)
    result = ours(llava_onevision, requests, MergeConfig())
    assert_equals_vanilla(result, expected_ids, expected_logits)


@pytest.mark.parametrize("with_images", [False, True], ids=["video", "two images and a video"])
def test_video_merging_off_equals_vanilla_generate_exactly(llava_onevision, pictures, clip, with_images):
    images = (pictures["wide"], pictures["tall"]) if with_images else ()
    _, expected_logits, inputs = vanilla(llava_onevision, [(images, "What happens?")], video=clip)
    result = ours(llava_onevision, [(images, "What happens?")], MergeConfig(), video=clip)
    assert torch.equal(result.logits[0], expected_logits[0])
    video_tokens = int((inputs["input_ids"] == llava_onevision.model.config.video_token_id).sum())
    assert video_tokens == 4 * 9 + 1
    assert result.stats[0]["visual_tokens"]["llm_input_full"] == video_tokens + 26 * len(images)


@pytest.mark.parametrize("case", ["square image", "two images", "video"])
def test_own_loops_keeping_everything_equal_vanilla_exactly(llava_onevision, pictures, clip, case):
    """Where stage 1 keeps every token (no anyres padding to crop), its SigLIP loop and packing are the model's own."""
    requests = {"square image": [([pictures["square"]], "What is this?")], "two images": cases(pictures)["two images"]}
    video = clip if case == "video" else None
    requests = requests.get(case, [((), "What happens?")])
    _, expected_logits, _ = vanilla(llava_onevision, requests, video=video)
    result = ours(llava_onevision, requests, IDENTITY, video=video)
    assert torch.equal(result.logits[0], expected_logits[0])


def test_layers_after_the_feature_layer_never_run(llava_onevision, pictures):
    """With vision_feature_layer -2 the last SigLIP layer's output is unused: it is not run, nor counted as depth."""
    config = llava_onevision.model.config
    try:
        config.vision_feature_layer = -2
        backbone = llava_onevision.backbone
        assert backbone.vit_depth == len(backbone.tower.encoder.layers) - 1
        images = [pictures["wide"], pictures["tall"]]
        stock = illava.encode(llava_onevision, images, MergeConfig())
        calls = []
        hook = backbone.tower.encoder.layers[-1].register_forward_hook(lambda *args: calls.append(1))
        try:
            looped = illava.encode(llava_onevision, images, MergeConfig(stage1_layers=(2,), stage1_keep=1.0))
        finally:
            hook.remove()
        assert not calls
        for a, b in zip(stock.items, looped.items):
            assert torch.equal(a.features, b.features)
        with pytest.raises(ValueError, match="stage1_layers contains 4"):
            illava.encode(llava_onevision, images, MergeConfig(stage1_layers=(4,), stage1_keep=0.5))
    finally:
        config.vision_feature_layer = -1


def test_placeholders_match_packed_features_with_newlines(llava_onevision, pictures):
    lvlm = llava_onevision
    image = pictures["wide"]
    layout = image_layout(lvlm.model.config, (image.height, image.width), single=True)
    _, _, inputs = vanilla(lvlm, [([image], "What?")], max_new_tokens=1)
    assert layout.tokens_full == int((inputs["input_ids"] == lvlm.model.config.image_token_id).sum())
    visuals = illava.encode(lvlm, [image], MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage1_recycled=1))
    item = visuals.items[0]
    prompt = build_inputs(lvlm, [(visuals.items, "What?")])
    assert (
        int((prompt["input_ids"] == lvlm.model.config.image_token_id).sum())
        == item.tokens_kept
        == item.features.shape[0]
    )
    groups = item.kept_groups.cpu()
    newline = groups < 0
    base = layout.side**2
    tokens = groups[~newline]
    assert torch.equal(tokens[tokens < base], torch.sort(tokens[tokens < base]).values), "base tile in raster order"
    assert not newline[: int((tokens < base).sum())].any(), "the base tile has no newline"
    # The grid part: raster order over the assembled tiles, a newline after each row that kept a token.
    grid_keys, grid_rows = layout.order[tokens[tokens >= base]], layout.row[tokens[tokens >= base]]
    assert torch.equal(grid_keys, torch.sort(grid_keys).values)
    assert int(newline.sum()) == torch.unique(grid_rows).numel() and bool(newline[-1])
    slots = groups.tolist()
    for before, here, after in zip(slots, slots[1:], slots[2:]):
        if here < 0:
            assert layout.row[before] != layout.row[after], "a newline ends its row"
        elif here >= base and after >= 0:
            assert layout.row[here] == layout.row[after], "a row never ends without a newline"
    codes = item.trace.stage1.reshape(-1)
    assert not layout.cells.all(), "the wide image's grid has padding rows the model crops"
    assert (codes[~layout.cells.numpy()] == DROPPED).all()
    assert int(np.isin(codes, [KEPT, RECYCLED]).sum()) == tokens.numel()
    assert item.features[newline.to(item.features.device)].eq(lvlm.model.model.image_newline).all()


def test_a_row_without_kept_tokens_gets_no_newline(llava_onevision):
    layout = image_layout(llava_onevision.model.config, (120, 120), single=True)
    side = layout.side
    base = side * side
    # Tile 1 is the grid's top-left tile: keep two tokens of its first row and one of its third, none of its second.
    kept = torch.tensor([base + 1, base + 3, base + 2 * side + 4, 0])
    assert packing(layout, kept).tolist() == [3, 0, 1, -1, 2, -1]


@pytest.mark.parametrize("case", ["one image", "two images", "video"])
def test_cached_decoding_equals_a_fresh_forward_over_the_reduced_sequence(llava_onevision, pictures, clip, case):
    images = {"one image": [pictures["wide"]], "two images": [pictures["wide"], pictures["tall"]], "video": []}[case]
    video = clip if case == "video" else None
    config = llava_onevision.model.config
    visual_ids = [config.image_token_id, config.video_token_id]
    assert_cached_decoding_equals_a_fresh_forward(llava_onevision, images, video, BOTH, visual_ids, PROMPTS, STEPS)


@pytest.mark.parametrize("name", PEERS)
def test_cached_decoding_of_the_papers_peers_equals_a_fresh_forward_at_their_placement(pictures, llava_onevision, name):
    config = placed_peer(llava_onevision, name)
    assert_cached_decoding_equals_a_fresh_forward(llava_onevision, [pictures["wide"], pictures["tall"]], None, config, [llava_onevision.model.config.image_token_id], PROMPTS, STEPS)


@pytest.mark.parametrize("layers, keep", [((2,), 0.5), ((1, 3), 0.3)])
def test_video_stage1_keeps_whole_pooled_cells(llava_onevision, clip, layers, keep):
    config = MergeConfig(stage1_layers=layers, stage1_keep=keep)
    item = illava.encode(llava_onevision, None, config, video=clip.pixels, video_fps=2, fps=2).items[0]
    assert item.token_grid == (4, 3, 3) and item.tokens_full == 4 * 9 + 1 and item.patches == 4 * 25
    assert item.tokens_kept == 4 * round(9 * keep) + 1, (
        "per frame, its share of pooled cells; one newline for the video"
    )
    assert item.kept_groups[-1] == -1 and bool((item.kept_groups[:-1] >= 0).all())
    assert torch.equal(item.kept_groups[:-1], torch.sort(item.kept_groups[:-1]).values), (
        "frame after frame, raster order"
    )
    assert int((item.trace.stage1 == KEPT).sum()) == item.tokens_kept - 1


def test_token_maps_render_both_stages(llava_onevision, pictures):
    visuals = illava.encode(llava_onevision, [pictures["wide"]], BOTH)
    result = illava.generate(llava_onevision, visuals, "Describe.", BOTH, GenerationOptions(max_new_tokens=1))
    item, trace = visuals.items[0], result.traces[0][0]
    assert trace.grid == item.token_grid == (3, 5, 5) and item.preview.shape == (3, 70, 70, 3)
    stage1 = int(np.isin(trace.stage1, [KEPT, RECYCLED]).sum())
    stage2 = int(np.isin(trace.stage2, [KEPT, RECYCLED]).sum())
    assert stage1 == int((item.kept_groups >= 0).sum()) and stage2 < stage1
    figure = trace_figure(trace, item.preview)
    assert figure.dtype == np.uint8 and figure.shape[1] > 3 * item.preview.shape[2]


def test_a_grid_the_model_shrinks_is_packed_and_budgeted(llava_onevision, pictures):
    """With ``anyres_max_1`` the model shrinks a 2x2 grid bilinearly; off stays exact, stage 1 budgets for the shrink."""
    lvlm = llava_onevision
    try:
        lvlm.model.config.vision_aspect_ratio = lvlm.processor.vision_aspect_ratio = "anyres_max_1"
        requests = [([pictures["square"]], "What is this?")]
        _, expected_logits, inputs = vanilla(lvlm, requests, max_new_tokens=2)
        result = ours(lvlm, requests, MergeConfig(), max_new_tokens=2)
        assert torch.equal(result.logits[0], expected_logits[0])
        item = illava.encode(lvlm, [pictures["square"]], MergeConfig()).items[0]
        assert (
            item.tokens_full == item.tokens_kept == int((inputs["input_ids"] == lvlm.model.config.image_token_id).sum())
        )
        reduced = illava.encode(lvlm, [pictures["square"]], MergeConfig(stage1_layers=(2,), stage1_keep=0.5)).items[0]
        grid_tokens = int((reduced.kept_groups >= 25).sum())
        assert grid_tokens == 4 * round(25 / 4 * 0.5), "each grid tile keeps half of its share of the shrunk grid"
    finally:
        lvlm.model.config.vision_aspect_ratio = lvlm.processor.vision_aspect_ratio = "anyres_max_9"


def test_a_sample_gives_the_same_result_alone_and_in_a_batch(llava_onevision, pictures):
    first = ([pictures["wide"]], "Describe the picture.")
    second = ([pictures["square"], pictures["tall"]], "Which of these two is more colourful? Explain.")
    assert_alone_equals_batched(llava_onevision, first, second, BOTH)


@pytest.mark.parametrize("size", [(40, 130), (130, 40), (90, 70), (70, 90), (120, 120), (30, 200), (200, 30), (64, 64)])
def test_the_packing_of_every_token_is_the_models_own(llava_onevision, size):
    """The model's ``pack_image_features`` run on token numbers gives the order ``packing`` computes."""
    model = llava_onevision.model.model
    layout = image_layout(llava_onevision.model.config, size, single=True)
    numbers = torch.arange(layout.cells.numel(), dtype=torch.float64).view(layout.tiles, -1, 1)
    packed, _ = model.pack_image_features([numbers], torch.tensor([size]), torch.tensor([-1.0], dtype=torch.float64))
    assert packed[0][:, 0].long().tolist() == packing(layout, torch.arange(layout.cells.numel())).tolist()
    assert layout.tokens_full == packed[0].shape[0]


def test_a_stage1_layer_at_the_depth_reduces_the_encoder_output(llava_onevision, pictures):
    images = [pictures["square"], pictures["tall"]]
    depth = llava_onevision.backbone.vit_depth
    stock = illava.encode(llava_onevision, images, MergeConfig())
    whole = illava.encode(llava_onevision, images, MergeConfig(stage1_layers=(depth,), stage1_keep=1.0))
    assert all(torch.equal(a.features, b.features) for a, b in zip(stock.items, whole.items))
    reduced = illava.encode(llava_onevision, images, MergeConfig(stage1_layers=(depth,), stage1_keep=0.5))
    assert [item.tokens_kept for item in reduced.items] == [round(25 * 0.5) + 1] * 2


@pytest.mark.parametrize("config", BASELINE_CONFIGS, ids=lambda config: config.method)
def test_the_baseline_methods_run_on_images(llava_onevision, pictures, config):
    visuals = illava.encode(llava_onevision, [pictures["wide"], pictures["tall"]], config)
    assert_baseline_method_runs(llava_onevision, visuals, "Compare them.", config)


def test_video_stage1_takes_only_methods_that_keep_whole_cells(llava_onevision, clip):
    video = dict(video=clip.pixels, video_fps=2, fps=2)
    for method in ("visionzip", "tome"):
        with pytest.raises(ValueError, match="keeps or drops whole pooled cells"):
            illava.encode(
                llava_onevision, None, MergeConfig(method=method, stage1_layers=(2,), stage1_keep=0.5), **video
            )
    item = illava.encode(
        llava_onevision, None, MergeConfig(method="random", stage1_layers=(2,), stage1_keep=0.5), **video
    )
    assert item.items[0].tokens_kept == 4 * round(9 * 0.5) + 1
