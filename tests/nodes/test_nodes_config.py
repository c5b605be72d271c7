"""iLLaVA Merge Config: presets, custom knobs, each bad value reported once, scaling to the loaded model."""

from __future__ import annotations

import pytest

from nodes_harness import run_node, validation_errors, widget_defaults


@pytest.fixture
def config_node(mappings):
    return mappings["iLLaVA_MergeConfig"]


def build(node, **changes):
    (choice,), _ = run_node(node, **{**widget_defaults(node), **changes})
    return choice


def test_presets_map_to_the_library_presets(config_node):
    from illava_pack.illava import PRESETS

    from illava_pack.illava.methods import METHODS

    menu = ["auto", "off", "paper image", "paper video", "fast", *METHODS, "custom"]
    assert config_node.INPUT_TYPES()["required"]["preset"][0] == menu
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
    with pytest.raises(ValueError, match="^iLLaVA Merge Config: method 'tome' .* clear stage2_layers"):
        build(config_node, preset="custom", method="tome")


@pytest.mark.parametrize(
    "field, value",
    [("stage1_keep", 0.0), ("stage2_keep", 1.5), ("stage1_layers", "3,2"), ("stage2_layers", "a"),
     ("stage1_recycled", 65), ("score_chunk", 8), ("recycle_weighting", "median")],
)
def test_a_bad_value_is_reported_once_naming_the_node_and_field(config_node, field, value):
    inputs = {**widget_defaults(config_node), "preset": "custom", field: value}
    queued = validation_errors(config_node, inputs)
    if queued:
        assert len(queued) == 1 and queued[0].startswith(field)
    else:
        with pytest.raises(ValueError, match=f"^iLLaVA Merge Config: {field}") as raised:
            run_node(config_node, **inputs)
        assert str(raised.value).count(field) >= 1


def test_knobs_a_preset_ignores_are_never_checked(config_node):
    ignored = {"stage1_layers": "3,2", "stage2_layers": "nonsense", "method": "tome"}
    for preset in ("auto", "off", "paper image", "fast"):
        inputs = {**widget_defaults(config_node), "preset": preset, **ignored}
        assert validation_errors(config_node, inputs) == []
        build(config_node, **{"preset": preset, **ignored})


def test_unknown_preset_is_rejected_once(config_node):
    assert validation_errors(config_node, {**widget_defaults(config_node), "preset": "turbo"}) == ["preset: 'turbo' not in list"]


def test_good_values_validate(config_node):
    assert validation_errors(config_node, widget_defaults(config_node)) == []
    assert validation_errors(config_node, {**widget_defaults(config_node), "preset": "custom"}) == []


def test_presets_are_scaled_to_the_loaded_model(config_node, lvlm):
    model = lvlm.shared.lvlm
    for label in ("paper image", "paper video", "fast"):
        config = build(config_node, preset=label).resolve(model)
        assert config.stage1_layers and max(config.stage1_layers) < model.backbone.vit_depth
        assert config.stage2_layers and max(config.stage2_layers) < model.backbone.llm_depth


def test_a_method_as_the_preset_is_placed_for_the_budget(config_node, lvlm):
    from illava_pack.illava.resolve import method_at

    model = lvlm.shared.lvlm
    choice = build(config_node, preset="pyramiddrop", budget=0.8, stage2_layers="1")
    assert (choice.preset_name, choice.budget) == ("pyramiddrop", 0.8)
    config = choice.resolve(model)
    assert config == method_at("pyramiddrop", 0.8, model).config
    assert config.method == "pyramiddrop" and len(config.stage2_layers) == 3 and config.stage2_keep < 1.0


def test_custom_layers_past_the_model_depth_fail_naming_the_field(config_node, lvlm):
    choice = build(config_node, preset="custom", stage1_layers="13,14")
    with pytest.raises(ValueError, match="^iLLaVA Merge Config: stage1_layers contains 13"):
        choice.resolve(lvlm.shared.lvlm)
