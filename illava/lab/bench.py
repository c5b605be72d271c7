"""``python -m illava bench``: vanilla transformers and iLLaVA side by side, in one process.

Models have the published dimensions of real checkpoints with random weights (built without
initialisation, then filled cheaply); ``--llm-layers`` / ``--vit-layers`` shorten them to fit a time
budget, and every output says so. ``auto`` runs once per ``--budgets`` entry (a work share; without a
profile it is the paper preset scaled to the budget). On each input, every method runs once untimed to
warm up, then all methods run in alternating rounds; figures are medians. Both sides are timed from the
processor's host pixels: the upload counts with the ViT, the prompt's assembly with the prefill. Each row carries its work
share and the cost model's predicted ViT + prefill speedup beside the measured one. Peak memory is the process RSS sampled
during the run on CPU, and ``max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..config import MergeConfig
from ..cost import cost_model
from ..resolve import resolve
from ..testing.models import TextDims, VisionDims
from .timing import device_name

VOCAB = 151936
QWEN2_5_VIT = VisionDims(32, 1280, 3420, 16, window_size=112, fullatt_block_indexes=(7, 15, 23, 31))
QWEN2_VIT = VisionDims(32, 1280, 5120, 16)
# Published dimensions: (model type, LLM, ViT).
ARCHES: dict[str, tuple[str, TextDims, VisionDims]] = {
    "qwen2.5-vl-3b": ("qwen2_5_vl", TextDims(2048, 11008, 36, 16, 2, (16, 24, 24), VOCAB, True), QWEN2_5_VIT),
    "qwen2.5-vl-7b": ("qwen2_5_vl", TextDims(3584, 18944, 28, 28, 4, (16, 24, 24), VOCAB, False), QWEN2_5_VIT),
    "qwen2-vl-2b": ("qwen2_vl", TextDims(1536, 8960, 28, 12, 2, (16, 24, 24), VOCAB, True), QWEN2_VIT),
    "qwen2-vl-7b": ("qwen2_vl", TextDims(3584, 18944, 28, 28, 4, (16, 24, 24), VOCAB, False), QWEN2_VIT),
}
PRESETS = ("off", "paper-image", "paper-video", "fast")
INPUTS = ("1 image", "4 images", "16-frame video")
PROMPT = "Describe what you see in detail."


@dataclass
class Run:
    vit_s: float
    prefill_s: float
    decode_s: float
    new_tokens: int
    peak_mem_bytes: int
    peak_extra_bytes: int
    visual_tokens: dict[str, int]
    shapes: list


def build_lvlm(arch: str, device: torch.device, dtype: torch.dtype, llm_layers: int | None, vit_layers: int | None, seed: int = 0):
    """A random-weight model of ``arch``'s real dimensions (optionally fewer layers) as an LVLM handle."""
    from transformers.initialization import no_init_weights

    from ..backbones import backbone_for
    from ..loading import LVLM
    from ..testing.models import model_config, processor_for
    from ..testing.text import byte_level_tokenizer

    kind, text, vision = ARCHES[arch]
    text = replace(text, num_hidden_layers=llm_layers or text.num_hidden_layers)
    vision = replace(vision, depth=vit_layers or vision.depth)
    tokenizer = byte_level_tokenizer()
    config, model_cls = model_config(kind, text, vision, tokenizer)
    config._attn_implementation = "sdpa"
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with no_init_weights():
            model = model_cls(config)
    finally:
        torch.set_default_dtype(default)
    _fill(model, seed)
    model = model.to(device).eval()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = 0
    processor = processor_for(kind, tokenizer, min_pixels=56 * 56, max_pixels=448 * 448)
    return LVLM(model=model, processor=processor, backbone=backbone_for(model), path=Path(arch), device=device, dtype=dtype)


