"""Command line: ``python -m illava caption|calibrate|download|demo|eval|bench ...``."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from .backbones.catalogue import CATALOGUE
from .caption_plan import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .captioning import CAPTION_STYLES, DEFAULT_STYLE, caption_prompt
from .config import PRESETS, MergeConfig, Resolution
from .lab.bench import ARCHES, run_bench
from .lab.harness import add_arguments as add_eval_arguments
from .lab.harness import run as run_eval
from .methods import METHODS
from .budget import DEFAULT_BUDGET, STANDARD_BUDGETS, check_budget
from .resolve import resolve
from .quantization import QUANTIZATIONS


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
    "min_pixels": "--min-pixels", "max_pixels": "--max-pixels",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m illava", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    caption = commands.add_parser("caption", formatter_class=HelpWithDefaults, help="answer a prompt about images and/or a video")
    caption.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    caption.add_argument("--image", action="append", default=None, help="image file; repeat for several images")
    caption.add_argument("--video", default=None, help="video file (decoded with decord); comes after the images")
    caption.add_argument("--fps", type=float, default=2.0, help="video frames sampled per second")
    caption.add_argument("--max-frames", type=int, default=32, help="most video frames to sample")
    _style_arguments(caption)
    _merge_arguments(caption)
    _runtime_arguments(caption)
    caption.add_argument("--per-image", action="store_true",
                         help="one answer per input, each encoded and timed on its own, instead of one for all")
    caption.add_argument("--json", action="store_true",
                         help="print one JSON object as the last line: inputs, prompt, text, ids, stats; with "
                              "--per-image, style and results, one such object per input")
    folder = commands.add_parser(
        "caption-folder", formatter_class=HelpWithDefaults,
        help="caption every image and video of a folder into .txt files, one JSONL or Parquet, batched and resumable",
    )
    folder.add_argument("inputs", nargs="+", metavar="IN", help="a folder of images and videos (or files)")
    where = folder.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, metavar="DIR",
                       help="write each caption as DIR/<input path>.txt, mirroring IN's tree (default: beside each input)")
    where.add_argument("--jsonl", default=None, metavar="F", help="write one JSON record per input to F instead of .txt files")
    where.add_argument("--parquet", default=None, metavar="DIR",
                       help="write the JSONL records as Parquet files in DIR (part-00000.parquet, ...; needs pyarrow)")
    folder.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    _style_arguments(folder)
    _merge_arguments(folder)
    sizing = folder.add_mutually_exclusive_group()
    sizing.add_argument("--batch-size", type=_batch_size, default=4,
                        help="prompts answered together, or auto: as many as the free memory holds")
    sizing.add_argument("--memory-budget", type=_gigabytes, default=None, metavar="GB",
                        help="pick the batch size so a batch's KV cache and activations fit in GB beyond the weights")
    folder.add_argument("--fps", type=float, default=2.0, help="video frames sampled per second")
    folder.add_argument("--max-frames", type=int, default=32, help="most video frames to sample")
    folder.add_argument("--recursive", action="store_true", help="also caption the inputs in IN's subfolders")
    folder.add_argument("--overwrite", action="store_true", help="caption inputs again even when captioned already")
    _runtime_arguments(folder)
    _engine_arguments(folder)
    calibration = commands.add_parser(
        "calibrate", formatter_class=HelpWithDefaults, help="fit merge settings to a model on unlabeled inputs and save its merge profile"
    )
    calibration.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    calibration.add_argument("--images", nargs="+", default=[], help="image files or folders of them (16-32 is plenty)")
    calibration.add_argument("--videos", nargs="+", default=[], help="video files or folders of them")
    calibration.add_argument("--prompt", default=None, help="what to ask of every input (default: describe it)")
    calibration.add_argument("--budgets", default=",".join(str(b) for b in STANDARD_BUDGETS),
                             help="shares of the work on the picture to fit settings for, comma-separated")
    calibration.add_argument("--kl-tolerance", type=float, default=0.0,
                             help="let a cheaper configuration win when its KL is within this of the most faithful one")
    calibration.add_argument("--out", default=None, help="where to write the profile (default: the per-user profile store)")
    calibration.add_argument("--json", default=None, help="also write the whole report (every candidate measured) here")
    _runtime_arguments(calibration)
    demo = commands.add_parser("demo", formatter_class=HelpWithDefaults, help="run the demo: merging off and on, side by side")
    demo.add_argument("--model", default=None, help="a model folder to use instead of the built-in demo model")
    demo.add_argument("--out", default="illava-demo", help="folder for the retained-token maps")
    _runtime_arguments(demo)
    evaluation = commands.add_parser("eval", formatter_class=HelpWithDefaults, help="accuracy retention of iLLaVA and its peers at matched work")
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
        "--dtype", default="auto",
        help="auto (bf16 on GPUs that compute it natively, fp16 on older ones, fp32 on a CPU), bf16, fp16 or fp32",
    )
    bench.add_argument("--presets", nargs="+", default=["off", "paper-image", "paper-video", "fast"],
                       choices=["auto", *sorted(PRESETS)], help="auto runs once per --budgets entry")
    bench.add_argument("--budgets", nargs="+", type=_budget, default=list(STANDARD_BUDGETS),
                       help="work shares auto runs at (with --presets auto)")
    bench.add_argument("--inputs", nargs="+", default=["1 image", "4 images", "16-frame video"],
                       choices=["1 image", "4 images", "16-frame video"])
    bench.add_argument("--new-tokens", type=int, default=None, help="tokens generated per run (default: 32; caption job: 128)")
    bench.add_argument("--repeats", type=int, default=5, help="timed rounds per method after one warm-up run")
    bench.add_argument("--json", required=True, help="output JSON; a .md table (and for speed a .png chart) is written beside it")
    bench.add_argument("--job", choices=["speed", "memory", "caption"], default="speed",
                       help="speed: vanilla and presets per input; memory: weights and peaks per --quantizations; "
                            "caption: whole captions of batches of items, items per minute")
    bench.add_argument("--quantizations", nargs="+", default=list(QUANTIZATIONS), choices=list(QUANTIZATIONS),
                       help="memory job: the weight formats to load the model in")
    fetch = commands.add_parser(
        "download", formatter_class=HelpWithDefaults, help="download a model folder from the Hugging Face Hub (resumable, verified)",
        epilog="checkpoints the backbones load natively: " + ", ".join(c.repo_id for c in CATALOGUE),
    )
    fetch.add_argument("repo_id", metavar="REPO_ID", help="the hub repo, e.g. Qwen/Qwen2.5-VL-3B-Instruct")
    fetch.add_argument("--to", default=".", metavar="DIR", help="folder the model folder goes in, named after the repo (ComfyUI: its models/LLM)")
    fetch.add_argument("--revision", default=None, help="branch, tag or commit (default: the repo's main branch)")
    args = parser.parse_args(argv)
    try:
        if args.command == "caption":
            return _caption(args)
        if args.command == "caption-folder":
            return _caption_folder(args)
        if args.command == "calibrate":
            return _calibrate(args)
        if args.command == "download":
            return _download(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "bench":
            if args.arch not in ARCHES:
                raise ValueError(f"--arch must be one of {', '.join(ARCHES)}, got {args.arch!r}")
            if args.layers is not None:
                args.llm_layers = args.llm_layers or args.layers
                args.vit_layers = args.vit_layers or args.layers
            args.new_tokens = args.new_tokens or (128 if args.job == "caption" else 32)
            if args.job == "memory":
                from .lab.memory import run_memory_bench

                return run_memory_bench(args)
            if args.job == "caption":
                from .lab.caption_bench import run_caption_bench

                return run_caption_bench(args)
            return run_bench(args)
        from .lab.demo import run_demo

        return run_demo(args)
    except (ValueError, OSError) as error:
        message = str(error)
        if args.command in ("caption", "caption-folder"):
            message = re.sub(r"\b(" + "|".join(FLAG_OF_FIELD) + r")\b", lambda m: FLAG_OF_FIELD[m.group(1)], message)
        print(f"error: {message}", file=sys.stderr)
        return 2


def _download(args: argparse.Namespace) -> int:
    """Download a repo into ``--to``/<repo name>, with a progress bar on stderr; print the folder."""
    from tqdm import tqdm

    from .hub import download

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=args.repo_id, file=sys.stderr)
        bar.update(done - bar.n)

    try:
        folder = download(args.repo_id, Path(args.to) / args.repo_id.rsplit("/", 1)[-1], args.revision, progress)
    finally:
        if bar is not None:
            bar.close()
    print(folder)
    return 0


def _merge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["auto", *sorted(PRESETS)], default=None,
                        help="auto (the default): the model's calibrated settings at --budget, or the paper preset "
                             "without a profile; with stage flags and no preset, only the flags apply (on top of a "
                             "peer --method's usual placement)")
    parser.add_argument("--budget", type=_budget, default=DEFAULT_BUDGET,
                        help="with auto or a peer --method: the share of the work on the picture that remains "
                             "(every ViT and LLM layer's work on visual tokens; 0.33 = a third)")
    parser.add_argument("--stage1-layer", default=None, help="ViT layer(s) that first run on the reduced tokens, e.g. 16 or 8,16")
    parser.add_argument("--stage1-keep", type=float, default=None, help="fraction of patch groups that leave the ViT")
    parser.add_argument("--stage2-layer", default=None, help="LLM layer(s) that first run on the reduced tokens")
    parser.add_argument("--stage2-keep", type=float, default=None, help="fraction of visual tokens kept in the LLM")
    parser.add_argument("--recycled", type=int, default=None, help="recycled tokens per image (stage 1) and sample (stage 2)")
    parser.add_argument("--method", choices=list(METHODS), default=None,
                        help="illava (default) or a peer to compare with; a peer without --preset runs at its usual "
                             "placement at --budget (e.g. tome in every ViT block, fastv early in the LLM, pyramiddrop at the end "
                             "of each LLM stage, fastervlm at the encoder output)")


def _style_arguments(parser: argparse.ArgumentParser) -> None:
    """What to ask and at what resolution: the flags ``caption`` and ``caption-folder`` share."""
    parser.add_argument("--max-pixels", type=int, default=0,
                        help="most pixels each image is encoded with (fewer pixels, fewer visual tokens); 0 = the model's own")
    parser.add_argument("--min-pixels", type=int, default=0, help="fewest pixels each image is encoded with; 0 = the model's own")
    parser.add_argument(
        "--style", type=_style_name, choices=list(CAPTION_STYLES), default=None, metavar="STYLE",
        help=f"what to ask: {', '.join(_dashed(name) for name in CAPTION_STYLES)} (default: question when --prompt "
             f"is given, else {_dashed(DEFAULT_STYLE)}); custom is an instruction in --prompt where {{kind}} stands "
             "for image or video",
    )
    parser.add_argument("--prompt", default=None, help="the question (--style question) or instruction (--style custom)")
    parser.add_argument("--system-prompt", default=None, help="a system message (default: the model's own)")


def _batch_size(text: str) -> int | str:
    """``--batch-size``: a whole number of at least 1, or ``auto``."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, or auto; got {text!r}")
    return int(text)


