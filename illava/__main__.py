"""Command line: ``python -m illava caption|calibrate|demo|eval|bench ...``."""

from __future__ import annotations

import argparse
import json
import re
import sys

from .lab.bench import ARCHES, run_bench
from .calibrate import DEFAULT_BUDGETS
from .config import PRESETS, MergeConfig, preset_for
from .methods import METHODS
from .profiles import auto_config

class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that names each option's default, where it has one to name (not None or a switch's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


# MergeConfig fields named in an error, as the caption command's flags that set them.
FLAG_OF_FIELD = {
    "stage1_layers": "--stage1-layer", "stage1_keep": "--stage1-keep", "stage2_layers": "--stage2-layer",
    "stage2_keep": "--stage2-keep", "stage1_recycled": "--recycled", "stage2_recycled": "--recycled",
}
# The budget ``auto`` uses unless told otherwise: about a third of the visual tokens, the paper's image setting.
AUTO_BUDGET = 0.33
from .lab.harness import add_arguments as add_eval_arguments
from .lab.harness import run as run_eval


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m illava", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser("caption", formatter_class=HelpWithDefaults, help="answer a prompt about images and/or a video")
    caption.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    caption.add_argument("--image", action="append", default=None, help="image file; repeat for several images")
    caption.add_argument("--video", default=None, help="video file (decoded with decord); comes after the images")
    caption.add_argument("--fps", type=float, default=2.0, help="video frames sampled per second")
    caption.add_argument("--max-frames", type=int, default=32, help="most video frames to sample")
    caption.add_argument("--prompt", default="Describe this image.", help="the question or instruction")
    caption.add_argument("--system-prompt", default=None, help="a system message (default: the model's own)")
    _merge_arguments(caption)
    _runtime_arguments(caption)
    caption.add_argument("--per-image", action="store_true", help="one answer per input instead of one for all")
    caption.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    calibration = commands.add_parser(
        "calibrate", formatter_class=HelpWithDefaults, help="fit merge settings to a model on unlabeled inputs and save its merge profile"
    )
    calibration.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    calibration.add_argument("--images", nargs="+", default=[], help="image files or folders of them (16-32 is plenty)")
    calibration.add_argument("--videos", nargs="+", default=[], help="video files or folders of them")
    calibration.add_argument("--prompt", default=None, help="what to ask of every input (default: describe it)")
    calibration.add_argument("--budgets", default=",".join(str(b) for b in DEFAULT_BUDGETS),
                             help="fractions of visual tokens to fit, comma-separated")
    calibration.add_argument("--kl-tolerance", type=float, default=0.0,
                             help="let a cheaper configuration win when its KL is within this of the most faithful one")
    calibration.add_argument("--out", default=None, help="where to write the profile (default: the per-user profile store)")
    calibration.add_argument("--json", default=None, help="also write the whole report (every candidate measured) here")
    _runtime_arguments(calibration)
    demo = commands.add_parser("demo", formatter_class=HelpWithDefaults, help="run the demo: merging off and on, side by side")
    demo.add_argument("--model", default=None, help="a model folder to use instead of the built-in demo model")
    demo.add_argument("--out", default="illava-demo", help="folder for the retained-token maps")
    _runtime_arguments(demo)
    evaluation = commands.add_parser("eval", formatter_class=HelpWithDefaults, help="accuracy retention of iLLaVA and its peers at matched token budgets")
    add_eval_arguments(evaluation)
    evaluation.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    evaluation.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench = commands.add_parser("bench", formatter_class=HelpWithDefaults, help="speed and memory: vanilla transformers and iLLaVA side by side")
    bench.add_argument("--arch", default="qwen2.5-vl-3b", help="qwen2.5-vl-3b, qwen2.5-vl-7b, qwen2-vl-2b or qwen2-vl-7b")
    bench.add_argument("--layers", type=int, default=None, help="use this many decoder and ViT layers (reported)")
    bench.add_argument("--llm-layers", type=int, default=None, help="use this many decoder layers (reported)")
    bench.add_argument("--vit-layers", type=int, default=None, help="use this many ViT layers (reported)")
    bench.add_argument("--full-depth", action="store_true", help="on CPU, keep every layer (default: 9 LLM and 8 ViT layers)")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda")
    bench.add_argument(
        "--dtype", default="bf16",
        help="bf16, fp16 or fp32; on a CPU without native bfloat16 (AVX512-BF16, AMX) fp32 is several times faster",
    )
    bench.add_argument("--presets", nargs="+", default=["off", "paper-image", "paper-video", "fast"], choices=sorted(PRESETS))
    bench.add_argument("--inputs", nargs="+", default=["1 image", "4 images", "16-frame video"],
                       choices=["1 image", "4 images", "16-frame video"])
    bench.add_argument("--new-tokens", type=int, default=32, help="tokens generated per run")
    bench.add_argument("--repeats", type=int, default=2, help="timed rounds per method after one warm-up run")
    bench.add_argument("--json", required=True, help="output JSON; a .md table and a .png chart are written beside it")
    args = parser.parse_args(argv)
    try:
        if args.command == "caption":
            return _caption(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "bench":
            if args.arch not in ARCHES:
                raise ValueError(f"--arch must be one of {', '.join(ARCHES)}, got {args.arch!r}")
            if args.layers is not None:
                args.llm_layers = args.llm_layers or args.layers
                args.vit_layers = args.vit_layers or args.layers
            return run_bench(args)
        from .lab.demo import run_demo

        return run_demo(args)
    except (ValueError, OSError) as error:
        message = str(error)
        if args.command == "caption":
            message = re.sub(r"\b(" + "|".join(FLAG_OF_FIELD) + r")\b", lambda m: FLAG_OF_FIELD[m.group(1)], message)
        print(f"error: {message}", file=sys.stderr)
        return 2


def _merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["auto", *sorted(PRESETS)], default=None,
                        help="auto (the default): the model's calibrated settings at --budget, or the paper preset "
                             "without a profile; with stage flags and no preset, only the flags apply")
    parser.add_argument("--budget", type=float, default=AUTO_BUDGET,
                        help="with auto: the fraction of visual tokens that reach the later LLM layers")
    parser.add_argument("--stage1-layer", default=None, help="ViT layer(s) that first run on the reduced tokens, e.g. 16 or 8,16")
    parser.add_argument("--stage1-keep", type=float, default=None, help="fraction of patch groups that leave the ViT")
    parser.add_argument("--stage2-layer", default=None, help="LLM layer(s) that first run on the reduced tokens")
    parser.add_argument("--stage2-keep", type=float, default=None, help="fraction of visual tokens kept in the LLM")
    parser.add_argument("--recycled", type=int, default=None, help="recycled tokens per image (stage 1) and sample (stage 2)")
    parser.add_argument("--method", choices=list(METHODS), default=None, help="iLLaVA (default) or a baseline method")


