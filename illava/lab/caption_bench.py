"""``python -m illava bench --job caption``: what a user captioning a folder waits for.

Whole captions (``--new-tokens``, 128 by default, forced so every run decodes the same) of a batch of
distinct items, each its own prompt: vanilla transformers (the processor and its own batched ``generate``,
left padding) against iLLaVA (``encode`` per item, then ``generate_batch``) at a preset, side by side in
one process, alternating, at each batch size. Reported per batch size: items per minute, seconds per
caption, the share of the time spent decoding, and the ideal speedup from the FLOP model over the whole
job (ViT, prefill and decoding: ``flops.llm_decode_flops``), against which the measured one is compared.
The model is the speed benchmark's: real widths, random weights, fewer layers on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import MergeConfig, preset
from ..loading import synchronize
from .bench import CPU_LLM_LAYERS, CPU_VIT_LAYERS, PROMPT, build_lvlm
from .flops import Dims, llm_decode_flops, llm_prefill_flops, vit_flops

JOBS = {"image": "paper-image", "16-frame video": "paper-video"}
BATCH_SIZES = {"image": (1, 4, 8), "16-frame video": (1, 4)}
TEXT_TOKENS = 42


def job_items(kind: str, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` distinct items: 448x448 pictures, or 16-frame 448x448 clips at 2 fps."""
    rng = np.random.default_rng(seed)
    if kind == "image":
        return [{"images": [Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))]} for _ in range(count)]
    return [{"video": rng.integers(0, 256, (16, 448, 448, 3), dtype=np.uint8)} for _ in range(count)]


def vanilla_batch(lvlm, items: list[dict], new_tokens: int) -> dict[str, float]:
    """The processor and the model's own ``generate`` on a batch of prompts, timed from the pixels."""
    from transformers.video_utils import VideoMetadata

    from ..generation import GenerationClock
    from ..video import load_video

    processor = lvlm.processor
    start = time.perf_counter()
    texts, kwargs = [], {}
    for item in items:
        kind = "image" if "images" in item else "video"
        content = [{"type": kind}, {"type": "text", "text": PROMPT}]
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
    if "images" in items[0]:
        kwargs["images"] = [item["images"][0] for item in items]
    else:
        clips = [load_video(item["video"], 2.0, 16, 2.0) for item in items]
        kwargs.update(videos=[clip.pixels for clip in clips], do_sample_frames=False, cap_pixels_per_frame=True,
                      video_metadata=[VideoMetadata(**clip.metadata()) for clip in clips])
    inputs = processor(text=texts, return_tensors="pt", padding=True, padding_side="left", **kwargs).to(lvlm.device)
    clock = GenerationClock(new_tokens, None, lvlm.device)
    with torch.inference_mode():
        clock.start()
        lvlm.model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                            stopping_criteria=[clock], pad_token_id=0)
        clock.stop()
    synchronize(lvlm.device)
    total = time.perf_counter() - start
    visual = int((inputs["mm_token_type_ids"] != 0).sum()) // len(items)
    return {"seconds": total, "decode_s": clock.decode_s, "visual_tokens": visual}


def illava_batch(lvlm, items: list[dict], config: MergeConfig, new_tokens: int) -> dict[str, float]:
    """``encode`` per item, then one ``generate_batch``, timed from the pixels."""
    from .. import GenerationOptions, encode, generate_batch

    start = time.perf_counter()
    batch = []
    for item in items:
        visuals = encode(lvlm, item.get("images"), config, video=item.get("video"), video_fps=2.0, fps=2.0, max_frames=16)
        batch.append((visuals.items, PROMPT))
    options = GenerationOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    result = generate_batch(lvlm, batch, config, options)
    synchronize(lvlm.device)
    total = time.perf_counter() - start
    stats = result.stats[0]
    return {"seconds": total, "decode_s": stats["decode_s"], "visual_tokens": stats["visual_tokens"]["llm_input_full"]}


