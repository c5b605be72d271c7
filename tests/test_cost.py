"""The one cost model: a configuration's work and FLOPs against a hand count, and budgets that mean work."""

from __future__ import annotations

import pytest

import illava
from helpers import random_image
from illava import MergeConfig
from illava.backbones.base import ItemShape
from illava.budget import BUDGET_SLACK, fit
from illava.cost import cost_model
from illava.resolve import auto_config, method_at, resolve, typical_estimate

CONFIG = MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)


def test_qwen25_flops_equal_a_hand_count(qwen25):
    vision, text = qwen25.model.config.vision_config, qwen25.model.config.text_config
    h, i = vision.hidden_size, vision.intermediate_size
    vit_params = 4 * h * h + 3 * h * i + 7 * h + 2 * i  # qkv and proj with biases, gated MLP with biases, 2 norms
    d, m, kv = text.hidden_size, text.intermediate_size, text.num_key_value_heads * (text.hidden_size // text.num_attention_heads)
    llm_params = 2 * d * d + 2 * d * kv + d + 2 * kv + 3 * d * m + 2 * d  # q/k/v biases, no o bias, 2 norms
    window = (vision.window_size // vision.patch_size) ** 2
    # One view of 4x4 LLM tokens (4 patches each); stage 1 halves the cells before block 2 (8 enter the
    # LLM), stage 2 halves those before LLM layer 2; 10 text tokens.
    shape, t = ItemShape((1, 4, 4), 16, 64), 10
    vit = 0.0
    for layer, patches in enumerate((64, 64, 32, 32)):
        span = patches if layer in vision.fullatt_block_indexes else min(window, patches)
        vit += patches * (2 * vit_params + 4 * h * span)
    llm_visual = llm_text = 0.0
    for visual in (8, 8, 4, 4):
        per_token = 2 * llm_params + 2 * d * (t + visual)
        llm_visual += visual * per_token
        llm_text += t * per_token
    flops = cost_model(qwen25.backbone).flops([shape], t, CONFIG)
    assert flops.vit == pytest.approx(vit)
    assert flops.llm_visual == pytest.approx(llm_visual) and flops.llm_text == pytest.approx(llm_text)


def test_internvl_work_equals_a_hand_count_over_its_tiles(internvl):
    cost = cost_model(internvl.backbone)
    h, d = cost.vision_width, cost.text_width
    # Two tiles of 2x2 LLM tokens, 4 patches each: attention spans one tile; nothing windowed.
    shape, t = ItemShape((2, 2, 2), 8, 32), 6
    config = MergeConfig(stage1_layers=(1,), stage1_keep=0.5)

    def work(cells_after: int) -> float:
        vit = 0.0
        for layer, params in enumerate(cost.vision):
            patches = 16 if layer < 1 else 4 * cells_after
            vit += 2 * patches * (2 * params + 4 * h * patches)
        visual = 2 * cells_after
        llm = sum(visual * (2 * params + 2 * d * (t + visual)) for params in cost.text)
        return vit + llm

    assert cost.estimate([shape], t, config).work == pytest.approx(work(2) / work(4))


@pytest.mark.parametrize("budget", [0.5, 0.33])
def test_auto_spends_its_budget_on_every_family(budget, lvlms, llava_onevision, internvl, minicpmv):
    for lvlm in (*lvlms.values(), llava_onevision, internvl, minicpmv):
        config = auto_config(lvlm, budget, "image")
        typical = typical_estimate(config, lvlm, "image").work
        assert budget - 0.05 <= typical <= budget + BUDGET_SLACK, (lvlm.backbone, config)
        # The typical input itself: auto is fitted on its shape, so a run on it spends what was fitted.
        result = illava.generate(lvlm, illava.encode(lvlm, random_image(1, 768, 1024), config), "Hi", config,
                                 illava.GenerationOptions(max_new_tokens=1))
        assert result.stats[0]["work"] <= budget + 0.05, (lvlm.backbone, config, result.stats[0])
        assert result.stats[0]["predicted_speedup"] > 1.0


def test_auto_below_what_a_model_can_reach_takes_the_cheapest_and_says_so(minicpmv):
    # The tiny MiniCPM-V runs its first encoder layer and first LLM layer on every token.
    config = auto_config(minicpmv, 0.1, "image")
    assert "no settings of that placement reach 0.10, so its cheapest" in config.origin
    assert typical_estimate(config, minicpmv, "image").work > 0.1 + BUDGET_SLACK


def test_a_budget_out_of_a_placements_reach_gets_its_cheapest_and_says_so(qwen25):
    # FastV pays for the whole encoder and the LLM layers before it prunes.
    fastv = method_at("fastv", 0.11, qwen25, "image")
    assert not fastv.reached and fastv.work > 0.11 + BUDGET_SLACK
    assert f"cannot reach 0.11 there (at least {fastv.work:.2f})" in fastv.config.origin
    assert method_at("fastv", 0.9, qwen25, "image").reached


def test_fit_finds_the_most_work_within_the_budget(qwen25):
    cost = cost_model(qwen25.backbone)
    shapes = qwen25.backbone.typical_shapes("image", qwen25.processor)
    fitted = fit(MergeConfig(stage2_layers=(1,)), 0.9, cost, shapes, 60)
    assert fitted.reached and fitted.work <= 0.9
    # A little more kept would spend more than the budget.
    more = fitted.config.with_(stage2_keep=min(1.0, fitted.config.stage2_keep * 1.05))
    assert cost.work(shapes, 60, more) > fitted.work
    assert fit(MergeConfig(), 0.5, cost, shapes, 60).work == 1.0


def test_presets_ignore_the_budget_and_methods_follow_it(qwen25):
    assert resolve("paper-image", 0.1, qwen25) == resolve("paper-image", 0.9, qwen25)
    tome = [typical_estimate(resolve("tome", b, qwen25), qwen25).work for b in (0.7, 0.5)]
    assert tome[0] > tome[1] and all(w <= b + BUDGET_SLACK for w, b in zip(tome, (0.7, 0.5)))
    with pytest.raises(ValueError, match="unknown choice"):
        resolve("fastest", 0.3, qwen25)
