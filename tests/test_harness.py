"""The accuracy harness: every method runs at the work it is given (or says it cannot reach it), and the report
has the documented shape."""

import json
from types import SimpleNamespace

import pytest

from illava import MergeConfig
from illava.__main__ import main
from illava.lab.harness import METHODS, markdown_table, method_config, run_harness
from illava.resolve import placed


def test_every_method_spends_its_budget_or_says_it_cannot_and_the_report_has_the_documented_fields(qwen25):
    report = run_harness(qwen25, "image", n=2, budgets=(0.5, 0.33), log=lambda line: None)
    assert {"full_accuracy", "results", "split", "n", "seed"} <= set(report)
    assert [(row["method"], row["budget"]) for row in report["results"]] == [(m, b) for m in METHODS for b in (0.5, 0.33)]
    for row in report["results"]:
        if row["accuracy"] is None:
            assert row["cannot_reach"] > row["budget"], row
            continue
        assert {"method", "budget", "accuracy", "retention", "per_family", "work", "token_fraction"} <= set(row)
        # Fitted on the model's typical image; the scenes are smaller, and in a model this narrow attention
        # over fewer tokens is a visible part of the work.
        assert row["work"] == pytest.approx(row["budget"], abs=0.08), row["method"]
        assert 0.0 <= row["accuracy"] <= 1.0
        assert set(row["per_family"]) <= {"colour", "shape", "count", "exist", "position"}
    # FastV pays for the whole encoder and the LLM layers before it prunes.
    assert [row["accuracy"] for row in report["results"] if row["method"] == "fastv"][-1] is None
    table = markdown_table(report)
    assert table.count("\n| ") == len(METHODS) + 1 and "work 0.50" in table and "cannot reach (min " in table


def backbone(vit_depth: int, llm_depth: int, stage2_choices: tuple[int, ...] | None = None) -> SimpleNamespace:
    """The three facts about a backbone adapter that placing a method reads."""
    return SimpleNamespace(vit_depth=vit_depth, llm_depth=llm_depth, stage2_choices=stage2_choices)


def test_methods_are_placed_as_documented(qwen25):
    small = backbone(4, 4)
    assert placed("fastv", small) == MergeConfig(method="fastv", stage2_layers=(1,))
    assert placed("visionzip", small).stage1_layers == (4,)
    assert placed("tome", small).stage1_layers == (1, 2, 3, 4)
    assert placed("fastervlm", small) == MergeConfig(method="fastervlm", stage1_layers=(4,))
    assert placed("pyramiddrop", small).stage2_layers == (1, 2, 3)
    assert placed("sparsevlm", small).stage2_layers == (1, 2)
    both = placed("illava", backbone(32, 28))
    assert both.stage1_layers == (13, 14, 15, 16) and both.stage2_layers == (6, 7, 8)
    # Qwen2.5-VL-7B's 28 layers: PyramidDrop's stages start at 7, 14, 21; SparseVLM's cuts follow layers 2, 5 and 13.
    assert placed("pyramiddrop", backbone(32, 28)).stage2_layers == (7, 14, 21)
    assert placed("sparsevlm", backbone(32, 28)).stage2_layers == (3, 6, 14)
    with pytest.raises(ValueError, match="unknown method"):
        method_config("sparse-vlm", 0.3, qwen25, "image")


def test_llm_side_methods_move_to_a_layer_the_backbone_can_score():
    # As in a hybrid LLM where only layers after a full-attention one have an attention map.
    hybrid = backbone(32, 28, stage2_choices=(4, 8, 12, 16, 20, 24))
    assert placed("fastv", hybrid).stage2_layers == (4,)
    # The paper preset's layers 6, 7 and 8: 6 is as near 4 as 8 and goes to the earlier.
    assert placed("illava", hybrid).stage2_layers == (4, 8)
    assert placed("illava", hybrid, "video").stage2_layers == (4,)


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
    assert "--budgets must be work shares" in capsys.readouterr().err


def test_illava_settings_can_be_compared_with_set(qwen25):
    report = run_harness(qwen25, "image", n=1, budgets=(0.9,), methods=("illava", "fastv"), log=lambda line: None,
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
    report = run_harness(llava_onevision, "video", n=1, budgets=(0.5,), methods=("visionzip", "random"), log=lambda line: None)
    visionzip, random_drop = report["results"]
    assert visionzip["accuracy"] is None and visionzip["unsupported"]
    assert random_drop["accuracy"] is not None
    assert "| visionzip | not supported |" in markdown_table(report)
