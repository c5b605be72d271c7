"""8-bit and 4-bit models: merging off equals the same quantized model in vanilla transformers, and merged
cached decoding matches a recomputation as closely as vanilla's own cached decoding does."""

from __future__ import annotations

import pytest
import torch

import illava
from helpers import assert_equals_vanilla, cached_and_fresh_logits, illava_generate, vanilla_generate
from illava import MergeConfig
from illava.quantization import check_quantization

pytest.importorskip("bitsandbytes")
pytest.importorskip("accelerate")

MERGED = MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)
STEPS = 5
PROMPTS = ("Describe both pictures in detail.", "What differs between them?", "List every object.", "Tell a story.")


@pytest.fixture(scope="module", params=["8-bit", "4-bit"])
def quantized(request, model_dirs) -> illava.LVLM:
    return illava.load(model_dirs["qwen2_5_vl"], device="cpu", dtype="fp32", quantization=request.param)


def test_weights_are_stored_quantized(quantized, qwen25):
    assert quantized.quantization in ("8-bit", "4-bit") and quantized.model_id != qwen25.model_id
    assert quantized.weights_bytes < qwen25.weights_bytes


def test_merging_off_equals_the_quantized_model_in_vanilla_transformers(quantized, images):
    requests = [([images[0]], "Describe the picture."), ([images[1], images[2]], "Compare them.")]
    expected_ids, expected_logits = vanilla_generate(quantized, requests)
    assert_equals_vanilla(illava_generate(quantized, requests, MergeConfig()), expected_ids, expected_logits)


def _cached_minus_fresh(lvlm: illava.LVLM, images, config: MergeConfig) -> float:
    """Largest gap between the logits of cached decoding and of one fresh forward over the same sequence."""
    cached, fresh, _, _ = cached_and_fresh_logits(lvlm, images, config, PROMPTS, STEPS)
    return (cached - fresh).abs().max().item()


def test_merged_cached_decoding_matches_a_recomputation_as_vanilla_does(quantized, images):
    # Quantized kernels round differently for one new row than for a whole sequence (8-bit also picks its
    # outlier columns from all the rows it sees), so cached decoding drifts from a recomputation even in
    # vanilla transformers. iLLaVA's cached decoding of the reduced sequence may drift as much, not more.
    vanilla_drift = _cached_minus_fresh(quantized, images, MergeConfig())
    merged_drift = _cached_minus_fresh(quantized, images, MERGED)
    assert merged_drift <= max(2 * vanilla_drift, 1e-5), (merged_drift, vanilla_drift)


def test_an_unknown_quantization_names_the_choices():
    with pytest.raises(ValueError, match="quantization must be one of none, 8-bit, 4-bit"):
        check_quantization("2-bit")


def test_a_bitsandbytes_older_than_the_floor_is_refused_with_the_upgrade(monkeypatch):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.47.0")
    with pytest.raises(ValueError, match=r"bitsandbytes 0\.48\.0 or later, not 0\.47\.0: .*pip install -U"):
        check_quantization("8-bit")


def test_8bit_with_dtype_auto_computes_in_fp16_as_its_matmuls_do(model_dirs):
    lvlm = illava.load(model_dirs["qwen2_5_vl"], device="cpu", quantization="8-bit")
    assert lvlm.dtype == torch.float16
