"""InternVL: exactness against vanilla transformers, cached decoding against a fresh forward, stage 1
in whole pixel-shuffle groups with the CLS token kept, placeholders per kept token, and the token maps."""

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
)
from helpers import illava_media_encode as encode
from helpers import illava_media_generate as ours
from helpers import vanilla_media_generate as vanilla
import illava
from illava import GenerationOptions, MergeConfig
from illava.backbones.internvl.internvit_stage1 import GroupReducer
from illava.merge import KEPT, MERGED, RECYCLED
from illava.prompt import build_inputs
from illava.video import load_video
from illava.viz import trace_figure

# Stage layers present but keeping everything: iLLaVA's own encoder and decoder loops run.
IDENTITY = MergeConfig(stage1_layers=(1, 3), stage1_keep=1.0, stage2_layers=(1, 2), stage2_keep=1.0)
BOTH = MergeConfig(stage1_layers=(1, 3), stage1_keep=0.4, stage1_recycled=2, stage2_layers=(2,), stage2_keep=0.5)
STEPS = 6
PROMPTS = ("Describe the picture in detail.", "What differs here?", "List every object.", "Tell a story.")
TILE_TOKENS = 16


@pytest.fixture(scope="module")
def pictures():
    """A wide image (three tiles and a thumbnail), a square one (four tiles and a thumbnail), a small one (one tile)."""
    return {"wide": random_image(11, 40, 130), "square": random_image(12, 120, 120), "small": random_image(13, 50, 60)}


@pytest.fixture(scope="module")
def clip():
    """Four frames, all sampled (2 fps from a 2 fps stack)."""
    rng = np.random.default_rng(5)
    return load_video((rng.random((4, 50, 64, 3)) * 255).astype(np.uint8), fps=2, max_frames=8, source_fps=2)


def cases(pictures):
    return {
        "one image": [([pictures["wide"]], "What is this?")],
        "two images": [([pictures["wide"], pictures["small"]], "Compare the two pictures.")],
        "batch of two": [
            ([pictures["small"]], "Describe it."),
            ([pictures["square"], pictures["wide"]], "Which one is brighter?"),
        ],
    }


@pytest.mark.parametrize("case", ["one image", "two images", "batch of two"])
def test_merging_off_equals_vanilla_generate_exactly(internvl, pictures, case):
    requests = cases(pictures)[case]
    expected_ids, expected_logits, _ = vanilla(internvl, requests)
    result = ours(internvl, requests, MergeConfig())
    assert_equals_vanilla(result, expected_ids, expected_logits)


@pytest.mark.parametrize("with_images", [False, True], ids=["video", "two images and a video"])
def test_video_merging_off_equals_vanilla_generate_exactly(internvl, pictures, clip, with_images):
    images = [pictures["wide"], pictures["small"]] if with_images else []
    _, expected_logits, inputs = vanilla(internvl, [(images, "What happens?")], video=clip)
    result = ours(internvl, [(images, "What happens?")], MergeConfig(), video=clip)
    assert torch.equal(result.logits[0], expected_logits[0])
    placeholders = int((inputs["input_ids"] == internvl.model.config.image_token_id).sum())
    assert result.stats[0]["visual_tokens"]["llm_input_full"] == placeholders == TILE_TOKENS * (4 + 5 * with_images)


@pytest.mark.parametrize("case", ["one image", "two images", "video"])
def test_own_loops_keeping_everything_equal_vanilla_exactly(internvl, pictures, clip, case):
    video = clip if case == "video" else None
    requests = cases(pictures).get(case, [([], "What happens?")])
    _, expected_logits, _ = vanilla(internvl, requests, video=video)
    result = ours(internvl, requests, IDENTITY, video=video)
    assert torch.equal(result.logits[0], expected_logits[0])


