"""The memory benchmark loads one model in each weight format and reports weights and peaks honestly."""

from __future__ import annotations

import argparse

import pytest

import illava
from illava.lab import memory

pytest.importorskip("bitsandbytes")
pytest.importorskip("accelerate")


def test_quantized_weights_take_less_memory_and_every_row_is_measured(model_dirs, monkeypatch):
    # The tiny fixture stands in for the benchmark's real-width model, which takes minutes to quantize on a CPU.
    monkeypatch.setattr(memory, "build_lvlm", lambda *args, **kwargs: illava.load(model_dirs["qwen2_5_vl"], device="cpu", dtype="fp32"))
    args = argparse.Namespace(
        arch="qwen2.5-vl-3b", device="cpu", dtype="fp32", full_depth=False, llm_layers=None, vit_layers=None,
        quantizations=["none", "8-bit", "4-bit"], new_tokens=2,
    )
    result = memory.memory_benchmark(args, log=lambda line: None)
    weights = {row["quantization"]: row["weights_bytes"] for row in result["rows"]}
    assert weights["4-bit"] < weights["8-bit"] < weights["none"]
    assert all(row["vanilla_peak_bytes"] > 0 and row["illava_peak_bytes"] > 0 for row in result["rows"])
    assert memory.memory_table(result).count("\n| ") == 4
