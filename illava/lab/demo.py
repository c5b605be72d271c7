"""``python -m illava demo``: the shipped demo model answers questions about a scene image and a video,
with merging off, with ``auto`` (the model's merge profile) at half and at a third of the work on the
picture, and with the paper presets, side by side.

For each preset it prints the answers (marked right or wrong against the scene's ground truth), the
visual tokens left after each stage, the work share and the cost model's predicted speedup beside the
measured ViT + prefill time; it writes the retained-token maps as PNG files. ``--model DIR`` runs the same on any supported checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ..resolve import resolve
from ..viz import save_png, trace_figure
from . import scenes
from .evaluate import MAX_FRAMES, VIDEO_FPS
from .timing import busy_note, paired_speedups

IMAGE_PRESETS = ("off", "paper-image", "fast")
VIDEO_PRESETS = ("off", "paper-video")
DEMO_CONVERSATION = 7
# A question type the demo model answers well (docs/demo-model.md: appears 59 of 60), so that the presets' answers
# can be told apart from the unmerged one.
DEMO_VIDEO_FAMILY = "appear"
# Rounds of timing after one warm-up round; each round encodes and prefills once per preset (one new token).
TIMED_RUNS = 7
# auto at half the work, where this model keeps its answers, and at the default third, where it loses some.
AUTO_BUDGETS = (0.5, 0.33)


def run_demo(args: argparse.Namespace) -> int:
    from .. import GenerationOptions, load
    from .demo_model import demo_model_folder

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = args.model or demo_model_folder()
    lvlm = load(model_dir, device=args.device, dtype=args.dtype, attn_implementation=args.attention, quantization=args.quantization)
    options = GenerationOptions(max_new_tokens=args.max_new_tokens)
    weights = lvlm.quantization if lvlm.quantization != "none" else str(lvlm.dtype).replace("torch.", "")
    print(f"model: {model_dir} (weights {lvlm.weights_bytes / 2**20:.0f} MiB, {weights}, {lvlm.device})")

    chat = scenes.conversation(DEMO_CONVERSATION, turns=5, split="test")
    image = chat.image
    Image.fromarray(image).save(out / "scene.png")
    questions = [(question, answer) for _, question, answer in chat.turns]
    print(f"\nimage: {out / 'scene.png'} ({image.shape[1]}x{image.shape[0]})")
    _run_presets(lvlm, "image", {"images": [Image.fromarray(image)]}, questions, IMAGE_PRESETS, options, out)

    clip = next(s for s in map(lambda i: scenes.sample("test", "video", i), range(100)) if s.family == DEMO_VIDEO_FAMILY)
    frames = clip.frames
    video = {"video": np.stack(frames), "video_fps": VIDEO_FPS, "fps": VIDEO_FPS, "max_frames": MAX_FRAMES}
    print(f"\nvideo: {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}")
    _run_presets(lvlm, "video", video, [(clip.question, clip.answer)], VIDEO_PRESETS, options, out)
    print(f"\nretained-token maps (input | after stage 1 | after stage 2): {out}/tokens-*.png")
    print("work = the share of the work on the picture that remains (the budget's measure); predicted = the cost "
          "model's ViT + prefill speedup; measured = (ViT + prefill time with merging off) / (the same with the "
          f"preset), median over {TIMED_RUNS} rounds. This model's prefill takes milliseconds, so fixed overheads "
          "dominate its timings: `python -m illava bench` measures the speedup on real model widths")
    return 0


def _run_presets(lvlm, name: str, visual: dict, questions, presets, options, out: Path) -> None:
    from .. import GenerationOptions, encode, generate

    configs = {"off": resolve("off", 1.0, lvlm, name)}
    for budget in AUTO_BUDGETS:
        configs[f"auto {budget}"] = resolve("auto", budget, lvlm, name)
        print(f"[{configs[f'auto {budget}'].origin}]")
    configs.update({preset_name: resolve(preset_name, 1.0, lvlm, name) for preset_name in presets[1:]})
    first_question = questions[0][0]
    # Presets take turns, round after round, after one untimed warm-up each, so that a busy
    # machine slows them all alike. Only ViT + prefill are timed, so one new token is enough.
    timed = GenerationOptions(max_new_tokens=1)
    times: dict[str, list[float]] = {preset_name: [] for preset_name in configs}
    encoded = {}
    for round_index in range(TIMED_RUNS + 1):
        for preset_name, config in configs.items():
            encoded[preset_name] = encode(lvlm, config=config, **visual)
            stats = generate(lvlm, encoded[preset_name], first_question, config, timed).stats[0]
            if round_index:
                times[preset_name].append(stats["vit_s"] + stats["prefill_s"])
    speedups = paired_speedups(times, "off")
    header = (f"{'preset':<12} {'ViT in':>7} {'ViT out':>8} {'LLM after stage 2':>18} {'work':>5} {'predicted':>10} "
              f"{'ViT+prefill s':>14} {'measured':>9}")
    print(header)
    print("-" * len(header))
    answers: dict[str, list[str]] = {}
    for preset_name, config in configs.items():
        visuals = encoded[preset_name]
        answers[preset_name] = []
        for question, _ in questions:
            result = generate(lvlm, visuals, question, config, options)
            answers[preset_name].append(result.texts[0].strip())
        stats = result.stats[0]
        tokens = stats["visual_tokens"]
        seconds = float(np.median(times[preset_name]))
        print(
            f"{preset_name:<12} {tokens['vit_input']:>7} {tokens['vit_output']:>8} {tokens['llm_after_stage2']:>18} "
            f"{stats['work']:>5.2f} {stats['predicted_speedup']:>9.2f}x {seconds:>14.3f} {speedups[preset_name]:>8.2f}x"
        )
        save_png(trace_figure(result.traces[0][0], visuals.items[0].preview), out / f"tokens-{name}-{preset_name.replace(' ', '-')}.png")
    note = busy_note(times)
    if note:
        print(note)
    for index, (question, truth) in enumerate(questions):
        print(f"\nQ: {question}  (truth: {truth})")
        for preset_name, texts in answers.items():
            mark = "right" if texts[index].lower() == truth else "wrong"
            print(f"  {preset_name:<12} {texts[index]!r} {mark}")
