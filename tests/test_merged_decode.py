"""With merging on: counts follow the config, and cached decoding equals a fresh recomputation."""

import pytest
import torch

import illava
from helpers import CACHED_ATOL, cached_and_fresh_logits, illava_generate
from illava import MergeConfig

STAGE1 = MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage1_recycled=2)
BOTH = MergeConfig(stage1_layers=(1, 3), stage1_keep=0.4, stage2_layers=(2,), stage2_keep=0.5, stage2_recycled=1)
STAGE2_TWICE = MergeConfig(stage2_layers=(1, 3), stage2_keep=0.3, stage2_recycled=2)
FASTV = MergeConfig(method="fastv", stage2_layers=(1,), stage2_keep=0.4)
VISIONZIP = MergeConfig(method="visionzip", stage1_layers=(4,), stage1_keep=0.3)
TOME = MergeConfig(method="tome", stage1_layers=(1, 2, 3), stage1_keep=0.35)
RANDOM = MergeConfig(method="random", stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)
DISTINCT = MergeConfig(method="distinct", stage1_layers=(1,), stage1_keep=0.4, stage2_layers=(2,), stage2_keep=0.5)
FASTERVLM = MergeConfig(method="fastervlm", stage1_layers=(4,), stage1_keep=0.4)
PYRAMIDDROP = MergeConfig(method="pyramiddrop", stage2_layers=(1, 2, 3), stage2_keep=0.3)
SPARSEVLM = MergeConfig(method="sparsevlm", stage2_layers=(1, 2), stage2_keep=0.3)
STEPS = 6
PROMPTS = ("Describe both pictures in detail.", "What differs between them?", "List every object.", "Tell a story.")


@pytest.mark.parametrize(
    "config",
    [
        MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.25),
        MergeConfig(method="random", stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.25),
        MergeConfig(method="visionzip", stage1_layers=(4,), stage1_keep=0.5),
        MergeConfig(method="tome", stage1_layers=(2,), stage1_keep=0.5),
        MergeConfig(method="fastv", stage2_layers=(2,), stage2_keep=0.25),
        FASTERVLM,
        PYRAMIDDROP,
        SPARSEVLM,
    ],
    ids=lambda config: config.method,
)
def test_token_counts_follow_the_config(lvlm, images, config):
    stage1_keep = config.stage1_keep if config.stage1_active else 1.0
    stage2_keep = config.stage2_keep if config.stage2_active else 1.0
    visuals = illava.encode(lvlm, images[:2], config)
    for item in visuals.items:
        assert item.tokens_kept == round(item.tokens_full * stage1_keep)
        if config.stage1_active:
            assert item.trace.counts(1)["kept"] + item.trace.counts(1)["recycled"] == item.tokens_kept
    result = illava.generate(lvlm, visuals, "Compare them.", config, illava.GenerationOptions(max_new_tokens=2))
    tokens = result.stats[0]["visual_tokens"]
    assert tokens["vit_input"] == sum(item.patches for item in visuals.items)
    assert tokens["llm_input_full"] == sum(item.tokens_full for item in visuals.items)
    assert tokens["llm_input"] == tokens["vit_output"] == sum(item.tokens_kept for item in visuals.items)
    assert tokens["llm_after_stage2"] == round(tokens["llm_input"] * stage2_keep)
    if not config.stage2_active:
        return
    traces = result.traces[0]
    kept_after_both = sum(t.counts(2)["kept"] + t.counts(2)["recycled"] for t in traces)
    assert kept_after_both == tokens["llm_after_stage2"]


@pytest.mark.parametrize(
    "config",
    [STAGE1, BOTH, STAGE2_TWICE, FASTV, VISIONZIP, TOME, RANDOM, DISTINCT, FASTERVLM, PYRAMIDDROP, SPARSEVLM],
    ids=["stage1", "both", "stage2-twice", "fastv", "visionzip", "tome", "random", "distinct", "fastervlm", "pyramiddrop",
         "sparsevlm"],
)
def test_cached_decoding_equals_a_fresh_forward_over_the_reduced_sequence(lvlm, images, config):
    cached, fresh, stage2, prompt = cached_and_fresh_logits(lvlm, images, config, PROMPTS, STEPS)
    torch.testing.assert_close(cached, fresh, rtol=0, atol=CACHED_ATOL)
    if stage2 is not None:
        assert stage2.record.visual_after[0] < prompt["mm_token_type_ids"].bool().sum()


def test_stage1_keeping_everything_equals_stage2_alone(lvlm, images):
    requests = [([images[2]], "What do you see?")]
    stage2_only = MergeConfig(stage2_layers=(2,), stage2_keep=0.4)
    with_stage1 = stage2_only.with_(stage1_layers=(2,), stage1_keep=1.0)
    a = illava_generate(lvlm, requests, stage2_only)
    b = illava_generate(lvlm, requests, with_stage1)
    assert a.ids == b.ids
    assert torch.equal(a.logits[0], b.logits[0])


def test_a_sample_gives_the_same_result_alone_and_in_a_batch(lvlm, images):
    first = ([images[0]], "Describe the picture.")
    second = ([images[1], images[2]], "Which of these two is more colourful? Explain.")
    alone = illava_generate(lvlm, [first], BOTH)
    alone_second = illava_generate(lvlm, [second], BOTH)
    batched = illava_generate(lvlm, [second, first], BOTH)
    assert batched.ids[1] == alone.ids[0]
    assert batched.ids[0] == alone_second.ids[0]
    # A batch decodes until its longest row ends, so compare the steps each sample ran alone.
    for got, want in ((batched.logits[1], alone.logits[0]), (batched.logits[0], alone_second.logits[0])):
        torch.testing.assert_close(got[: want.shape[0]], want, rtol=0, atol=1e-4)
    assert batched.stats[1]["visual_tokens"] == alone.stats[0]["visual_tokens"]


def test_merging_changes_the_output(qwen25, images):
    """Guards the tests above against a merger that silently does nothing."""
    requests = [([images[0]], "What is this?")]
    off = illava_generate(qwen25, requests, MergeConfig())
    on = illava_generate(qwen25, requests, BOTH)
    assert not torch.allclose(off.logits[0], on.logits[0])


def test_sparsevlm_scores_with_every_rater_and_falls_back_to_the_last_token():
    from illava.stage2 import _PrefillState

    valid = torch.tensor([[False, True, True, True, True, True], [True, True, True, True, True, True]])
    visual = torch.tensor([[False, True, True, False, False, False], [True, True, False, False, False, False]])
    state = _PrefillState.start(valid, visual)
    state.raters = torch.tensor([[False, False, False, True, False, True], [False] * 6])
    slots, weights, key_mask = state.query_slots(-1)
    assert slots.tolist() == [[3, 5], [5, 5]]
    assert weights.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    assert torch.equal(key_mask, valid)