def _gigabytes(text: str) -> float:
    """``--memory-budget`` in GB (2**30 bytes), a positive number, as bytes."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of GB, got {text!r}")
    return value * 2**30


def _runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--attention", default="sdpa", help="sdpa, eager or flash_attention_2")
    parser.add_argument("--quantization", choices=list(QUANTIZATIONS), default="none",
                        help="8-bit or 4-bit weights through bitsandbytes (GPU or CPU; needs bitsandbytes and accelerate)")


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where caption-folder runs: this process, or a pool of Ray actors (requirements-ray.txt)."""
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: in this process; ray: on Ray Data, one model per actor (and per GPU)")
    parser.add_argument("--actors", type=_positive_int, default=2, help="with --engine ray: the actors, each loading the model")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="with --engine ray: join this cluster (auto, or host:port; default: RAY_ADDRESS, as ray job "
                             "submit sets it, else a local instance on 127.0.0.1 for the run)")
    parser.add_argument("--cpus-per-actor", type=float, default=None,
                        help="with --engine ray: CPUs (and torch threads) each actor takes (default: on a local instance "
                             "the cores but one shared out, on a cluster 1)")


def _positive_int(text: str) -> int:
    """``--actors``: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _load(args: argparse.Namespace, path):
    """The model as the runtime flags ask, with a line on stderr saying what was loaded and its weights' memory."""
    from . import load

    lvlm = load(path, device=args.device, dtype=args.dtype, attn_implementation=args.attention, quantization=args.quantization)
    print(f"[{loaded_summary(lvlm)}]", file=sys.stderr)
    return lvlm