@pytest.mark.parametrize("case", ["one image", "two images", "video"])
def test_cached_decoding_equals_a_fresh_forward_over_the_reduced_sequence(internvl, pictures, clip, case):
    images = {"one image": [pictures["wide"]], "two images": [pictures["wide"], pictures["small"]], "video": []}[case]
    video = clip if case == "video" else None
    # InternVL's video frames take image placeholders too.
    visual_ids = [internvl.model.config.image_token_id]
    assert_cached_decoding_equals_a_fresh_forward(internvl, images, video, BOTH, visual_ids, PROMPTS, STEPS)


@pytest.mark.parametrize("name", PEERS)
def test_cached_decoding_of_the_papers_peers_equals_a_fresh_forward_at_their_placement(pictures, internvl, name):
    config = placed_peer(internvl, name)
    assert_cached_decoding_equals_a_fresh_forward(internvl, [pictures["wide"], pictures["small"]], None, config, [internvl.model.config.image_token_id], PROMPTS, STEPS)


@pytest.mark.parametrize("video", [False, True], ids=["two images", "video"])
def test_placeholders_match_kept_tokens_tile_by_tile(internvl, pictures, clip, video):
    lvlm = internvl
    processor = lvlm.processor
    images = [] if video else [pictures["wide"], pictures["small"]]
    visuals = encode(lvlm, images, BOTH, clip if video else None)
    text = lvlm.processor.tokenizer.decode(build_inputs(lvlm, [(visuals.items, "What?")])["input_ids"][0])
    kept = [item.tokens_kept for item in visuals.items]
    assert text.count(processor.image_token) == sum(kept) == sum(item.features.shape[0] for item in visuals.items)
    for item in visuals.items:
        views = item.token_grid[0]
        per_view = torch.bincount(item.kept_groups.cpu() // TILE_TOKENS, minlength=views)
        # keep 0.4 over two layers of 16 groups a tile: round(16 * 0.4) groups in every tile.
        assert per_view.tolist() == [round(TILE_TOKENS * 0.4)] * views
        codes = item.trace.stage1.reshape(views, -1)
        assert (np.isin(codes, [KEPT, RECYCLED]).sum(-1) == per_view.numpy()).all()
    spans = [chunk.split(processor.end_image_token)[0] for chunk in text.split(processor.start_image_token)[1:]]
    contexts = [span.count(processor.image_token) for span in spans]
    assert all(span == processor.image_token * n for span, n in zip(spans, contexts)), "nothing else inside <img>"
    if video:
        assert contexts == [round(TILE_TOKENS * 0.4)] * 4
        assert [f"Frame{i}: " in text for i in range(1, 5)] == [True] * 4
    else:
        assert contexts == kept, "one <img>...</img> per image, all its tiles inside"


def test_stage1_keeps_whole_groups_and_the_cls_token(internvl, pictures):
    """Patches leave four at a time (a pixel-shuffle group); the CLS token is in every layer's input."""
    backbone = internvl.backbone
    lengths = []
    hooks = [layer.register_forward_hook(lambda m, a, o: lengths.append(a[0].shape[1])) for layer in backbone.tower.encoder.layer]
    try:
        item = encode(internvl, [pictures["small"]], MergeConfig(stage1_layers=(2,), stage1_keep=0.5)).items[0]
    finally:
        for hook in hooks:
            hook.remove()
    assert lengths == [65, 65, 8 * 4 + 1, 8 * 4 + 1]
    assert item.tokens_kept == 8 and item.token_grid == (1, 4, 4)


def test_a_stage1_layer_at_the_depth_gathers_groups_as_the_pixel_shuffle_does(internvl, pictures):
    """Reducing at the encoder output changes no encoder state: each kept token is the model's own token."""
    images = [pictures["wide"], pictures["small"]]
    depth = internvl.backbone.vit_depth
    stock = encode(internvl, images, MergeConfig())
    whole = encode(internvl, images, MergeConfig(stage1_layers=(depth,), stage1_keep=1.0))
    assert all(torch.equal(a.features, b.features) for a, b in zip(stock.items, whole.items))
    config = MergeConfig(stage1_layers=(depth,), stage1_keep=0.5, stage1_recycled=0)
    for a, b in zip(stock.items, encode(internvl, images, config).items):
        assert b.tokens_kept == a.tokens_kept // 2
        torch.testing.assert_close(b.features, a.features[b.kept_groups], rtol=0, atol=1e-6)


def test_groups_hold_their_patches_in_pixel_shuffle_order(internvl):
    """The model's own pixel shuffle, run on patch numbers, puts them where ``GroupReducer`` groups them."""
    side = internvl.backbone.side
    numbers = torch.arange(side * side, dtype=torch.float64).view(1, side, side, 1)
    shuffled = internvl.model.model.pixel_shuffle(numbers, scale_factor=0.5).reshape(-1, 4).long()
    group, place = GroupReducer(side, 1, MergeConfig()).group_of(torch.arange(side * side))
    assert torch.equal(torch.argsort(group * 4 + place).view(-1, 4), shuffled)


def test_layers_after_the_feature_layer_never_run(internvl, pictures):
    """With vision_feature_layer -2 the last InternViT layer's output is unused: it is not run, nor counted as depth."""
    config = internvl.model.config
    try:
        config.vision_feature_layer = -2
        backbone = internvl.backbone
        assert backbone.vit_depth == len(backbone.tower.encoder.layer) - 1
        images = [pictures["wide"], pictures["small"]]
        stock = encode(internvl, images, MergeConfig())
        calls = []
        hook = backbone.tower.encoder.layer[-1].register_forward_hook(lambda *args: calls.append(1))
        try:
            looped = encode(internvl, images, MergeConfig(stage1_layers=(2,), stage1_keep=1.0))
        finally:
            hook.remove()
        assert not calls
        assert all(torch.equal(a.features, b.features) for a, b in zip(stock.items, looped.items))
    finally:
        config.vision_feature_layer = -1


def test_token_maps_render_both_stages(internvl, pictures):
    visuals = encode(internvl, [pictures["wide"]], BOTH)
    result = illava.generate(internvl, visuals, "Describe.", BOTH, GenerationOptions(max_new_tokens=1))
    item, trace = visuals.items[0], result.traces[0][0]
    assert trace.grid == item.token_grid == (4, 4, 4) and item.preview.shape == (4, 64, 64, 3)
    stage1 = int(np.isin(trace.stage1, [KEPT, RECYCLED]).sum())
    stage2 = int(np.isin(trace.stage2, [KEPT, RECYCLED]).sum())
    assert stage1 == item.tokens_kept and stage2 < stage1
    assert (trace.stage1 == MERGED).any(), "recycling folds discarded groups into kept ones"
    figure = trace_figure(trace, item.preview)
    assert figure.dtype == np.uint8 and figure.shape[1] > 4 * item.preview.shape[2]


def test_a_sample_gives_the_same_result_alone_and_in_a_batch(internvl, pictures):
    first = ([pictures["wide"]], "Describe the picture.")
    second = ([pictures["square"], pictures["small"]], "Which of these two is more colourful? Explain.")
    assert_alone_equals_batched(internvl, first, second, BOTH)


@pytest.mark.parametrize("config", BASELINE_CONFIGS, ids=lambda config: config.method)
@pytest.mark.parametrize("video", [False, True], ids=["images", "video"])
def test_the_baseline_methods_run(internvl, pictures, clip, config, video):
    visuals = encode(internvl, [] if video else [pictures["wide"], pictures["small"]], config, clip if video else None)
    assert_baseline_method_runs(internvl, visuals, "Describe them.", config)


def test_stage1_refuses_a_model_that_keeps_the_cls_token(internvl, pictures):
    config = internvl.model.config
    try:
        config.vision_feature_select_strategy = "full"
        with pytest.raises(ValueError, match="'default'"):
            encode(internvl, [pictures["small"]], MergeConfig(stage1_layers=(2,), stage1_keep=0.5))
    finally:
        config.vision_feature_select_strategy = "default"
