"""The lab's commands, ``demo``, ``eval`` and ``bench``, registered on the command line (``illava.cli``) from here
so that their options live beside their jobs."""

from __future__ import annotations

import argparse

from ..budget import STANDARD_BUDGETS
from ..cli.options import budget, runtime_arguments
from ..config import PRESETS
from ..quantization import QUANTIZATIONS
from .bench import ARCHES
from .harness import add_arguments as add_eval_arguments


def register(commands, formatter) -> None:
    """Add ``demo``, ``eval`` and ``bench`` to the ``commands`` subparsers."""
    demo = commands.add_parser("demo", formatter_class=formatter, help="run the demo: merging off and on, side by side")
    demo.add_argument("--model", default=None, help="a model folder to use instead of the built-in demo model")
    demo.add_argument("--out", default="illava-demo", help="folder for the retained-token maps")
    runtime_arguments(demo)
    demo.set_defaults(run=_demo)
    evaluation = commands.add_parser("eval", formatter_class=formatter, help="accuracy retention of iLLaVA and its peers at matched work")
    add_eval_arguments(evaluation)
    evaluation.add_argument("--dtype", default="auto", help="auto, fp32, bf16 or fp16")
    evaluation.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluation.set_defaults(run=_eval)
    _register_bench(commands, formatter)


def _register_bench(commands, formatter) -> None:
    bench = commands.add_parser("bench", formatter_class=formatter, help="speed and memory: vanilla transformers and iLLaVA side by side")
    bench.add_argument("--arch", default="qwen2.5-vl-3b", choices=list(ARCHES), help="the model's dimensions")
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
    bench.add_argument("--budgets", nargs="+", type=budget, default=list(STANDARD_BUDGETS),
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
    bench.set_defaults(run=_bench)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def _eval(args: argparse.Namespace) -> int:
    from .harness import run

    return run(args)


def _bench(args: argparse.Namespace) -> int:
    if args.layers is not None:
        args.llm_layers = args.llm_layers or args.layers
        args.vit_layers = args.vit_layers or args.layers
    args.new_tokens = args.new_tokens or (128 if args.job == "caption" else 32)
    if args.job == "memory":
        from .memory import run_memory_bench

        return run_memory_bench(args)
    if args.job == "caption":
        from .caption_bench import run_caption_bench

        return run_caption_bench(args)
    from .bench import run_bench

    return run_bench(args)
