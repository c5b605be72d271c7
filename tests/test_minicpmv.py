"""MiniCPM-V 4.6: exactness against vanilla transformers, cached decoding against a fresh forward over the
reduced sequence (Qwen3.5's linear-attention layers included), stage 1 in whole LLM-token blocks per
slice, placeholders per kept token, and the token maps; sliced images, several images and video."""

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
from helpers import illava_media_encode as encode
from helpers import illava_media_generate as ours
import illava
from illava import GenerationOptions, MergeConfig
from illava.backbones.minicpmv.stage1 import Slice
from illava.merge import DROPPED, KEPT, MERGED, RECYCLED
from illava.prompt import build_inputs
from illava.video import load_video
from illava.viz import trace_figure

# Stage layers present but keeping everything: iLLaVA's own encoder and decoder loops run. Layer 1 is
# before the window merger (blocks of 4x4 patches), 3 after it (2x2 merged tokens), 4 the output.
IDENTITY = MergeConfig(stage1_layers=(1, 3, 4), stage1_keep=1.0, stage2_layers=(2,), stage2_keep=1.0)
BOTH = MergeConfig(stage1_layers=(1, 3), stage1_keep=0.4, stage1_recycled=2, stage2_layers=(2,), stage2_keep=0.5)
STEPS = 6
PROMPTS = ("Describe the picture in detail.", "What differs here?", "List every object.", "Tell a story.")


@pytest.fixture(scope="module")
def pictures():
    """A wide image (source 8x20 patches and three 12x12 slices), a small one (no slices, upscaled to 12x12 patches)."""
    return {"wide": random_image(11, 100, 300), "small": random_image(13, 60, 80)}


@pytest.fixture(scope="module")
def clip():
    """Four wide frames (each a source frame and three slices), all sampled (2 fps from a 2 fps stack)."""
    rng = np.random.default_rng(5)
    return load_video((rng.random((4, 100, 300, 3)) * 255).astype(np.uint8), fps=2, max_frames=8, source_fps=2)


# The clip's frames are already sampled, as iLLaVA's video loader samples them.
vanilla = partial(vanilla_media_generate, video_kwargs={"do_sample_frames": False})


def cases(pictures):
    return {
        "one image": [([pictures["wide"]], "What is this?")],
        "two images": [([pictures["wide"], pictures["small"]], "Compare the two pictures.")],
        "batch of two": [
            ([pictures["small"]], "Describe it."),
            ([pictures["small"], pictures["wide"]], "Which one is brighter?"),
        ],
    }


@pytest.mark.parametrize("case", ["one image", "two images", "batch of two"])
def test_merging_off_equals_vanilla_generate_exactly(minicpmv, pictures, case):
    requests = cases(pictures)[case]
    expected_ids, expected_logits, inputs = vanilla(minicpmv, requests)
    result = ours(minicpmv, requests, MergeConfig())
    assert_equals_vanilla(result, expected_ids, expected_logits)
    for b in range(len(requests)):
        placeholders = int((inputs["input_ids"][b] == minicpmv.model.config.image_token_id).sum())
        assert result.stats[b]["visual_tokens"]["llm_input_full"] == placeholders


@pytest.mark.parametrize("with_images", [False, True], ids=["video", "two images and a video"])
def test_video_merging_off_equals_vanilla_generate_exactly(minicpmv, pictures, clip, with_images):
    images = [pictures["wide"], pictures["small"]] if with_images else []
    _, expected_logits, inputs = vanilla(minicpmv, [(images, "What happens?")], video=clip)
    result = ours(minicpmv, [(images, "What happens?")], MergeConfig(), video=clip)
    assert torch.equal(result.logits[0], expected_logits[0])
    config = minicpmv.model.config
    placeholders = int(torch.isin(inputs["input_ids"], torch.tensor([config.image_token_id, config.video_token_id])).sum())
    # A frame: 10 source tokens and three 9-token slices; the wide image the same, the small one 9.
    assert result.stats[0]["visual_tokens"]["llm_input_full"] == placeholders == 4 * 37 + (37 + 9) * with_images


@pytest.mark.parametrize("case", ["one image", "two images", "video"])
def test_own_loops_keeping_everything_equal_vanilla_exactly(minicpmv, pictures, clip, case):
    """After a stage-1 step the window merger runs on a strip of kept windows and the merger per slice,
    so this also checks, bit for bit, that both see every block's patches in the model's order."""
    video = clip if case == "video" else None
    requests = cases(pictures).get(case, [([], "What happens?")])
    _, expected_logits, _ = vanilla(minicpmv, requests, video=video)
    result = ours(minicpmv, requests, IDENTITY, video=video)
    assert torch.equal(result.logits[0], expected_logits[0])