def job_flops(lvlm, items: list[dict], config: MergeConfig, visual_tokens: int, new_tokens: int) -> float:
    """ViT + prefill + decoding FLOPs of the batch under ``config`` (``MergeConfig()`` for vanilla)."""
    dims = Dims.from_config(lvlm.model.config)
    groups = [visual_tokens] if "images" in items[0] else [visual_tokens // 8] * 8
    one = (
        vit_flops(dims, groups, config)
        + llm_prefill_flops(dims, TEXT_TOKENS, visual_tokens, config)
        + llm_decode_flops(dims, TEXT_TOKENS, visual_tokens, config, new_tokens)
    )
    return one * len(items)


def caption_benchmark(args: argparse.Namespace, log=print) -> dict[str, Any]:
    from ..loading import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cpu = device.type == "cpu" and not args.full_depth
    llm_layers = args.llm_layers or (CPU_LLM_LAYERS if cpu else None)
    vit_layers = args.vit_layers or (CPU_VIT_LAYERS if cpu else None)
    torch.manual_seed(0)
    lvlm = build_lvlm(args.arch, device, dtype, llm_layers, vit_layers)
    depth = f"LLM {lvlm.backbone.llm_depth} layers, ViT {lvlm.backbone.vit_depth} layers"
    log(f"{args.arch} ({depth}), {dtype}, {device}")
    rows = []
    for kind, preset_name in JOBS.items():
        config = preset(preset_name, lvlm.backbone.vit_depth, lvlm.backbone.llm_depth, lvlm.backbone.stage2_choices)
        illava_batch(lvlm, job_items(kind, 1, seed=99), config, 2)
        vanilla_batch(lvlm, job_items(kind, 1, seed=99), 2)
        for size in BATCH_SIZES[kind]:
            items = job_items(kind, size)
            runs: dict[str, list[dict]] = {"vanilla": [], "illava": []}
            for _ in range(args.repeats):
                runs["vanilla"].append(vanilla_batch(lvlm, items, args.new_tokens))
                runs["illava"].append(illava_batch(lvlm, items, config, args.new_tokens))
            row = _row(lvlm, kind, preset_name, config, items, runs, args.new_tokens, depth, args.arch)
            rows.append(row)
            log(_line(row))
    return {"job": "caption", "device": str(device), "dtype": str(dtype).replace("torch.", ""), "new_tokens": args.new_tokens,
            "repeats": args.repeats, "threads": torch.get_num_threads(), "rows": rows}


def _row(lvlm, kind, preset_name, config, items, runs, new_tokens, depth, arch) -> dict[str, Any]:
    seconds = {name: statistics.median(r["seconds"] for r in rs) for name, rs in runs.items()}
    decode = {name: statistics.median(r["decode_s"] for r in rs) for name, rs in runs.items()}
    visual = runs["vanilla"][0]["visual_tokens"]
    ideal = job_flops(lvlm, items, MergeConfig(), visual, new_tokens) / job_flops(lvlm, items, config, visual, new_tokens)
    speedup = seconds["vanilla"] / seconds["illava"]
    return {
        "arch": arch, "depth": depth, "input": kind, "preset": preset_name, "batch_size": len(items),
        "visual_tokens_per_item": visual,
        "items_per_min": {name: 60 * len(items) / s for name, s in seconds.items()},
        "seconds_per_caption": {name: s / len(items) for name, s in seconds.items()},
        "decode_share": {name: decode[name] / seconds[name] for name in seconds},
        "speedup": speedup, "ideal_speedup": ideal, "measured_over_ideal": speedup / ideal,
    }


def _line(row: dict) -> str:
    per_min = row["items_per_min"]
    return (
        f"{row['input']:>15} x{row['batch_size']}: {per_min['vanilla']:6.2f} -> {per_min['illava']:6.2f} items/min "
        f"({row['preset']}), {row['speedup']:.2f}x, ideal {row['ideal_speedup']:.2f}x ({row['measured_over_ideal']:.2f}); "
        f"decoding {row['decode_share']['vanilla']:.0%} -> {row['decode_share']['illava']:.0%} of the time"
    )


def caption_table(result: dict) -> str:
    lines = [
        f"{result['rows'][0]['arch']} ({result['rows'][0]['depth']}), {result['dtype']} on {result['device']} "
        f"({result['threads']} threads), {result['new_tokens']} new tokens per caption, median of {result['repeats']}.",
        "",
        "| input | batch | preset | items/min vanilla → iLLaVA | s per caption | decoding share | speedup | ideal (FLOPs) | measured/ideal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        per_min, per_caption, share = row["items_per_min"], row["seconds_per_caption"], row["decode_share"]
        lines.append(
            f"| {row['input']} | {row['batch_size']} | {row['preset']} | {per_min['vanilla']:.2f} → {per_min['illava']:.2f} | "
            f"{per_caption['vanilla']:.1f} → {per_caption['illava']:.1f} | {share['vanilla']:.0%} → {share['illava']:.0%} | "
            f"{row['speedup']:.2f}x | {row['ideal_speedup']:.2f}x | {row['measured_over_ideal']:.2f} |"
        )
    return "\n".join(lines)


def run_caption_bench(args: argparse.Namespace) -> int:
    result = caption_benchmark(args)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(caption_table(result) + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
