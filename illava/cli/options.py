"""What the commands share: argument groups, argument types, the model loading line and the merge settings
the flags ask for."""

from __future__ import annotations

import argparse
import re
import sys

from ..budget import DEFAULT_BUDGET, check_budget
from ..captioning.styles import CAPTION_STYLES, DEFAULT_STYLE, caption_prompt
from ..config import PRESETS, MergeConfig
from ..loading import ATTENTIONS, DTYPE_CHOICES
from ..methods import METHODS
from ..quantization import QUANTIZATIONS
from ..resolve import resolve
from ..video import DEFAULT_FPS, DEFAULT_MAX_FRAMES


class HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that names each option's default, where it has one to name (not None or a switch's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


# MergeConfig fields named in an error, as the caption commands' flags that set them.
FLAG_OF_FIELD = {
    "stage1_layers": "--stage1-layer", "stage1_keep": "--stage1-keep", "stage2_layers": "--stage2-layer",
    "stage2_keep": "--stage2-keep", "stage1_recycled": "--recycled", "stage2_recycled": "--recycled",
    "min_pixels": "--min-pixels", "max_pixels": "--max-pixels",
}


def with_flag_names(message: str) -> str:
    """``message`` with the MergeConfig and Resolution fields it names written as the flags that set them."""
    return re.sub(r"\b(" + "|".join(FLAG_OF_FIELD) + r")\b", lambda m: FLAG_OF_FIELD[m.group(1)], message)


def merge_arguments(parser: argparse.ArgumentParser) -> None:
    """The merge settings: a preset or auto at a budget, a peer method, and stage flags on top."""
    parser.add_argument("--preset", choices=["auto", *sorted(PRESETS)], default=None,
                        help="auto (the default): the model's calibrated settings at --budget, or the paper preset "
                             "without a profile; with stage flags and no preset, only the flags apply (on top of a "
                             "peer --method's usual placement)")
    parser.add_argument("--budget", type=budget, default=DEFAULT_BUDGET,
                        help="with auto or a peer --method: the share of the work on the picture that remains "
                             "(every ViT and LLM layer's work on visual tokens; 0.33 = a third)")
    parser.add_argument("--stage1-layer", default=None, help="ViT layer(s) that first run on the reduced tokens, e.g. 16 or 8,16")
    parser.add_argument("--stage1-keep", type=float, default=None, help="fraction of patch groups that leave the ViT")
    parser.add_argument("--stage2-layer", default=None, help="LLM layer(s) that first run on the reduced tokens")
    parser.add_argument("--stage2-keep", type=float, default=None, help="fraction of visual tokens kept in the LLM")
    parser.add_argument("--recycled", type=int, default=None, help="recycled tokens per image (stage 1) and sample (stage 2)")
    parser.add_argument("--method", choices=list(METHODS), default=None,
                        help="illava (default) or a peer to compare with; a peer without --preset runs at its usual "
                             "placement at --budget (e.g. tome in every ViT block, fastv early in the LLM, pyramiddrop "
                             "at the end of each LLM stage, fastervlm at the encoder output)")


def style_arguments(parser: argparse.ArgumentParser) -> None:
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


def runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """How the model is loaded and how long it may answer."""
    parser.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate")
    parser.add_argument("--dtype", choices=list(DTYPE_CHOICES), default="auto",
                        help="auto: bf16 on GPUs that compute it natively, fp16 on older ones, fp32 on a CPU")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--attention", choices=list(ATTENTIONS), default="sdpa", help="the attention kernel")
    parser.add_argument("--quantization", choices=list(QUANTIZATIONS), default="none",
                        help="8-bit or 4-bit weights through bitsandbytes (GPU or CPU; needs bitsandbytes and accelerate)")


def video_arguments(parser: argparse.ArgumentParser) -> None:
    """Which frames of a video are sampled: the library's defaults, as the nodes have them."""
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="video frames sampled per second")
    parser.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES, help="most video frames to sample")


def budget(text: str) -> float:
    """A budget flag as a fraction, refused by argparse (with the budget rule's message) outside (0, 1]."""
    try:
        return check_budget(float(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _style_name(text: str) -> str:
    """A caption style as typed: its name, or the name with dashes for spaces (``short-caption``)."""
    return text.replace("-", " ")


def _dashed(style: str) -> str:
    return style.replace(" ", "-")


def load_model(args: argparse.Namespace, path):
    """The model as the runtime flags ask, with a line on stderr saying what was loaded and its weights' memory."""
    from ..loading import load

    lvlm = load(path, device=args.device, dtype=args.dtype, attn_implementation=args.attention, quantization=args.quantization)
    form = lvlm.quantization if lvlm.quantization != "none" else str(lvlm.dtype).replace("torch.", "")
    print(f"[{lvlm.path}: {lvlm.model.config.model_type}, weights {lvlm.weights_bytes / 2**20:.0f} MiB ({form}) "
          f"on {lvlm.device}]", file=sys.stderr)
    return lvlm


def merge_config(args: argparse.Namespace, lvlm, kind: str = "image") -> MergeConfig:
    """The preset (fitted to the model; ``auto`` at ``--budget`` for ``kind``), or a peer method's usual placement
    at ``--budget``, with explicit stage flags on top."""
    flags = {"stage1_layers": args.stage1_layer, "stage1_keep": args.stage1_keep, "stage2_layers": args.stage2_layer,
             "stage2_keep": args.stage2_keep, "stage1_recycled": args.recycled, "stage2_recycled": args.recycled,
             "method": args.method}
    if args.preset is None and args.method not in (None, "illava"):
        config = resolve(args.method, args.budget, lvlm, kind)
        config = config.with_(origin=f"{config.origin}: {_as_flags(config)}")
    else:
        stage_flags = [value for field, value in flags.items() if field != "method"]
        name = args.preset or ("off" if any(flag is not None for flag in stage_flags) else "auto")
        config = resolve(name, args.budget, lvlm, kind)
    changes = {field: value for field, value in flags.items() if value is not None}
    return config.with_(**changes) if changes else config


def _as_flags(config: MergeConfig) -> str:
    """The stage flags that give ``config``'s placement."""
    flags = []
    for stage, layers, keep in ((1, config.stage1_layers, config.stage1_keep), (2, config.stage2_layers, config.stage2_keep)):
        if layers:
            flags.append(f"--stage{stage}-layer {','.join(map(str, layers))} --stage{stage}-keep {keep:.2f}")
    return " ".join(flags)


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


def announced_configs(args: argparse.Namespace, lvlm, style: str, prompts: dict[str, str]) -> dict[str, MergeConfig]:
    """The merge settings per kind of input (the keys of ``prompts``), each said on stderr with its origin and prompt."""
    configs = {kind: merge_config(args, lvlm, kind) for kind in prompts}
    for kind, config in configs.items():
        if config.origin:
            print(f"[{config.origin}]", file=sys.stderr)
        print(f"[{style}, {kind}: {prompts[kind]}]", file=sys.stderr)
    return configs