def loaded_summary(lvlm) -> str:
    """E.g. 'models/x: qwen2_5_vl, weights 2140 MiB (4-bit) on cuda'."""
    form = lvlm.quantization if lvlm.quantization != "none" else str(lvlm.dtype).replace("torch.", "")
    return f"{lvlm.path}: {lvlm.model.config.model_type}, weights {lvlm.weights_bytes / 2**20:.0f} MiB ({form}) on {lvlm.device}"


def merge_config(args: argparse.Namespace, lvlm, kind: str = "image") -> MergeConfig:
    """The preset (fitted to the model; ``auto`` at ``--budget`` for ``kind``), or a peer method's usual placement
    at ``--budget``, with explicit stage flags on top."""
    flags = (args.stage1_layer, args.stage1_keep, args.stage2_layer, args.stage2_keep, args.recycled)
    if args.preset is None and args.method not in (None, "illava"):
        config = resolve(args.method, args.budget, lvlm, kind)
        config = config.with_(origin=f"{config.origin}: {_as_flags(config)}")
    else:
        name = args.preset or ("off" if any(flag is not None for flag in flags) else "auto")
        config = resolve(name, args.budget, lvlm, kind)
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


def _as_flags(config: MergeConfig) -> str:
    """The stage flags that give ``config``'s placement."""
    flags = []
    for stage, layers, keep in ((1, config.stage1_layers, config.stage1_keep), (2, config.stage2_layers, config.stage2_keep)):
        if layers:
            flags.append(f"--stage{stage}-layer {','.join(map(str, layers))} --stage{stage}-keep {keep:.2f}")
    return " ".join(flags)


