"""The accuracy harness: every method runs at the budget it is given, and the report has the documented shape."""

import json
from types import SimpleNamespace

import pytest

from illava import MergeConfig
from illava.__main__ import main
from illava.lab.harness import METHODS, markdown_table, method_config, run_harness


def test_every_method_reaches_its_budget_and_the_report_has_the_documented_fields(qwen25):
    report = run_harness(qwen25, "image", n=2, budgets=(0.5, 0.2), log=lambda line: None)
    assert {"full_accuracy", "results", "split", "n", "seed"} <= set(report)
    assert [(row["method"], row["budget"]) for row in report["results"]] == [(m, b) for m in METHODS for b in (0.5, 0.2)]
    for row in report["results"]:
        assert {"method", "budget", "accuracy", "retention", "per_family"} <= set(row)
        # Rounding to whole tokens (twice for two stages) is the only slack.
        assert row["measured_budget"] == pytest.approx(row["budget"], abs=0.06), row["method"]
        assert 0.0 <= row["accuracy"] <= 1.0
        assert set(row["per_family"]) <= {"colour", "shape", "count", "exist", "position"}
        if row["method"] in ("illava-stage2", "fastv"):
            # They prune inside the LLM, so the layers before pay for every token.
            assert row["llm_layer_fraction"] > row["measured_budget"] + 0.1
    table = markdown_table(report)
    assert table.count("\n| ") == len(METHODS) + 1 and "50% of tokens" in table


def backbone(vit_depth: int, llm_depth: int, stage2_choices: tuple[int, ...] | None = None) -> SimpleNamespace:
    """The three facts about a backbone adapter that placing a method reads."""
    return SimpleNamespace(vit_depth=vit_depth, llm_depth=llm_depth, stage2_choices=stage2_choices)


def test_methods_are_placed_as_documented():
    small = backbone(4, 4)
    fastv = MergeConfig(method="fastv", stage2_layers=(1,), stage2_keep=0.3)
    assert method_config("fastv", 0.3, small, "image") == fastv
    assert method_config("visionzip", 0.3, small, "image").stage1_layers == (4,)
    assert method_config("tome", 0.3, small, "image").stage1_layers == (1, 2, 3, 4)
    both = method_config("illava", 0.25, backbone(32, 28), "image")
    assert (both.stage1_keep, both.stage2_keep) == (0.5, 0.5) and both.stage1_layers == (13, 14, 15, 16)
    with pytest.raises(ValueError, match="unknown method"):
        method_config("sparsevlm", 0.3, small, "image")


def test_llm_side_methods_move_to_a_layer_the_backbone_can_score():
    # As in a hybrid LLM where only layers after a full-attention one have an attention map.
    hybrid = backbone(32, 28, stage2_choices=(4, 8, 12, 16, 20, 24))
    assert method_config("fastv", 0.3, hybrid, "image").stage2_layers == (4,)
    # The paper preset's layers 6, 7 and 8: 6 is as near 4 as 8 and goes to the earlier.
    assert method_config("illava", 0.25, hybrid, "image").stage2_layers == (4, 8)
    assert method_config("illava-stage2", 0.25, hybrid, "video").stage2_layers == (4,)


def test_eval_command_writes_json_and_markdown(model_dirs, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main([
        "eval", "--model", model_dirs["qwen2_5_vl"], "--split", "video", "--n", "1", "--budgets", "0.3",
        "--methods", "illava", "random", "--json", str(out), "--dtype", "fp32",
    ])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["split"] == "video" and [row["method"] for row in report["results"]] == ["illava", "random"]
    assert out.with_suffix(".md").read_text().startswith("video split, 1 held-out questions")
    assert main(["eval", "--model", model_dirs["qwen2_5_vl"], "--budgets", "1.5"]) == 2
    assert "--budgets must be fractions" in capsys.readouterr().err


def test_illava_settings_can_be_compared_with_set(qwen25):
    report = run_harness(qwen25, "image", n=1, budgets=(0.3,), methods=("illava", "fastv"), log=lambda line: None,
                         overrides={"stage1_recycled": 0})
    names = [row["method"] for row in report["results"]]
    assert names == ["illava[stage1_recycled=0]", "fastv"]
    assert report["results"][0]["config"]["stage1_recycled"] == 0 and report["results"][1]["config"]["stage2_recycled"] == 1


def test_bad_overrides_name_the_field(model_dirs, capsys):
    assert main(["eval", "--model", model_dirs["qwen2_5_vl"], "--set", "recycle_weighting=median"]) == 2
    assert "recycle_weighting must be one of" in capsys.readouterr().err
    assert main(["eval", "--model", model_dirs["qwen2_5_vl"], "--set", "speed"]) == 2
    assert "--set takes FIELD=VALUE" in capsys.readouterr().err


def test_a_method_the_model_cannot_run_is_reported_and_the_rest_still_run(llava_onevision):
    # LLaVA-OneVision's video stage 1 keeps or drops whole pooled cells, so VisionZip's merging is refused.
    report = run_harness(llava_onevision, "video", n=1, budgets=(0.3,), methods=("visionzip", "random"), log=lambda line: None)
    visionzip, random_drop = report["results"]
    assert visionzip["accuracy"] is None and visionzip["unsupported"]
    assert random_drop["accuracy"] is not None
    assert "| visionzip | not supported |" in markdown_table(report)
