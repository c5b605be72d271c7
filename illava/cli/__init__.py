"""The command line, one module per command: ``python -m illava caption|caption-folder|calibrate|download``, and
the lab's ``demo``, ``eval`` and ``bench``, registered from ``illava.lab.commands``."""

from __future__ import annotations

import argparse
import sys

from ..lab import commands as lab_commands
from . import calibrate, caption, caption_folder, download
from .options import HelpWithDefaults, with_flag_names

DESCRIPTION = ("iLLaVA: vision-language models answering with fewer visual tokens. Caption images, videos and "
               "folders, calibrate a model's merge settings, download a model; the lab's demo, eval and bench.")
REGISTRARS = (caption.register, caption_folder.register, calibrate.register, download.register, lab_commands.register)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a bad input is one ``error:`` line on stderr (naming the flag to change) and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m illava", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    for register in REGISTRARS:
        register(commands, HelpWithDefaults)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        message = with_flag_names(str(error)) if getattr(args, "flag_of_field", None) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
