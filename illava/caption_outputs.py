"""Where a folder job's captions and errors go, written so a killed run leaves only whole outputs.

A ``.txt`` file is written to a hidden temporary file beside it and renamed into place (``os.replace``); a
JSONL record is one line appended, flushed and synced before the next. So what exists is finished, and a
restarted run skips exactly that.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from .caption_plan import Entry

ERRORS_NAME = "illava-errors.jsonl"


class CaptionOutputs(Protocol):
    """A destination for captions: what is done already, and how one more is written."""

    where: Path
    errors_path: Path

    def done(self, entry: Entry) -> bool: ...

    def target(self, entry: Entry) -> str: ...

    def write(self, entry: Entry, record: dict[str, Any]) -> None: ...


class TextFiles:
    """One ``.txt`` per input: beside it, or under ``out`` mirroring the input folder's tree."""

    def __init__(self, out: str | Path | None, root: Path) -> None:
        self.out = Path(out) if out is not None else None
        self.where = self.out or root
        self.errors_path = self.where / ERRORS_NAME

    def target(self, entry: Entry) -> str:
        if self.out is None:
            return str(entry.path.with_suffix(".txt"))
        return str((self.out / entry.name).with_suffix(".txt"))

    def done(self, entry: Entry) -> bool:
        return os.path.isfile(self.target(entry))

    def write(self, entry: Entry, record: dict[str, Any]) -> None:
        write_atomically(Path(self.target(entry)), record["caption"] + "\n")


class JsonLines:
    """One JSON record per input in one file, keyed by ``path`` (the input's name below its folder)."""

    def __init__(self, path: str | Path, overwrite: bool) -> None:
        self.where = Path(path)
        self.errors_path = self.where.with_name(self.where.stem + ".errors.jsonl")
        self.names: set[str] = set()
        self.where.parent.mkdir(parents=True, exist_ok=True)
        if overwrite or not self.where.exists():
            self.where.write_text("")
            return
        lines = _whole_lines(self.where)
        for line in lines:
            try:
                self.names.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                continue

    def target(self, entry: Entry) -> str:
        return str(self.where)

    def done(self, entry: Entry) -> bool:
        return entry.name in self.names

    def write(self, entry: Entry, record: dict[str, Any]) -> None:
        append_line(self.where, record)
        self.names.add(entry.name)


class ErrorLog:
    """This run's failures, one JSON line each (``path``, ``error``); the file exists only when one failed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.unlink(missing_ok=True)

    def add(self, name: str, reason: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, {"path": name, "error": reason})


def write_atomically(path: Path, text: str) -> None:
    """``text`` into ``path`` through a hidden temporary file renamed over it: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line appended in a single write, flushed and synced, so a killed run leaves whole lines."""
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def _whole_lines(path: Path) -> list[str]:
    """The file's complete lines; a trailing partial one (a crash mid-write) is cut off the file."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    return [line for line in data[:end].decode("utf-8", errors="replace").splitlines() if line.strip()]