def _runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--attention", default="sdpa", help="sdpa, eager or flash_attention_2")


def merge_config(args: argparse.Namespace, lvlm, kind: str = "image") -> MergeConfig:
    """The preset (fitted to the model; ``auto`` at ``--budget`` for ``kind``) with explicit stage flags on top."""
    flags = (args.stage1_layer, args.stage1_keep, args.stage2_layer, args.stage2_keep, args.recycled, args.method)
    name = args.preset or ("off" if any(flag is not None for flag in flags) else "auto")
    if name == "auto":
        config = auto_config(lvlm, args.budget, kind)
    else:
        config = preset_for(name, lvlm.backbone)
    changes = {}
    if args.stage1_layer is not None:
        changes["stage1_layers"] = args.stage1_layer
    if args.stage1_keep is not None:
        changes["stage1_keep"] = args.stage1_keep
    if args.stage2_layer is not None:
        changes["stage2_layers"] = args.stage2_layer
    if args.stage2_keep is not None:
        changes["stage2_keep"] = args.stage2_keep
    if args.recycled is not None:
        changes["stage1_recycled"] = changes["stage2_recycled"] = args.recycled
    if args.method is not None:
        changes["method"] = args.method
    return config.with_(**changes) if changes else config


def _caption(args: argparse.Namespace) -> int:
    from . import GenerationOptions, encode, generate, load

    if not args.image and not args.video:
        raise ValueError("give at least one --image or a --video")
    lvlm = load(args.model, device=args.device, dtype=args.dtype, attn_implementation=args.attention)
    config = merge_config(args, lvlm, "video" if args.video else "image")
    if config.origin:
        print(f"[{config.origin}]", file=sys.stderr)
    visuals = encode(lvlm, args.image, config, video=args.video, fps=args.fps, max_frames=args.max_frames)
    result = generate(
        lvlm,
        visuals,
        args.prompt,
        config,
        GenerationOptions(max_new_tokens=args.max_new_tokens),
        system_prompt=args.system_prompt,
        per_item=args.per_image,
    )
    for text, stats in zip(result.texts, result.stats):
        print(text)
        tokens = stats["visual_tokens"]
        print(
            f"[visual tokens: ViT {tokens['vit_input']} patches -> {tokens['vit_output']} tokens, "
            f"LLM {tokens['llm_input']} -> {tokens['llm_after_stage2']} (full: {tokens['llm_input_full']}); "
            f"ViT {stats['vit_s']:.3f}s, prefill {stats['prefill_s']:.3f}s, decode {stats['decode_s']:.3f}s]",
            file=sys.stderr,
        )
    if args.json:
        records = [
            {"text": text, "ids": ids, "stats": stats}
            for text, ids, stats in zip(result.texts, result.ids, result.stats)
        ]
        print(json.dumps(records[0] if len(records) == 1 else {"results": records, **records[0]}))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from . import load
    from .calibrate import calibrate, parse_budgets, read_inputs
    from .profiles import store_path, write_profile

    budgets = parse_budgets(args.budgets)
    lvlm = load(args.model, device=args.device, dtype=args.dtype, attn_implementation=args.attention)
    images, videos = _expand(args.images, IMAGE_SUFFIXES), _expand(args.videos, VIDEO_SUFFIXES)
    if images or videos:
        inputs, skipped = read_inputs(images, videos, args.prompt)
        description = f"{len(images)} image and {len(videos)} video files given on the command line"
        for line in skipped:
            print(f"skipped {line}", file=sys.stderr)
    else:
        from .lab.calibration_set import scene_inputs

        inputs, skipped = scene_inputs(), []
        description = "the built-in set: scene images, pairs and videos of the calibration split, questions only"
    report = calibrate(
        lvlm, inputs, budgets, progress=_progress_line, description=description, kl_tolerance=args.kl_tolerance
    )
    print(file=sys.stderr)
    path = write_profile(report.profile, args.out or store_path(report.profile.identity))
    print(report.table())
    print(f"calibrated on {len(inputs)} inputs in {report.seconds:.0f} s; profile written to {path}")
    if args.json:
        front = {kind: [{"config": m.config.to_dict(), "kl": m.kl, "agreement": m.agreement,
                         "token_fraction": m.token_fraction, "cost": m.cost} for m in rows]
                 for kind, rows in report.measured.items()}
        payload = {"profile": report.profile.to_dict(), "measured": front, "skipped": skipped, "seconds": report.seconds}
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=1)
    return 0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")


def _expand(paths: list[str], suffixes: tuple[str, ...]) -> list[str]:
    """Files as given, and the files of each folder given whose names end in ``suffixes``, sorted."""
    from pathlib import Path

    out = []
    for path in map(Path, paths):
        if path.is_dir():
            out.extend(str(p) for p in sorted(path.iterdir()) if p.suffix.lower() in suffixes)
        else:
            out.append(str(path))
    return out


def _progress_line(done: int, total: int, text: str) -> None:
    print(f"\rcalibrating: {done}/{total} ({text})", end="", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