def _fill(model: torch.nn.Module, seed: int) -> None:
    """Cheap random weights: uniform matrices, unit norms, zero biases (no per-layer init schemes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1:
                param.fill_(1.0 if "norm" in name or "ln_q" in name else 0.0)
            else:
                param.uniform_(-0.03, 0.03, generator=generator)


def bench_inputs(seed: int = 0) -> dict[str, dict[str, Any]]:
    """The three benchmark inputs: one 448x448 image, four of them, and 16 frames of 448x448."""
    rng = np.random.default_rng(seed)

    def picture() -> Image.Image:
        return Image.fromarray(rng.integers(0, 256, (448, 448, 3), dtype=np.uint8))

    frames = rng.integers(0, 256, (16, 448, 448, 3), dtype=np.uint8)
    return {
        "1 image": {"images": [picture()]},
        "4 images": {"images": [picture() for _ in range(4)]},
        "16-frame video": {"video": frames, "video_fps": 2.0, "fps": 2.0, "max_frames": 16},
    }


class PeakMemory:
    """Peak memory during a block: CUDA's allocator peak, or the process RSS sampled every 2 ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = self.start = 0
        self._stop = threading.Event()

    @property
    def extra(self) -> int:
        """How far the peak rose above the memory in use when the block began (weights and all)."""
        return max(0, self.peak - self.start)

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.peak = self.start = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def run_illava(lvlm, inputs: dict, config: MergeConfig, new_tokens: int) -> Run:
    from .. import GenerationOptions, encode, generate

    options = GenerationOptions(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    with PeakMemory(lvlm.device) as memory:
        visuals = encode(lvlm, inputs.get("images"), config, video=inputs.get("video"),
                         fps=inputs.get("fps", 2.0), max_frames=inputs.get("max_frames", 32), video_fps=inputs.get("video_fps"))
        result = generate(lvlm, visuals, PROMPT, config, options)
    stats = result.stats[0]
    return Run(stats["vit_s"], stats["prefill_s"], stats["decode_s"], stats["new_tokens"], memory.peak, memory.extra,
               stats["visual_tokens"], [item.layout for item in visuals.items])


def run_vanilla(lvlm, inputs: dict, new_tokens: int) -> Run:
    """``processor(...)`` and ``model.generate(...)`` exactly as transformers documents them."""
    from transformers.video_utils import VideoMetadata

    from ..generation import GenerationClock
    from ..encoding import VisualTokenCounts
    from ..video import load_video

    processor = lvlm.processor
    content = [{"type": "image"} for _ in inputs.get("images") or []]
    kwargs: dict[str, Any] = {}
    if "images" in inputs:
        kwargs["images"] = inputs["images"]
    if "video" in inputs:
        content.append({"type": "video"})
        frames = load_video(inputs["video"], inputs["fps"], inputs["max_frames"], inputs["video_fps"])
        kwargs.update(videos=[frames.pixels], do_sample_frames=False, cap_pixels_per_frame=True,
                      video_metadata=[VideoMetadata(**frames.metadata())])
    content.append({"type": "text", "text": PROMPT})
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    model_inputs = processor(text=[text], return_tensors="pt", **kwargs)
    upload, vit = _Stopwatch(lvlm.device), _Stopwatch(lvlm.device)
    hooks = [lvlm.model.model.visual.register_forward_pre_hook(vit.start), lvlm.model.model.visual.register_forward_hook(vit.stop)]
    clock = GenerationClock(new_tokens, None, lvlm.device)
    try:
        with PeakMemory(lvlm.device) as memory, torch.inference_mode():
            # From the processor's host pixels, as iLLaVA's encode is timed: the upload counts with the ViT.
            clock.start()
            upload.start()
            model_inputs = model_inputs.to(lvlm.device)
            upload.stop()
            out = lvlm.model.generate(**model_inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                      do_sample=False, stopping_criteria=[clock], pad_token_id=0)
            clock.stop()
    finally:
        for hook in hooks:
            hook.remove()
    full = int((model_inputs["mm_token_type_ids"] != 0).sum())
    grids = [tuple(g.tolist()) for key in ("image_grid_thw", "video_grid_thw") for g in model_inputs.get(key, [])]
    patches = sum(t * h * w for t, h, w in grids)
    tokens = VisualTokenCounts(vit_input=patches, vit_output=full, llm_input=full, llm_after_stage2=full, llm_input_full=full)
    new = out.shape[1] - model_inputs["input_ids"].shape[1]
    vit_s = upload.seconds + vit.seconds
    return Run(vit_s, clock.prefill_s - vit_s, clock.decode_s, new, memory.peak, memory.extra, tokens, [])


class _Stopwatch:
    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self._t = device, 0.0, 0.0

    def start(self, *_: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._t = time.perf_counter()

    def stop(self, *_: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - self._t


def median_run(runs: list[Run]) -> dict[str, float]:
    return {
        "vit_s": statistics.median(r.vit_s for r in runs),
        "prefill_s": statistics.median(r.prefill_s for r in runs),
        "decode_s": statistics.median(r.decode_s for r in runs),
        "peak_mem_bytes": int(statistics.median(r.peak_mem_bytes for r in runs)),
        "peak_extra_bytes": int(statistics.median(r.peak_extra_bytes for r in runs)),
    }


def benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    from ..loading import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    llm_layers, vit_layers = args.llm_layers, args.vit_layers
    if device.type == "cpu" and not args.full_depth:
        llm_layers, vit_layers = llm_layers or CPU_LLM_LAYERS, vit_layers or CPU_VIT_LAYERS
    torch.manual_seed(0)
    start = time.perf_counter()
    lvlm = build_lvlm(args.arch, device, dtype, llm_layers, vit_layers)
    _, full_text, full_vision = ARCHES[args.arch]
    depth = (
        f"LLM {lvlm.backbone.llm_depth}/{full_text.num_hidden_layers} layers, "
        f"ViT {lvlm.backbone.vit_depth}/{full_vision.depth} layers"
    )
    log(f"{args.arch} ({depth}), {dtype}, {device}: built in {time.perf_counter() - start:.0f} s")
    methods = ["vanilla"] + bench_methods(args.presets, args.budgets)
    all_inputs = bench_inputs()

    def config_for(method: str, inputs: dict) -> MergeConfig:
        name, _, budget = method.partition("@")
        return resolve(name, float(budget or 1.0), lvlm, "video" if "video" in inputs else "image")

    def once(method: str, inputs: dict) -> Run:
        if method == "vanilla":
            return run_vanilla(lvlm, inputs, args.new_tokens)
        return run_illava(lvlm, inputs, config_for(method, inputs), args.new_tokens)

    rows = []
    cost = cost_model(lvlm.backbone)
    for input_name in args.inputs:
        inputs = all_inputs[input_name]
        # One untimed run per method on each input takes its first-call costs (kernel choice, allocator growth) out.
        for method in methods:
            once(method, inputs)
        runs: dict[str, list[Run]] = {method: [] for method in methods}
        for _ in range(args.repeats):
            for method in methods:
                runs[method].append(once(method, inputs))
        text_tokens = _text_tokens(lvlm, inputs)
        shapes = runs[methods[1]][0].shapes
        base = median_run(runs["vanilla"])
        for method in methods:
            config = MergeConfig() if method == "vanilla" else config_for(method, inputs)
            estimate = cost.estimate(shapes, text_tokens, config)
            row = {"arch": args.arch, "depth": depth, "input": input_name,
                   **_timed_row(method, config, estimate, runs[method], base)}
            rows.append(row)
            log(_row_line(row))
    return {"device": str(device), "device_name": device_name(device), "dtype": str(dtype).replace("torch.", ""),
            "new_tokens": args.new_tokens,
            "repeats": args.repeats, "threads": torch.get_num_threads(), "rows": rows}


def _timed_row(method: str, config: MergeConfig, estimate, runs: list["Run"], base: dict) -> dict[str, Any]:
    """One result row: ``method``'s settings, its work and predicted speedup, and its medians against vanilla's."""
    med = median_run(runs)
    ttft = med["vit_s"] + med["prefill_s"]
    new = runs[0].new_tokens
    name, _, budget = method.partition("@")
    row = {
        "method": "vanilla transformers" if method == "vanilla" else "illava",
        "preset": None if method == "vanilla" else name,
        "budget": float(budget) if budget else None,
        "config": config.to_dict(),
        "work": estimate.work,
        "predicted_speedup": estimate.speedup,
        "visual_tokens": runs[0].visual_tokens,
        "vit_s": med["vit_s"],
        "prefill_s": ttft,
        "llm_prefill_s": med["prefill_s"],
        "decode_tok_s": new / med["decode_s"] if med["decode_s"] > 0 else None,
        "throughput_tok_s": new / (ttft + med["decode_s"]),
        "peak_mem_bytes": med["peak_mem_bytes"],
        "peak_extra_bytes": med["peak_extra_bytes"],
        "speedup_prefill": (base["vit_s"] + base["prefill_s"]) / ttft,
        "memory_ratio": med["peak_mem_bytes"] / base["peak_mem_bytes"],
        "extra_memory_ratio": med["peak_extra_bytes"] / max(1, base["peak_extra_bytes"]),
    }
    row["measured_over_predicted"] = row["speedup_prefill"] / row["predicted_speedup"]
    return row


def bench_methods(presets, budgets) -> list[str]:
    """The iLLaVA rows: each preset, and ``auto`` once per budget as ``auto@B``."""
    methods = []
    for name in presets:
        methods += [f"auto@{budget}" for budget in budgets] if name == "auto" else [name]
    return methods


CPU_LLM_LAYERS = 9
CPU_VIT_LAYERS = 8


def _text_tokens(lvlm, inputs: dict) -> int:
    return 40 + 2 * (len(inputs.get("images") or []) + ("video" in inputs))


def _row_line(row: dict) -> str:
    tokens = row["visual_tokens"]
    name = (row["preset"] or "vanilla") + (f"@{row['budget']}" if row["budget"] else "")
    return (
        f"  {row['input']:<15} {name:<12} work {row['work']:.2f} tokens {tokens['llm_input_full']:>5}->{tokens['vit_output']:>5}->{tokens['llm_after_stage2']:>5} "
        f"ViT {row['vit_s']:6.2f}s TTFT {row['prefill_s']:6.2f}s x{row['speedup_prefill']:.2f} "
        f"(predicted x{row['predicted_speedup']:.2f}) decode {row['decode_tok_s'] or 0:5.1f} tok/s "
        f"mem {row['peak_mem_bytes'] / 2**30:5.2f} GiB x{row['memory_ratio']:.2f} "
        f"(above start {row['peak_extra_bytes'] / 2**20:6.0f} MiB x{row['extra_memory_ratio']:.2f})"
    )


def markdown_table(result: dict) -> str:
    """The rows as a Markdown table for the README."""
    lines = [
        "| input | method | budget | work | visual tokens (full → after ViT → after stage 2) | ViT s | TTFT s | prefill speedup | predicted | measured/predicted | decode tok/s | peak memory | memory ratio | peak above start | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        tokens = row["visual_tokens"]
        lines.append(
            f"| {row['input']} | {row['preset'] or 'vanilla transformers'} | {row['budget'] or '-'} | {row['work']:.2f} | "
            f"{tokens['llm_input_full']} → {tokens['vit_output']} → "
            f"{tokens['llm_after_stage2']} | {row['vit_s']:.2f} | {row['prefill_s']:.2f} | {row['speedup_prefill']:.2f}x | "
            f"{row['predicted_speedup']:.2f}x | {row['measured_over_predicted']:.2f} | {row['decode_tok_s'] or 0:.1f} | "
            f"{row['peak_mem_bytes'] / 2**30:.2f} GiB | {row['memory_ratio']:.2f} | "
            f"{row['peak_extra_bytes'] / 2**20:.0f} MiB | {row['extra_memory_ratio']:.2f} |"
        )
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    from .chart import speed_chart

    result = benchmark(args)
    out = write_result(args.json, result, markdown_table(result))
    speed_chart(result["rows"]).save(out.with_suffix(".png"))
    print(f"wrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}")
    return 0


def write_result(json_path: str | Path, result: dict[str, Any], table: str) -> Path:
    """A benchmark's ``result`` as JSON at ``json_path`` and its markdown ``table`` beside it (.md);
    returns the JSON's path."""
    out = Path(json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    return out
