"""``python -m illava download``: a model folder from the Hugging Face Hub, resumable and verified."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..backbones.catalogue import CATALOGUE


def register(commands, formatter) -> None:
    parser = commands.add_parser(
        "download", formatter_class=formatter, help="download a model folder from the Hugging Face Hub (resumable, verified)",
        epilog="checkpoints the backbones load natively: " + ", ".join(c.repo_id for c in CATALOGUE),
    )
    parser.add_argument("repo_id", metavar="REPO_ID", help="the hub repo, e.g. Qwen/Qwen2.5-VL-3B-Instruct")
    parser.add_argument("--to", default=".", metavar="DIR", help="folder the model folder goes in, named after the repo (ComfyUI: its models/LLM)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: the repo's main branch)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Download a repo into ``--to``/<repo name>, with a progress bar on stderr; print the folder."""
    from tqdm import tqdm

    from ..hub import download

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
