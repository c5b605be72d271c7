"""iLLaVA Merge Config: presets, custom knobs, queue-time validation, scaling to the loaded model."""

from __future__ import annotations

import pytest

from nodes_harness import run_node, widget_defaults


@pytest.fixture
def config_node(mappings):
    return mappings["iLLaVA_MergeConfig"]


def build(node, **changes):
    (choice,), _ = run_node(node, **{**widget_defaults(node), **changes})
    return choice


def test_presets_map_to_the_library_presets(config_node):
    from illava_pack.illava import PRESETS

    assert config_node.INPUT_TYPES()["required"]["preset"][0] == ["auto", "off", "paper image", "paper video", "fast", "custom"]
    assert config_node.INPUT_TYPES()["required"]["preset"][1]["default"] == "auto"
    auto = build(config_node, preset="auto", budget=0.22)
    assert (auto.preset_name, auto.budget) == ("auto", 0.22)
    assert build(config_node, preset="paper image").config == PRESETS["paper-image"]
    assert build(config_node, preset="fast").config == PRESETS["fast"]
    assert build(config_node, preset="off").config.is_off


def test_named_presets_ignore_the_knobs(config_node):
    choice = build(config_node, preset="fast", stage1_keep=0.9, stage2_layers="")
    assert choice.preset_name == "fast"
    assert choice.config.stage1_keep == 0.33


def test_custom_uses_every_knob(config_node):
    choice = build(config_node, preset="custom", stage1_layers="2", stage1_keep=0.4, stage1_recycled=0,
                   stage2_layers="1, 2", stage2_keep=0.6, stage2_recycled=2, recycle_weighting="mean", score_chunk=64)
    config = choice.config
    assert choice.preset_name is None
    assert (config.stage1_layers, config.stage1_keep, config.stage1_recycled) == ((2,), 0.4, 0)
    assert (config.stage2_layers, config.stage2_keep, config.stage2_recycled) == ((1, 2), 0.6, 2)
    assert (config.recycle_weighting, config.score_chunk) == ("mean", 64)


def test_a_baseline_method_can_be_chosen(config_node):
    choice = build(config_node, preset="custom", stage1_layers="", stage2_layers="2", stage2_keep=0.3, method="fastv")
    assert choice.config.method == "fastv" and choice.config.stage2_layers == (2,)
    inputs = {**widget_defaults(config_node), "preset": "custom", "method": "tome"}
    message = config_node.VALIDATE_INPUTS(**inputs)
    assert isinstance(message, str) and "clear stage2_layers" in message


@pytest.mark.parametrize(
    "field, value",
    [("stage1_keep", 0.0), ("stage2_keep", 1.5), ("stage1_layers", "3,2"), ("stage2_layers", "a"),
     ("stage1_recycled", 99), ("recycle_weighting", "median"), ("score_chunk", 8), ("method", "fast-v")],
)
def test_bad_values_are_rejected_at_queue_time_naming_the_field(config_node, field, value):
    inputs = {**widget_defaults(config_node), "preset": "custom", field: value}
    message = config_node.VALIDATE_INPUTS(**inputs)
    assert isinstance(message, str) and message.startswith(field)


def test_unknown_preset_is_rejected(config_node):
    message = config_node.VALIDATE_INPUTS(**{**widget_defaults(config_node), "preset": "turbo"})
    assert isinstance(message, str) and message.startswith("preset")


def test_good_values_validate(config_node):
    assert config_node.VALIDATE_INPUTS(**widget_defaults(config_node)) is True
    assert config_node.VALIDATE_INPUTS(**{**widget_defaults(config_node), "preset": "custom"}) is True


def test_presets_are_scaled_to_the_loaded_model(config_node, lvlm):
    model = lvlm.shared.lvlm
    for label in ("paper image", "paper video", "fast"):
        config = build(config_node, preset=label).resolve(model)
        assert config.stage1_layers and max(config.stage1_layers) < model.backbone.vit_depth
        assert config.stage2_layers and max(config.stage2_layers) < model.backbone.llm_depth


def test_custom_layers_past_the_model_depth_fail_naming_the_field(config_node, lvlm):
    choice = build(config_node, preset="custom", stage1_layers="13,14")
    with pytest.raises(ValueError, match="^stage1_layers contains 13"):
        choice.resolve(lvlm.shared.lvlm)
