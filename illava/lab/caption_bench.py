"""``python -m illava bench --job caption``: what a user captioning a folder waits for.

Whole captions (``--new-tokens``, 128 by default, forced so every run decodes the same) of a batch of
distinct items, each its own prompt: vanilla transformers (the processor and its own batched ``generate``,
left padding) against iLLaVA (``encode`` per item, then ``generate_batch``) at a preset, side by side in
one process, alternating, at each batch size. Reported per batch size: items per minute, seconds per
caption, the share of the time spent decoding, and two ideals the measured speedup is compared with: the
cost model's over the whole job (ViT, prefill and decoding: ``cost.CostModel``), and the one by
phase (``phase_ideal``: each phase of vanilla's time shrunk by its own FLOP ratio).
The model is the speed benchmark's: real widths, random weights, fewer layers on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import MergeConfig, preset
from ..loading import synchronize
from .bench import CPU_LLM_LAYERS, CPU_VIT_LAYERS, PROMPT, build_lvlm, write_result
from ..cost import cost_model
from .timing import device_name, paired_speedups

JOBS = {"image": "paper-image", "16-frame video": "paper-video"}
BATCH_SIZES = {"image": (1, 4, 8), "16-frame video": (1, 4)}
TEXT_TOKENS = 42
PHASES = ("vit_and_prefill", "decoding")


def job_items(kind: str, count: int, seed: int = 0, frames: int = 16) -> list[dict[str, Any]]:
    """``count`` distinct items: 448x448 pictures, or ``frames``-frame 448x448 clips at 2 fps."""
    rng = np.random.default_rng(seed)
    if kind == "image":
        return [{"images": [Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))]} for _ in range(count)]
    return [{"video": rng.integers(0, 256, (frames, 448, 448, 3), dtype=np.uint8)} for _ in range(count)]


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
    return {"seconds": total, "decode_s": clock.decode_s, "visual_tokens": visual, "llm_input": visual}


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
    tokens = result.stats[0]["visual_tokens"]
    return {"seconds": total, "decode_s": result.stats[0]["decode_s"], "visual_tokens": tokens["llm_input_full"],
            "llm_input": tokens["llm_input"], "shapes": [item.layout for item in batch[0][0]]}


def job_flops(lvlm, shapes: list, items: int, config: MergeConfig, new_tokens: int) -> tuple[float, float]:
    """FLOPs of a batch of ``items`` alike, each of ``shapes``, under ``config`` (``MergeConfig()`` for vanilla):
    (ViT + prefill, decoding), from the cost model."""
    cost = cost_model(lvlm.backbone)
    before = cost.flops(shapes, TEXT_TOKENS, config).total
    return before * items, cost.decode_flops(shapes, TEXT_TOKENS, config, new_tokens) * items


def phase_ideal(seconds: float, decode_s: float, before_ratio: float, decode_ratio: float) -> float:
    """The whole job's speedup if each phase of vanilla's measured time shrank by its own FLOP ratio.

    The FLOP count alone weighs the phases by FLOPs, as if every FLOP took as long; but decoding one token
    at a time runs at a fraction of prefill's FLOP rate (it streams the weights for a few rows), so where it
    takes most of the time the whole-job FLOP ratio promises more than merging can give.
    """
    return seconds / ((seconds - decode_s) / before_ratio + decode_s / decode_ratio)


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
        # Warm-up: the first call of each path pays one-time costs; a 2-frame clip pays them as well as 16 would.
        warm_up = job_items(kind, 1, seed=99, frames=2)
        illava_batch(lvlm, warm_up, config, 2)
        vanilla_batch(lvlm, warm_up, 2)
        for size in BATCH_SIZES[kind]:
            items = job_items(kind, size)
            runs: dict[str, list[dict]] = {"vanilla": [], "illava": []}
            for _ in range(args.repeats):
                runs["vanilla"].append(vanilla_batch(lvlm, items, args.new_tokens))
                runs["illava"].append(illava_batch(lvlm, items, config, args.new_tokens))
            row = _row(lvlm, kind, preset_name, config, items, runs, args.new_tokens, depth, args.arch)
            rows.append(row)
            log(_line(row))
    return {"job": "caption", "device": str(device), "device_name": device_name(device), "dtype": str(dtype).replace("torch.", ""),
            "new_tokens": args.new_tokens, "repeats": args.repeats, "threads": torch.get_num_threads(), "rows": rows}


def _row(lvlm, kind, preset_name, config, items, runs, new_tokens, depth, arch) -> dict[str, Any]:
    rounds = {name: [r["seconds"] for r in rs] for name, rs in runs.items()}
    seconds = {name: statistics.median(times) for name, times in rounds.items()}
    decode = {name: statistics.median(r["decode_s"] for r in rs) for name, rs in runs.items()}
    visual = runs["vanilla"][0]["visual_tokens"]
    shapes = runs["illava"][0]["shapes"]
    vanilla_flops = job_flops(lvlm, shapes, len(items), MergeConfig(), new_tokens)
    illava_flops = job_flops(lvlm, shapes, len(items), config, new_tokens)
    ideal = sum(vanilla_flops) / sum(illava_flops)
    by_phase = phase_ideal(seconds["vanilla"], decode["vanilla"], *(v / i for v, i in zip(vanilla_flops, illava_flops)))
    speedup = paired_speedups(rounds, "vanilla")["illava"]
    return {
        "arch": arch, "depth": depth, "input": kind, "preset": preset_name, "batch_size": len(items),
        "visual_tokens_per_item": visual, "llm_input_per_item": {name: rs[0]["llm_input"] for name, rs in runs.items()},
        "work": cost_model(lvlm.backbone).work(shapes, TEXT_TOKENS, config),
        "items_per_min": {name: 60 * len(items) / s for name, s in seconds.items()},
        "seconds_per_caption": {name: s / len(items) for name, s in seconds.items()},
        "decode_share": {name: decode[name] / seconds[name] for name in seconds},
        "flops": {"vanilla": dict(zip(PHASES, vanilla_flops)), "illava": dict(zip(PHASES, illava_flops))},
        "speedup": speedup, "ideal_speedup": ideal, "measured_over_ideal": speedup / ideal,
        "phase_ideal_speedup": by_phase, "measured_over_phase_ideal": speedup / by_phase, "rounds_s": rounds,
    }


def _line(row: dict) -> str:
    per_min = row["items_per_min"]
    return (
        f"{row['input']:>15} x{row['batch_size']}: {per_min['vanilla']:6.2f} -> {per_min['illava']:6.2f} items/min "
        f"({row['preset']}), {row['speedup']:.2f}x, ideal {row['ideal_speedup']:.2f}x ({row['measured_over_ideal']:.2f}), "
        f"by phase {row['phase_ideal_speedup']:.2f}x ({row['measured_over_phase_ideal']:.2f}); "
        f"decoding {row['decode_share']['vanilla']:.0%} -> {row['decode_share']['illava']:.0%} of the time"
    )


def caption_table(result: dict) -> str:
    lines = [
        f"{result['rows'][0]['arch']} ({result['rows'][0]['depth']}), {result['dtype']} on {result['device']} "
        f"({result['device_name']}, {result['threads']} threads), {result['new_tokens']} new tokens per caption, "
        f"median of {result['repeats']} rounds (speedups: the median of each round's ratio).",
        "",
        "| input | batch | preset | items/min vanilla → iLLaVA | s per caption | decoding share | speedup "
        "| ideal (FLOPs) | measured/ideal | ideal by phase | measured/ideal by phase |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        per_min, per_caption, share = row["items_per_min"], row["seconds_per_caption"], row["decode_share"]
        lines.append(
            f"| {row['input']} | {row['batch_size']} | {row['preset']} | {per_min['vanilla']:.2f} → {per_min['illava']:.2f} | "
            f"{per_caption['vanilla']:.1f} → {per_caption['illava']:.1f} | {share['vanilla']:.0%} → {share['illava']:.0%} | "
            f"{row['speedup']:.2f}x | {row['ideal_speedup']:.2f}x | {row['measured_over_ideal']:.2f} | "
            f"{row['phase_ideal_speedup']:.2f}x | {row['measured_over_phase_ideal']:.2f} |"
        )
    return "\n".join(lines)


def run_caption_bench(args: argparse.Namespace) -> int:
    result = caption_benchmark(args)
    out = write_result(args.json, result, caption_table(result))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0
