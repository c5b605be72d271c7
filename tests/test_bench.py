"""The benchmark's models, its cost figures, and a miniature run of the real benchmark command."""

import json
import subprocess
import sys
import time

import pytest
import torch

from illava.lab.bench import ARCHES, bench_inputs, build_lvlm, run_illava, run_vanilla
from illava.backbones.base import ItemShape
from illava.config import MergeConfig
from illava.cost import cost_model


def test_models_have_the_published_dimensions():
    import torch

    lvlm = build_lvlm("qwen2.5-vl-3b", torch.device("cpu"), torch.bfloat16, llm_layers=1, vit_layers=2)
    text, vision = lvlm.model.config.text_config, lvlm.model.config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads) == (2048, 11008, 16, 2)
    assert (vision.hidden_size, vision.intermediate_size, vision.out_hidden_size) == (1280, 3420, 2048)
    assert text.vocab_size == 151936 and set(ARCHES) >= {"qwen2.5-vl-3b", "qwen2.5-vl-7b"}
    assert next(lvlm.model.parameters()).dtype == torch.bfloat16


def test_flops_of_a_real_width_model_fall_with_the_tokens_kept():
    import torch

    lvlm = build_lvlm("qwen2-vl-2b", torch.device("cpu"), torch.bfloat16, llm_layers=2, vit_layers=2)
    cost, image = cost_model(lvlm.backbone), ItemShape((1, 16, 16), 256, 1024)
    off = MergeConfig()
    half = MergeConfig(stage1_layers=(1,), stage1_keep=0.5, stage2_layers=(1,), stage2_keep=0.5)
    assert cost.flops([image], 40, half).vit < cost.flops([image], 40, off).vit
    assert cost.flops([image], 40, half).llm_visual < cost.flops([image], 40, off).llm_visual
    # With nothing merged, encoder FLOPs are linear in the frame count for per-frame attention.
    frames = ItemShape((2, 16, 16), 512, 2048)
    assert cost.flops([frames], 40, off).vit == pytest.approx(2 * cost.flops([image], 40, off).vit)
    assert 0.0 < cost.work([image], 40, half) < 1.0 < cost.estimate([image], 40, half).speedup


def test_the_bench_command_writes_rows_a_table_and_a_chart(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "illava", "bench", "--arch", "qwen2-vl-2b", "--layers", "2", "--inputs", "1 image",
         "--presets", "off", "fast", "auto", "--budgets", "0.5", "--new-tokens", "3", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(row["preset"], row["budget"]) for row in rows] == [(None, None), ("off", None), ("fast", None), ("auto", 0.5)]
    keys = {"arch", "input", "method", "preset", "budget", "work", "predicted_speedup", "visual_tokens", "vit_s",
            "prefill_s", "decode_tok_s", "peak_mem_bytes", "speedup_prefill", "measured_over_predicted", "memory_ratio"}
    for row in rows:
        assert keys <= set(row)
        assert row["depth"].startswith("LLM 2/28 layers, ViT 2/32 layers")
    vanilla, off, fast, auto = rows
    assert vanilla["speedup_prefill"] == 1.0 and vanilla["memory_ratio"] == 1.0 and vanilla["work"] == 1.0
    assert off["visual_tokens"] == vanilla["visual_tokens"] and off["predicted_speedup"] == pytest.approx(1.0)
    assert fast["visual_tokens"]["llm_after_stage2"] < vanilla["visual_tokens"]["llm_input_full"]
    assert fast["predicted_speedup"] > 1.0 and fast["work"] < 1.0
    assert auto["work"] == pytest.approx(0.5, abs=0.03) and auto["predicted_speedup"] > 1.5
    assert out.with_suffix(".md").read_text().count("\n") == 6
    assert out.with_suffix(".png").stat().st_size > 1000


UPLOAD_S = 1.0


class SlowUpload(torch.Tensor):
    """Pixel values whose move to the device takes ``UPLOAD_S``, as a large upload does on a GPU."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.to:
            time.sleep(UPLOAD_S)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


def test_both_sides_are_timed_from_the_same_host_pixels(monkeypatch):
    lvlm = build_lvlm("qwen2-vl-2b", torch.device("cpu"), torch.float32, llm_layers=1, vit_layers=1)
    inputs = bench_inputs()["1 image"]

    def both():
        return run_vanilla(lvlm, inputs, 1), run_illava(lvlm, inputs, MergeConfig(), 1)

    both()  # first-call costs
    plain = both()
    image_processor = lvlm.processor.image_processor
    preprocess = image_processor.preprocess

    def slow_pixels(*args, **kwargs):
        out = preprocess(*args, **kwargs)
        out["pixel_values"] = out["pixel_values"].as_subclass(SlowUpload)
        return out

    monkeypatch.setattr(image_processor, "preprocess", slow_pixels)
    slow = both()
    # The upload counts with the ViT on both sides, never on one alone, and never with the prefill.
    for before, after in zip(plain, slow):
        assert after.vit_s - before.vit_s > 0.8 * UPLOAD_S
        assert abs(after.prefill_s - before.prefill_s) < 0.5 * UPLOAD_S
