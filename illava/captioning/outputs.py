"""Where a folder job's captions and errors go, written so a killed run leaves only whole outputs.

A ``.txt`` file is written to a hidden temporary file beside it and renamed into place (``os.replace``); a
JSONL record is one line appended, flushed and synced before the next; a Parquet part is written whole the
same way. So what exists is finished, and a restarted run skips exactly that.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Protocol

from .plan import Entry

ERRORS_NAME = "illava-errors.jsonl"
# Records a Parquet part holds: large enough that a big job makes few files, small enough that a killed run
# loses little (the records not yet in a part are captioned again).
PARQUET_ROWS = 256


class CaptionOutputs(Protocol):
    """A destination for captions: what is done already, and how one more is written."""

    where: Path
    errors_path: Path

    def done(self, entry: Entry) -> bool: ...

    def target(self, entry: Entry) -> str: ...

    def write(self, entry: Entry, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


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

    def close(self) -> None:
        """Nothing is held back: each caption is written as it comes."""


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

    def close(self) -> None:
        """Nothing is held back: each record is written as it comes."""


class ParquetFiles:
    """The JSONL records as Parquet files in one folder (``part-00000.parquet``, ...), which pandas, pyarrow,
    Ray Data and ``datasets`` read as one table. A part is written once ``rows`` records are held, and when the
    run ends; a killed run loses only the records not yet in a part. Needs pyarrow."""

    def __init__(self, folder: str | Path, overwrite: bool, rows: int = PARQUET_ROWS) -> None:
        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError("Parquet output needs pyarrow: pip install pyarrow (requirements-ray.txt brings it)")
        import pyarrow.parquet as pq

        self.where = Path(folder)
        # Beside the folder, not in it: a reader takes every file in the folder for a part.
        self.errors_path = self.where.with_name(self.where.name + ".errors.jsonl")
        self.rows = rows
        self.held: list[dict[str, Any]] = []
        self.names: set[str] = set()
        self.where.mkdir(parents=True, exist_ok=True)
        parts = sorted(self.where.glob("part-*.parquet"))
        for part in parts:
            if overwrite:
                part.unlink()
            else:
                self.names.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        self.next = 0 if overwrite or not parts else int(parts[-1].stem.split("-")[1]) + 1

    def target(self, entry: Entry) -> str:
        return str(self.where)

    def done(self, entry: Entry) -> bool:
        return entry.name in self.names

    def write(self, entry: Entry, record: dict[str, Any]) -> None:
        self.held.append(record)
        self.names.add(entry.name)
        if len(self.held) >= self.rows:
            self.close()

    def close(self) -> None:
        """Write the records held as the next part."""
        if not self.held:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(self.held), sink)
        write_atomically(self.where / f"part-{self.next:05}.parquet", sink.getvalue().to_pybytes())
        self.held, self.next = [], self.next + 1


class ErrorLog:
    """This run's failures, one JSON line each (``path``, ``error``); the file exists only when one failed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.unlink(missing_ok=True)

    def add(self, name: str, reason: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, {"path": name, "error": reason})


def write_atomically(path: Path, data: str | bytes) -> None:
    """``data`` into ``path`` through a hidden temporary file renamed over it: never a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    # os.open with 0o666 gives the file the mode the user's umask asks for, as an ordinary write would
    # (a NamedTemporaryFile is always 0600, and the rename would keep that).
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data if isinstance(data, bytes) else data.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
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
