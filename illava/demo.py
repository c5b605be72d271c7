"""``python -m illava demo``: one image through the model with merging off and with each preset.

Without ``--model`` it builds a small random-weight Qwen2.5-VL (real transformers class, saved and
loaded as a safetensors folder), so its answers are noise: the demo then shows how many tokens each
stage keeps, what that does to prefill time, and which tokens were kept. With ``--model`` it runs
the same on a real checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .config import preset
from .synthetic import TextDims, VisionDims, build_model_folder
from .viz import save_png, trace_figure

DEMO_TEXT = TextDims(512, 1536, 8, 8, 2, (8, 12, 12))
DEMO_VISION = VisionDims(8, 256, 768, 4, window_size=112, fullatt_block_indexes=(3, 7))
PRESET_ORDER = ("off", "paper-image", "fast")
TIMED_RUNS = 3


def scene(width: int = 448, height: int = 448, seed: int = 0) -> Image.Image:
    """A textured background with a few coloured shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 150 + 40 * np.sin(xx / 23.0)[..., None] * np.cos(yy / 31.0)[..., None]
    noise = rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colours = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (240, 200, 30)]
    for i, colour in enumerate(colours):
        x, y = rng.integers(20, width - 120), rng.integers(20, height - 120)
        size = int(rng.integers(50, 100))
        box = (int(x), int(y), int(x) + size, int(y) + size)
        (draw.ellipse if i % 2 else draw.rectangle)(box, fill=colour)
    return image


def run_demo(args: argparse.Namespace) -> int:
    from . import GenerationOptions, encode, generate, load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model
    if model_dir is None:
        model_dir = out / "random-qwen2.5-vl"
        if not (model_dir / "config.json").is_file():
            print(f"building a random-weight Qwen2.5-VL demo model in {model_dir} ...")
            build_model_folder(model_dir, text=DEMO_TEXT, vision=DEMO_VISION, initializer_range=0.05)
        print("note: this model has random weights, so its answers are noise; the token counts and timings are real.")
    lvlm = load(model_dir, device=args.device, dtype=args.dtype, attn_implementation=args.attention)
    image = scene()
    image.save(out / "scene.png")
    prompt = "What shapes are in the picture, and what colour is each?"
    options = GenerationOptions(max_new_tokens=args.max_new_tokens)
    print(f"model: {model_dir} ({lvlm.dtype}, {lvlm.device}); image: {out / 'scene.png'}; prompt: {prompt!r}\n")
    header = f"{'preset':<12} {'ViT in':>7} {'ViT out':>8} {'LLM after stage 2':>18} {'ViT s':>7} {'prefill s':>10} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    configs = {name: preset(name, lvlm.backbone.vit_depth, lvlm.backbone.llm_depth) for name in PRESET_ORDER}
    # An untimed pass over every preset warms up kernels and allocators so the rows compare fairly.
    for config in configs.values():
        generate(lvlm, encode(lvlm, image, config), prompt, config, GenerationOptions(max_new_tokens=1))
    # Presets take turns, round after round, so a busy machine slows them all alike.
    runs: dict[str, list] = {name: [] for name in configs}
    for _ in range(TIMED_RUNS):
        for name, config in configs.items():
            visuals = encode(lvlm, image, config)
            result = generate(lvlm, visuals, prompt, config, options)
            runs[name].append((result.stats[0]["vit_s"] + result.stats[0]["prefill_s"], result, visuals))
    baseline = None
    answers = []
    for name, timed in runs.items():
        total, result, visuals = sorted(timed, key=lambda run: run[0])[TIMED_RUNS // 2]
        stats = result.stats[0]
        tokens = stats["visual_tokens"]
        baseline = baseline or total
        print(
            f"{name:<12} {tokens['vit_input']:>7} {tokens['vit_output']:>8} {tokens['llm_after_stage2']:>18} "
            f"{stats['vit_s']:>7.3f} {stats['prefill_s']:>10.3f} {baseline / total:>7.2f}x"
        )
        answers.append((name, result.texts[0]))
        save_png(trace_figure(result.traces[0][0], visuals.items[0].preview), out / f"tokens-{name}.png")
    print(f"\nspeedup = (ViT + prefill time with merging off) / (the same with the preset), median of {TIMED_RUNS} runs")
    for name, text in answers:
        print(f"{name:>12}: {text[:100]!r}")
    print(f"\nretained-token maps (image | after stage 1 | after stage 2): {out}/tokens-*.png")
    return 0