@pytest.mark.parametrize("case", ["one image", "two images", "video"])
def test_cached_decoding_equals_a_fresh_forward_over_the_reduced_sequence(minicpmv, pictures, clip, case):
    video = clip if case == "video" else None
    images = cases(pictures)[case][0][0] if video is None else []
    config = minicpmv.model.config
    visual_ids = [config.image_token_id, config.video_token_id]
    assert_cached_decoding_equals_a_fresh_forward(minicpmv, images, video, BOTH, visual_ids, PROMPTS, STEPS)


@pytest.mark.parametrize("name", PEERS)
def test_cached_decoding_of_the_papers_peers_equals_a_fresh_forward_at_their_placement(pictures, minicpmv, name):
    config = placed_peer(minicpmv, name)
    assert_cached_decoding_equals_a_fresh_forward(minicpmv, cases(pictures)["two images"][0][0], None, config, [minicpmv.model.config.image_token_id], PROMPTS, STEPS)


def test_placeholders_match_kept_tokens_slice_by_slice(minicpmv, pictures):
    lvlm = minicpmv
    processor = lvlm.processor
    visuals = illava.encode(lvlm, [pictures["wide"], pictures["small"]], BOTH)
    inputs = build_inputs(lvlm, [(visuals.items, "What?")])
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    kept = [item.tokens_kept for item in visuals.items]
    assert text.count(processor.image_token) == sum(kept) == int((inputs["input_ids"] == processor.image_token_id).sum())
    assert "<image_id>0</image_id><image>" in text and "<image_id>1</image_id><image>" in text
    wide = visuals.items[0]
    assert wide.token_grid == (4, 3, 5) and wide.layout.columns == 3
    per_view = torch.bincount(wide.kept_groups.cpu() // 15, minlength=4).tolist()
    # keep 0.4 over two layers: round(10 * 0.4) source blocks, round(9 * 0.4) in each slice.
    assert per_view == [4, 4, 4, 4]
    codes = wide.trace.stage1.reshape(4, -1)
    assert (np.isin(codes, [KEPT, RECYCLED]).sum(-1) == np.array(per_view)).all()
    # Cells outside a 3x3 slice on the 3x5 map never held a token.
    assert (wide.trace.stage1[1:, :, 3:] == DROPPED).all()
    slices = "".join(f"<slice>{processor.image_token * 4}</slice>" for _ in range(3))
    assert f"<image_id>0</image_id><image>{processor.image_token * 4}</image>{slices}\n<image_id>1" in text


def test_video_placeholders_follow_the_frames(minicpmv, clip):
    processor = minicpmv.processor
    item = encode(minicpmv, [], BOTH, clip).items[0]
    text = processor.tokenizer.decode(build_inputs(minicpmv, [((item,), "What?")])["input_ids"][0])
    assert item.token_grid == (16, 3, 5) and item.layout.frames == 4
    counts = torch.bincount(item.kept_groups.cpu() // 15, minlength=16).tolist()
    token = processor.video_token
    frames = "".join(
        f"<image>{token * counts[4 * f]}</image>" + "".join(f"<slice>{token * n}</slice>" for n in counts[4 * f + 1 : 4 * f + 4])
        for f in range(4)
    )
    assert f"<image_id>0</image_id>{frames}\n" in text
    assert text.count(token) == item.tokens_kept == sum(counts)


def test_stage1_keeps_whole_blocks_before_and_after_the_window_merger(minicpmv, pictures):
    """Rows leave sixteen patches (one block) at a time before the window merger, four merged tokens after."""
    layers = minicpmv.model.model.vision_tower.encoder.layers
    lengths = []
    hooks = [layer.register_forward_hook(lambda m, a, o: lengths.append(a[0].shape[1])) for layer in layers]
    try:
        item = illava.encode(minicpmv, [pictures["small"]], MergeConfig(stage1_layers=(1, 3), stage1_keep=0.25)).items[0]
    finally:
        for hook in hooks:
            hook.remove()
    # 12x12 patches = 9 blocks; keep 0.25 over two layers: 4 blocks after layer 1's step, 2 after layer 3's.
    assert lengths == [144, 4 * 16, 4 * 4, 2 * 4]
    assert item.tokens_kept == 2 and item.token_grid == (1, 3, 3)


def test_blocks_hold_their_units_in_the_merger_order():
    """``Slice.block_of`` numbers a block's units as the model's merger view/permute concatenates them."""
    part = Slice(4, 6, torch.arange(24), 2)
    block, place = part.block_of(part.ids)
    numbers = torch.arange(24).view(2, 2, 3, 2).permute(0, 2, 1, 3).reshape(6, 4)
    assert torch.equal(torch.argsort(block * 4 + place).view(-1, 4), numbers)


def test_a_stage1_layer_at_the_depth_gathers_the_models_own_tokens(minicpmv, pictures):
    images = [pictures["wide"], pictures["small"]]
    depth = minicpmv.backbone.vit_depth
    stock = illava.encode(minicpmv, images, MergeConfig())
    config = MergeConfig(stage1_layers=(depth,), stage1_keep=0.5, stage1_recycled=0)
    for a, b in zip(stock.items, illava.encode(minicpmv, images, config).items):
        assert b.tokens_kept < a.tokens_kept
        full = torch.full((a.layout.grid[0] * a.layout.grid[1] * a.layout.grid[2],), -1)
        full[a.kept_groups] = torch.arange(a.tokens_kept)
        torch.testing.assert_close(b.features, a.features[full[b.kept_groups]], rtol=0, atol=1e-5)


def test_token_maps_render_both_stages(minicpmv, pictures):
    visuals = illava.encode(minicpmv, [pictures["wide"]], BOTH)
    result = illava.generate(minicpmv, visuals, "Describe.", BOTH, GenerationOptions(max_new_tokens=1))
    item, trace = visuals.items[0], result.traces[0][0]
    assert trace.grid == item.token_grid == (4, 3, 5) and item.preview.shape[0] == 4
    stage1 = int(np.isin(trace.stage1, [KEPT, RECYCLED]).sum())
    stage2 = int(np.isin(trace.stage2, [KEPT, RECYCLED]).sum())
    assert stage1 == item.tokens_kept and stage2 < stage1
    assert (trace.stage1 == MERGED).any(), "recycling folds discarded blocks into kept ones"
    figure = trace_figure(trace, item.preview)
    assert figure.dtype == np.uint8 and figure.shape[1] > 2 * item.preview.shape[2]


def test_a_sample_gives_the_same_result_alone_and_in_a_batch(minicpmv, pictures):
    """Left padding, also in the linear-attention layers' recurrent state, changes nothing for a sample."""
    first = ([pictures["wide"]], "Describe the picture.")
    second = ([pictures["small"], pictures["wide"]], "Which of these two is more colourful? Explain.")
    assert_alone_equals_batched(minicpmv, first, second, BOTH)


@pytest.mark.parametrize("config", BASELINE_CONFIGS, ids=lambda config: config.method)
@pytest.mark.parametrize("video", [False, True], ids=["images", "video"])
def test_the_baseline_methods_run(minicpmv, pictures, clip, config, video):
    visuals = encode(minicpmv, [] if video else [pictures["wide"], pictures["small"]], config, clip if video else None)
    assert_baseline_method_runs(minicpmv, visuals, "Describe them.", config)


def test_a_scored_stage2_layer_after_a_linear_attention_layer_is_refused(minicpmv, pictures):
    """Layer 0 is linear attention (no attention map to rank by); unscored methods may prune there."""
    visuals = illava.encode(minicpmv, [pictures["small"]], MergeConfig())
    with pytest.raises(ValueError, match="linear-attention"):
        illava.generate(minicpmv, visuals, "What?", MergeConfig(stage2_layers=(1,), stage2_keep=0.5), GenerationOptions(max_new_tokens=1))
    config = MergeConfig(method="random", stage2_layers=(1,), stage2_keep=0.5)
    result = illava.generate(minicpmv, visuals, "What?", config, GenerationOptions(max_new_tokens=1))
    assert result.stats[0]["visual_tokens"]["llm_after_stage2"] < visuals.items[0].tokens_kept


@pytest.mark.parametrize("name", ["paper-image", "paper-video", "fast"])
def test_presets_fit_stage2_to_a_layer_after_full_attention(minicpmv, pictures, name):
    config = illava.config.preset_for(name, minicpmv.backbone)
    assert set(config.stage2_layers) <= set(minicpmv.backbone.stage2_choices)
    visuals = illava.encode(minicpmv, pictures["wide"], config)
    result = illava.generate(minicpmv, visuals, "Describe it.", config, illava.GenerationOptions(max_new_tokens=2))
    tokens = result.stats[0]["visual_tokens"]
    assert tokens["llm_after_stage2"] < tokens["llm_input"]