def _budget(text: str) -> float:
    """``--budget`` as a fraction, refused by argparse (with the budget rule's message) outside (0, 1]."""
    try:
        return check_budget(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _style_name(text: str) -> str:
    """A caption style as typed: its name, or the name with dashes for spaces (``short-caption``)."""
    return text.replace("-", " ")


def _dashed(style: str) -> str:
    return style.replace(" ", "-")


def caption_style(args: argparse.Namespace) -> str:
    """``--style``; without it, ``question`` when ``--prompt`` is given, else the default style."""
    style = args.style or ("question" if args.prompt is not None else DEFAULT_STYLE)
    if args.prompt is not None and not CAPTION_STYLES[style].uses_prompt:
        readers = " or ".join(name for name, known in CAPTION_STYLES.items() if known.uses_prompt)
        raise ValueError(f"--prompt is read only by --style {readers}, not {_dashed(style)}: drop --prompt or choose one of them")
    return style


def style_prompt(style: str, prompt: str | None, kind: str) -> str:
    """The prompt ``style`` asks of a ``kind`` input, its errors naming the flags."""
    try:
        return caption_prompt(style, prompt or "", kind)
    except ValueError as error:
        raise ValueError(re.sub(r"\b(style|prompt)\b", r"--\1", str(error))) from None


def _caption(args: argparse.Namespace) -> int:
    from .media import to_pil_images

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
    lvlm = _load(args, args.model)
    configs = _announced_configs(args, lvlm, style, prompts)
    pictures = dict(zip(args.image or [], to_pil_images(args.image))) if args.image else {}
    _warn_small(lvlm, pictures)
    records = [_caption_group(args, lvlm, group, pictures, configs, prompts, style, resolution) for group in groups]
    if args.json:
        print(json.dumps({"style": style, "results": records} if args.per_image else records[0]))
    return 0


def _announced_configs(args: argparse.Namespace, lvlm, style: str, prompts: dict[str, str]) -> dict[str, MergeConfig]:
    """The merge settings per kind of input (the keys of ``prompts``), each said on stderr with its origin and prompt."""
    configs = {kind: merge_config(args, lvlm, kind) for kind in prompts}
    for kind, config in configs.items():
        if config.origin:
            print(f"[{config.origin}]", file=sys.stderr)
        print(f"[{style}, {kind}: {prompts[kind]}]", file=sys.stderr)
    return configs


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
    from . import GenerationOptions, encode, generate

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


def _caption_folder(args: argparse.Namespace) -> int:
    """Caption a folder with a progress bar on stderr; the summary paragraph on stdout. The first Ctrl-C
    stops after the batch in hand, a second one at once; either way what is finished is kept."""
    import signal

    from .caption_plan import scan
    from .folder_captions import caption_folder
    from .generation import GenerationOptions

    entries, _, _ = scan(args.inputs, args.recursive)
    style = caption_style(args)
    kinds = sorted({entry.kind for entry in entries})
    prompts = {kind: style_prompt(style, args.prompt, kind) for kind in kinds}
    resolution = Resolution(args.min_pixels, args.max_pixels)
    if args.engine == "ray":
        if args.memory_budget is not None or args.batch_size == "auto":
            raise ValueError("--memory-budget and --batch-size auto size batches in one process: with --engine ray give --batch-size N")
        from .describe import outline_model

        # The actors load the model; here its outline (no weights) resolves the presets and auto as a load would.
        lvlm = outline_model(args.model)
        print(f"[ray: {args.actors} actors, each loading {args.model}]", file=sys.stderr)
    else:
        lvlm = _load(args, args.model)
    configs = _announced_configs(args, lvlm, style, prompts)
    stop = []

    def on_interrupt(signum, frame) -> None:
        if stop:
            raise KeyboardInterrupt
        stop.append(True)
        print("\nstopping after this batch (Ctrl-C again to stop now)", file=sys.stderr)

    bar = _ProgressBar()
    previous = signal.signal(signal.SIGINT, on_interrupt)
    job = dict(
        out=args.out, jsonl=args.jsonl, parquet=args.parquet, style=style, prompt=args.prompt or "", config=configs,
        options=GenerationOptions(max_new_tokens=args.max_new_tokens), recursive=args.recursive,
        overwrite=args.overwrite, resolution=resolution, fps=args.fps, max_frames=args.max_frames,
        system_prompt=args.system_prompt, progress=bar, should_stop=lambda: bool(stop),
    )
    try:
        if args.engine == "ray":
            from .ray_engine import caption_folder_ray

            loading = dict(device=args.device, dtype=args.dtype, attn_implementation=args.attention, quantization=args.quantization)
            summary = caption_folder_ray(args.model, args.inputs, actors=args.actors, address=args.ray_address,
                                         batch_size=args.batch_size, load_options=loading,
                                         cpus_per_actor=args.cpus_per_actor, **job)
        else:
            summary = caption_folder(lvlm, args.inputs, batch_size="auto" if args.memory_budget else args.batch_size,
                                     memory_budget=args.memory_budget, **job)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    print(summary.text())
    return 130 if summary.stopped and summary.stopped.startswith("Interrupted") else 0


class _ProgressBar:
    """tqdm on stderr for ``caption_folder``'s progress: items done of those to do, items/s, ETA, failures."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, progress) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=progress.total, unit="item", desc="captioning", file=sys.stderr)
        self.bar.update(progress.done - self.bar.n)
        if progress.failed:
            self.bar.set_postfix(failed=progress.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate, parse_budgets, read_inputs
    from .profiles import store_path, write_profile

    budgets = parse_budgets(args.budgets)
    lvlm = _load(args, args.model)
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
                         "work": m.work, "token_fraction": m.token_fraction} for m in rows]
                 for kind, rows in report.measured.items()}
        payload = {"profile": report.profile.to_dict(), "measured": front, "skipped": skipped, "seconds": report.seconds}
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=1)
    return 0


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
