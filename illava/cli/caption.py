"""``python -m illava caption``: answer a prompt about images and/or a video, with what it cost."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..config import Resolution
from .options import (
    FLAG_OF_FIELD, announced_configs, caption_style, load_model, merge_arguments, runtime_arguments, style_arguments,
    style_prompt, video_arguments,
)


def register(commands, formatter) -> None:
    parser = commands.add_parser("caption", formatter_class=formatter, help="answer a prompt about images and/or a video")
    parser.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    parser.add_argument("--image", action="append", default=None, help="image file; repeat for several images")
    parser.add_argument("--video", default=None, help="video file (decoded with decord); comes after the images")
    video_arguments(parser)
    style_arguments(parser)
    merge_arguments(parser)
    runtime_arguments(parser)
    parser.add_argument("--per-image", action="store_true",
                        help="one answer per input, each encoded and timed on its own, instead of one for all")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object as the last line: inputs, prompt, text, ids, stats; with "
                             "--per-image, style and results, one such object per input")
    parser.set_defaults(run=run, flag_of_field=FLAG_OF_FIELD)


def run(args: argparse.Namespace) -> int:
    from ..media import to_pil_images

    if not args.image and not args.video:
        raise ValueError("give at least one --image or a --video")
    inputs = [(path, "image") for path in args.image or []] + ([(args.video, "video")] if args.video else [])
    # One prompt per input with --per-image, each encoded and timed alone; else one prompt for all of them.
    groups = [[entry] for entry in inputs] if args.per_image else [inputs]
    # The video, when there is one, comes last: a group's last input says whether the group holds it.
    kinds = sorted({group[-1][1] for group in groups})
    style = caption_style(args)
    prompts = {kind: style_prompt(style, args.prompt, kind) for kind in kinds}
    resolution = Resolution(args.min_pixels, args.max_pixels)
    lvlm = load_model(args, args.model)
    configs = announced_configs(args, lvlm, style, prompts)
    pictures = dict(zip(args.image or [], to_pil_images(args.image))) if args.image else {}
    _warn_small(lvlm, pictures)
    records = [_caption_group(args, lvlm, group, pictures, configs, prompts, style, resolution) for group in groups]
    if args.json:
        print(json.dumps({"style": style, "results": records} if args.per_image else records[0]))
    return 0


def _warn_small(lvlm, pictures: dict) -> None:
    """One line on stderr for each image with fewer pixels than the model encodes an image with."""
    smallest = lvlm.backbone.smallest_image_pixels(lvlm.processor)
    side = math.isqrt(smallest)
    for path, picture in pictures.items():
        width, height = picture.size
        if width * height < smallest:
            print(
                f"warning: {path} is {width}x{height} pixels, fewer than the {side}x{side} this model encodes at the "
                "least (one merge group, or one tile): it is upscaled, so the answer may mean nothing",
                file=sys.stderr,
            )


def _caption_group(
    args: argparse.Namespace, lvlm, group: list, pictures: dict, configs: dict, prompts: dict, style: str, resolution: Resolution
) -> dict:
    """Encode and answer one prompt's inputs; print the answer and its cost; return its JSON record."""
    from ..generation import GenerationOptions, generate
    from ..encoding import encode

    images = [pictures[path] for path, kind in group if kind == "image"] or None
    kind = group[-1][1]
    config = configs[kind]
    visuals = encode(lvlm, images, config, video=args.video if kind == "video" else None, fps=args.fps,
                     max_frames=args.max_frames, resolution=resolution)
    options = GenerationOptions(max_new_tokens=args.max_new_tokens)
    result = generate(lvlm, visuals, prompts[kind], config, options, system_prompt=args.system_prompt)
    text, stats = result.texts[0], result.stats[0]
    paths = [path for path, _ in group]
    print(text)
    tokens = stats["visual_tokens"]
    print(
        f"[{', '.join(paths)}: visual tokens: ViT {tokens['vit_input']} patches -> {tokens['vit_output']} tokens, "
        f"LLM {tokens['llm_input']} -> {tokens['llm_after_stage2']} (full: {tokens['llm_input_full']}); "
        f"work {stats['work']:.2f}, estimated ViT + prefill speedup {stats['predicted_speedup']:.1f}x; "
        f"ViT {stats['vit_s']:.3f}s, prefill {stats['prefill_s']:.3f}s, decode {stats['decode_s']:.3f}s]",
        file=sys.stderr,
    )
    named = {"input": paths[0]} if args.per_image else {"inputs": paths, "style": style}
    return {**named, "prompt": prompts[kind], "text": text, "ids": result.ids[0], "stats": stats}
