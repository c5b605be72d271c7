"""``python -m illava calibrate``: fit merge settings to a model on unlabeled inputs and save its merge profile."""

from __future__ import annotations

import argparse
import json
import sys

from ..budget import STANDARD_BUDGETS
from .options import load_model, runtime_arguments


def register(commands, formatter) -> None:
    parser = commands.add_parser(
        "calibrate", formatter_class=formatter, help="fit merge settings to a model on unlabeled inputs and save its merge profile"
    )
    parser.add_argument("--model", required=True, help="Hugging Face model folder (config.json + *.safetensors)")
    parser.add_argument("--images", nargs="+", default=[], help="image files or folders of them (16-32 is plenty)")
    parser.add_argument("--videos", nargs="+", default=[], help="video files or folders of them")
    parser.add_argument("--prompt", default=None, help="what to ask of every input (default: describe it)")
    parser.add_argument("--budgets", default=",".join(str(b) for b in STANDARD_BUDGETS),
                        help="shares of the work on the picture to fit settings for, comma-separated")
    parser.add_argument("--kl-tolerance", type=float, default=0.0,
                        help="let a cheaper configuration win when its KL is within this of the most faithful one")
    parser.add_argument("--out", default=None, help="where to write the profile (default: the per-user profile store)")
    parser.add_argument("--json", default=None, help="also write the whole report (every candidate measured) here")
    runtime_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..calibrate import calibrate, parse_budgets
    from ..profiles import store_path, write_profile

    budgets = parse_budgets(args.budgets)
    lvlm = load_model(args, args.model)
    inputs, skipped, description = _inputs(args)
    report = calibrate(lvlm, inputs, budgets, progress=_progress_line, description=description, kl_tolerance=args.kl_tolerance)
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


def _inputs(args: argparse.Namespace) -> tuple[list, list[str], str]:
    """The calibration inputs, the files skipped (with why) and their description: the files given, sorted into
    images and videos by their suffix as ``caption-folder`` does, else the built-in scene set."""
    from ..calibrate import read_inputs
    from ..captioning.plan import scan

    given = args.images + args.videos
    if not given:
        from ..lab.calibration_set import scene_inputs

        return scene_inputs(), [], "the built-in set: scene images, pairs and videos of the calibration split, questions only"
    entries = scan(given)[0]
    images = [str(entry.path) for entry in entries if entry.kind == "image"]
    videos = [str(entry.path) for entry in entries if entry.kind == "video"]
    inputs, skipped = read_inputs(images, videos, args.prompt)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    return inputs, skipped, f"{len(images)} image and {len(videos)} video files given on the command line"


def _progress_line(done: int, total: int, text: str) -> None:
    print(f"\rcalibrating: {done}/{total} ({text})", end="", file=sys.stderr, flush=True)
