"""``python -m illava bench --job memory``: weights and peak memory of one model stored in bf16 (or the
chosen dtype), 8-bit and 4-bit, each answering the same image with merging off and with a preset.

The model is the benchmark's random-weight one at real widths (reduced depth on the CPU), saved once as a
safetensors folder and loaded through ``illava.load`` for each quantization, as a user's model would be.
Weights are transformers' ``get_memory_footprint``; peaks are CUDA's allocator peak, or on the CPU the
rise of the process RSS during the run (one process: absolute RSS would carry the earlier loads; the
allocator reuses freed pages, so CPU peaks are rough). Speed is the speed job's: timings here would be
taken beside loading and quantizing, so none are reported.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from typing import Any

import torch

from ..config import preset
from ..quantization import check_quantization
from .bench import CPU_LLM_LAYERS, CPU_VIT_LAYERS, bench_inputs, build_lvlm, run_illava, run_vanilla, write_result

MEMORY_INPUT = "1 image"
MEMORY_PRESET = "paper-image"


def memory_benchmark(args: argparse.Namespace, log=print) -> dict[str, Any]:
    from .. import load
    from ..loading import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    full_depth = device.type != "cpu" or args.full_depth
    llm_layers = args.llm_layers or (None if full_depth else CPU_LLM_LAYERS)
    vit_layers = args.vit_layers or (None if full_depth else CPU_VIT_LAYERS)
    for quantization in args.quantizations:
        check_quantization(quantization)
    inputs = bench_inputs()[MEMORY_INPUT]
    rows = []
    with tempfile.TemporaryDirectory(prefix="illava-memory-") as folder:
        built = build_lvlm(args.arch, torch.device("cpu"), dtype, llm_layers, vit_layers)
        built.model.save_pretrained(folder)
        built.processor.save_pretrained(folder)
        depth = f"LLM {built.backbone.llm_depth} layers, ViT {built.backbone.vit_depth} layers"
        del built
        gc.collect()
        for quantization in args.quantizations:
            lvlm = load(folder, device=device, dtype=dtype, quantization=quantization)
            config = preset(MEMORY_PRESET, lvlm.backbone.vit_depth, lvlm.backbone.llm_depth, lvlm.backbone.stage2_choices)
            run_vanilla(lvlm, inputs, args.new_tokens)
            vanilla = run_vanilla(lvlm, inputs, args.new_tokens)
            merged = run_illava(lvlm, inputs, config, args.new_tokens)
            row = {
                "quantization": quantization,
                "weights_bytes": lvlm.weights_bytes,
                "vanilla_peak_bytes": vanilla.peak_mem_bytes,
                "vanilla_peak_above_start_bytes": vanilla.peak_extra_bytes,
                "illava_peak_bytes": merged.peak_mem_bytes,
                "illava_peak_above_start_bytes": merged.peak_extra_bytes,
            }
            rows.append(row)
            log(
                f"{quantization:>6}: weights {row['weights_bytes'] / 2**20:7.0f} MiB | peak above start: vanilla "
                f"{row['vanilla_peak_above_start_bytes'] / 2**20:6.0f} MiB, {MEMORY_PRESET} "
                f"{row['illava_peak_above_start_bytes'] / 2**20:6.0f} MiB"
            )
            del lvlm
            gc.collect()
    return {
        "job": "memory", "arch": args.arch, "depth": depth, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
        "input": MEMORY_INPUT, "preset": MEMORY_PRESET, "new_tokens": args.new_tokens, "rows": rows,
    }


def memory_table(result: dict) -> str:
    lines = [
        f"{result['arch']} ({result['depth']}), {result['dtype']} on {result['device']}, {result['input']}, "
        f"{result['new_tokens']} new tokens; peaks are the rise above the memory in use when the run began.",
        "",
        f"| weights | weights memory | peak, merging off | peak, {result['preset']} |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['quantization']} | {row['weights_bytes'] / 2**20:.0f} MiB | {row['vanilla_peak_above_start_bytes'] / 2**20:.0f} MiB | "
            f"{row['illava_peak_above_start_bytes'] / 2**20:.0f} MiB |"
        )
    return "\n".join(lines)


def run_memory_bench(args: argparse.Namespace) -> int:
    result = memory_benchmark(args)
    out = write_result(args.json, result, memory_table(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


