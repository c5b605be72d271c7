"""``python -m illava caption-folder``: caption every image and video of a folder, batched and resumable,
in this process or on Ray."""

from __future__ import annotations

import argparse
import math
import sys

from ..config import Resolution
from .options import (
    FLAG_OF_FIELD, announced_configs, caption_style, load_model, merge_arguments, positive_int, runtime_arguments,
    style_arguments, style_prompt, video_arguments,
)


def register(commands, formatter) -> None:
    parser = commands.add_parser(
        "caption-folder", formatter_class=formatter,
        help="caption every image and video of a folder into .txt files, one JSONL or Parquet, batched and resumable",
    )
    parser.add_argument("inputs", nargs="+", metavar="IN", help="a folder of images and videos (or files)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, metavar="DIR",
                       help="write each caption as DIR/<input path>.txt, mirroring IN's tree (default: beside each input)")
    where.add_argument("--jsonl", default=None, metavar="F", help="write one JSON record per input to F instead of .txt files")
    where.add_argument("--parquet", default=None, metavar="DIR",
                       help="write the JSONL records as Parquet files in DIR (part-00000.parquet, ...; needs pyarrow)")
    parser.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    style_arguments(parser)
    merge_arguments(parser)
    sizing = parser.add_mutually_exclusive_group()
    sizing.add_argument("--batch-size", type=_batch_size, default=4,
                        help="prompts answered together, or auto: as many as the free memory holds")
    sizing.add_argument("--memory-budget", type=_gigabytes, default=None, metavar="GB",
                        help="pick the batch size so a batch's KV cache and activations fit in GB beyond the weights")
    video_arguments(parser)
    parser.add_argument("--recursive", action="store_true", help="also caption the inputs in IN's subfolders")
    parser.add_argument("--overwrite", action="store_true", help="caption inputs again even when captioned already")
    runtime_arguments(parser)
    _engine_arguments(parser)
    parser.set_defaults(run=run, flag_of_field=FLAG_OF_FIELD)


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the job runs: this process, or a pool of Ray actors (requirements-ray.txt)."""
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local: in this process; ray: on Ray Data, one model per actor (and per GPU)")
    parser.add_argument("--actors", type=positive_int, default=2, help="with --engine ray: the actors, each loading the model")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="with --engine ray: join this cluster (auto, or host:port; default: RAY_ADDRESS, as ray job "
                             "submit sets it, else a local instance on 127.0.0.1 for the run)")
    parser.add_argument("--cpus-per-actor", type=float, default=None,
                        help="with --engine ray: CPUs (and torch threads) each actor takes (default: on a local instance "
                             "the cores but one shared out, on a cluster 1)")


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


def run(args: argparse.Namespace) -> int:
    """Caption a folder with a progress bar on stderr; the summary paragraph on stdout. The first Ctrl-C
    stops after the batch in hand, a second one at once; either way what is finished is kept."""
    from ..captioning.plan import scan
    from ..generation import GenerationOptions

    entries, _, _ = scan(args.inputs, args.recursive)
    style = caption_style(args)
    prompts = {kind: style_prompt(style, args.prompt, kind) for kind in sorted({entry.kind for entry in entries})}
    lvlm = _model_for_engine(args)
    job = dict(
        out=args.out, jsonl=args.jsonl, parquet=args.parquet, style=style, prompt=args.prompt or "",
        config=announced_configs(args, lvlm, style, prompts), options=GenerationOptions(max_new_tokens=args.max_new_tokens),
        recursive=args.recursive, overwrite=args.overwrite, resolution=Resolution(args.min_pixels, args.max_pixels),
        fps=args.fps, max_frames=args.max_frames, system_prompt=args.system_prompt,
    )
    with _StopOnCtrlC() as stop, _ProgressBar() as bar:
        summary = _run_engine(args, lvlm, {**job, "progress": bar, "should_stop": stop.asked})
    print(summary.text())
    return 130 if summary.stopped and summary.stopped.startswith("Interrupted") else 0


def _model_for_engine(args: argparse.Namespace):
    """The loaded model, or with Ray its outline (no weights): the actors load it, and the outline resolves the
    presets and auto as a load would."""
    if args.engine != "ray":
        return load_model(args, args.model)
    if args.memory_budget is not None or args.batch_size == "auto":
        raise ValueError("--memory-budget and --batch-size auto size batches in one process: with --engine ray give --batch-size N")
    from ..describe import outline_model

    print(f"[ray: {args.actors} actors, each loading {args.model}]", file=sys.stderr)
    return outline_model(args.model)


def _run_engine(args: argparse.Namespace, lvlm, job: dict):
    if args.engine == "ray":
        from ..captioning.ray_engine import caption_folder_ray

        loading = dict(device=args.device, dtype=args.dtype, attn_implementation=args.attention, quantization=args.quantization)
        return caption_folder_ray(args.model, args.inputs, actors=args.actors, address=args.ray_address,
                                  batch_size=args.batch_size, load_options=loading, cpus_per_actor=args.cpus_per_actor, **job)
    from ..captioning.folder import caption_folder

    return caption_folder(lvlm, args.inputs, batch_size="auto" if args.memory_budget else args.batch_size,
                          memory_budget=args.memory_budget, **job)


class _StopOnCtrlC:
    """While active, the first Ctrl-C asks the job to stop after its batch (``asked``), a second one stops at once."""

    def __init__(self) -> None:
        self.stop = False

    def asked(self) -> bool:
        return self.stop

    def _interrupt(self, signum, frame) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\nstopping after this batch (Ctrl-C again to stop now)", file=sys.stderr)

    def __enter__(self) -> "_StopOnCtrlC":
        import signal

        self.previous = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        signal.signal(signal.SIGINT, self.previous)


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

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
