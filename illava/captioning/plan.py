"""Which files a folder captioning job reads, by suffix, and the order that puts same-sized inputs together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
KINDS = ("image", "video")
# Captions and error lists, ours or a previous tool's: not counted among the files passed over.
OWN_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class Entry:
    """One input file: ``name`` is its path below the folder it was found in (POSIX), the key of its caption."""

    path: Path
    name: str
    kind: str


def kind_of(path: str | Path) -> str | None:
    """"image" or "video" by the file's suffix; None for any other file."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def entry_for(path: str | Path, root: str | Path | None = None) -> Entry:
    """The entry of one file, named relative to ``root`` (its own folder by default)."""
    path = Path(path)
    kind = kind_of(path)
    if kind is None:
        raise ValueError(f"{str(path)!r} is neither an image ({', '.join(IMAGE_SUFFIXES)}) nor a video ({', '.join(VIDEO_SUFFIXES)})")
    name = path.relative_to(root).as_posix() if root is not None else path.name
    return Entry(path, name, kind)


def scan(inputs: str | Path | Sequence[str | Path], recursive: bool = False) -> tuple[list[Entry], list[str], Path]:
    """The images and videos of ``inputs`` (a folder, a file, or a list of them), sorted by name.

    Returns (entries, the names of the other files passed over (captions not counted), the root that names are
    relative to: the first folder given, else the first file's folder). Hidden files and folders are passed over
    silently.
    """
    given = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(path) for path in inputs]
    if not given:
        raise ValueError("no inputs: give a folder or files to caption")
    entries: list[Entry] = []
    passed_over: list[str] = []
    for path in given:
        if path.is_dir():
            files = path.rglob("*") if recursive else path.iterdir()
            for file in sorted(files):
                if not file.is_file() or any(part.startswith(".") for part in file.relative_to(path).parts):
                    continue
                if kind_of(file) is None:
                    if file.suffix.lower() not in OWN_SUFFIXES:
                        passed_over.append(file.relative_to(path).as_posix())
                else:
                    entries.append(entry_for(file, path))
        elif path.is_file():
            entries.append(entry_for(path))
        else:
            raise ValueError(f"{str(path)!r} does not exist: give a folder of images or videos, or files")
    root = next((path for path in given if path.is_dir()), given[0].parent)
    return entries, passed_over, root


def by_size(entries: Sequence[Entry]) -> list[Entry]:
    """Images before videos, each by pixel count (read from the file's header), so a batch's prompts are
    about the same length and little padding is spent; ties by name, so the order is reproducible."""
    return sorted(entries, key=lambda entry: (KINDS.index(entry.kind), _pixels(entry), entry.name))


def _pixels(entry: Entry) -> int:
    """Width x height without decoding the image; 0 when unreadable (it fails, and is reported, when read)."""
    if entry.kind != "image":
        return 0
    try:
        with Image.open(entry.path) as image:
            width, height = image.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0
    return width * height
