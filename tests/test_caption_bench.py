"""The end-to-end caption benchmark: both sides caption the same items, and the ideal counts decoding."""

from __future__ import annotations

import argparse

import pytest

from illava import MergeConfig
from illava.lab import caption_bench
from illava.backbones.base import ItemShape
from illava.cost import cost_model


def test_decoding_flops_grow_with_the_cache_and_merging_shrinks_them(qwen25):
    decode = cost_model(qwen25.backbone).decode_flops
    large, small = [ItemShape((1, 20, 40), 800, 3200)], [ItemShape((1, 10, 10), 100, 400)]
    merged = MergeConfig(stage2_layers=(2,), stage2_keep=0.25)
    assert decode(large, 40, MergeConfig(), 16) > decode(small, 40, MergeConfig(), 16)
    assert decode(large, 40, merged, 16) < decode(large, 40, MergeConfig(), 16)
    assert decode(large, 40, MergeConfig(), 32) > 2 * decode(large, 40, MergeConfig(), 15)


def test_every_row_measures_both_sides_on_the_same_items(monkeypatch, qwen25):
    # The tiny fixture stands in for the real-width model, whose 128-token captions take minutes on a CPU.
    monkeypatch.setattr(caption_bench, "build_lvlm", lambda *args, **kwargs: qwen25)
    monkeypatch.setattr(caption_bench, "BATCH_SIZES", {"image": (1, 2), "16-frame video": (1,)})
    args = argparse.Namespace(arch="qwen2.5-vl-3b", device="cpu", dtype="fp32", full_depth=False, llm_layers=None,
                              vit_layers=None, repeats=1, new_tokens=3)
    result = caption_bench.caption_benchmark(args, log=lambda line: None)
    assert [(row["input"], row["batch_size"]) for row in result["rows"]] == [("image", 1), ("image", 2), ("16-frame video", 1)]
    for row in result["rows"]:
        assert row["items_per_min"]["vanilla"] > 0 and row["items_per_min"]["illava"] > 0
        assert 0 < row["decode_share"]["vanilla"] < 1 and row["ideal_speedup"] > 1
        # Stage 1 shrinks what enters the LLM, and the FLOP count follows it.
        assert row["llm_input_per_item"]["illava"] < row["llm_input_per_item"]["vanilla"] == row["visual_tokens_per_item"]
        before, decoding = (row["flops"]["vanilla"][p] / row["flops"]["illava"][p] for p in caption_bench.PHASES)
        assert min(before, decoding) <= row["phase_ideal_speedup"] <= max(before, decoding)
    assert caption_bench.caption_table(result).count("\n| ") == 4


def test_the_ideal_by_phase_weighs_each_phase_by_its_measured_time():
    assert caption_bench.phase_ideal(10.0, 4.0, 1.5, 1.5) == pytest.approx(1.5)
    # Decoding takes 90% of the time and merging barely shortens it: the job cannot speed up by much more.
    assert caption_bench.phase_ideal(10.0, 9.0, 3.0, 1.0) == pytest.approx(10.0 / (1.0 / 3.0 + 9.0))
