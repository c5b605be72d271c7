import pytest

from illava.config import PRESETS, MergeConfig, preset, scale_layers


def test_defaults_are_off():
    config = MergeConfig()
    assert config.is_off and not config.stage1_active and not config.stage2_active


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("stage1_keep", 0.0, "stage1_keep must be in (0, 1]"),
        ("stage1_keep", 1.5, "stage1_keep must be in (0, 1]"),
        ("stage2_keep", -0.1, "stage2_keep must be in (0, 1]"),
        ("stage2_keep", float("nan"), "stage2_keep must be a number"),
        ("stage1_keep", "half", "stage1_keep must be a number"),
        ("stage1_keep", True, "stage1_keep must be a number"),
        ("stage1_recycled", -1, "stage1_recycled must be an integer in [0, 64]"),
        ("stage2_recycled", 65, "stage2_recycled must be an integer in [0, 64]"),
        ("stage2_recycled", 1.5, "stage2_recycled must be an integer"),
        ("stage1_layers", (0,), "stage1_layers must hold integers >= 1"),
        ("stage2_layers", (3, 2), "stage2_layers must be strictly increasing"),
        ("stage2_layers", (2, 2), "stage2_layers must be strictly increasing"),
        ("stage1_layers", "a,b", "stage1_layers must be layer numbers"),
        ("stage1_layers", 3.5, "stage1_layers must be a list of layer numbers"),
        ("recycle_weighting", "max", "recycle_weighting must be one of"),
        ("score_chunk", 4, "score_chunk must be an integer in [16, 65536]"),
    ],
)
def test_every_bad_value_names_its_field(field, value, fragment):
    with pytest.raises(ValueError) as error:
        MergeConfig(**{field: value})
    assert fragment in str(error.value)


def test_layers_parse_from_text():
    assert MergeConfig(stage1_layers="8, 16").stage1_layers == (8, 16)
    assert MergeConfig(stage2_layers="6-7-8").stage2_layers == (6, 7, 8)
    assert MergeConfig(stage2_layers=3).stage2_layers == (3,)


def test_layers_beyond_the_model_are_rejected_with_the_depth():
    config = MergeConfig(stage1_layers=(4,), stage2_layers=(2,))
    config.check_depths(vit_depth=4, llm_depth=4)
    with pytest.raises(ValueError, match=r"stage1_layers contains 4, but this model's vision encoder has 3 layers: use layers from 1 to 3"):
        config.check_depths(vit_depth=3, llm_depth=4)
    with pytest.raises(ValueError, match=r"stage2_layers contains 2, but this model's language model has 2 layers"):
        config.check_depths(vit_depth=8, llm_depth=2)


def test_round_trip_and_unknown_fields():
    config = PRESETS["paper-image"]
    assert MergeConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown MergeConfig fields \['stage3_keep'\]"):
        MergeConfig.from_dict({"stage3_keep": 0.5})


def test_presets_exist_and_scale_to_smaller_models():
    assert PRESETS["off"].is_off
    for name in ("paper-image", "paper-video", "fast"):
        config = preset(name)
        assert config.stage1_active and config.stage2_active
        small = preset(name, vit_depth=4, llm_depth=4)
        small.check_depths(4, 4)
        assert all(1 <= layer < 4 for layer in small.stage1_layers + small.stage2_layers)
    assert scale_layers(PRESETS["paper-image"], 32, 28) == PRESETS["paper-image"]
    with pytest.raises(ValueError, match="unknown preset 'paper'"):
        preset("paper")


def test_presets_move_stage2_to_the_nearest_layer_the_model_can_score():
    config = preset("paper-image", 32, 8, stage2_choices=(4, 8))
    assert config.stage2_layers == (4,)  # 6-8 of 28 scale to 2, and the nearest usable layer is 4
    assert preset("fast", 32, 28, stage2_choices=(3, 5)).stage2_layers == (3,)  # a tie goes to the earlier layer
