"""Finding model folders under ComfyUI's models/LLM and models/VLM, and resolving a chosen name safely."""

from __future__ import annotations

import os
from pathlib import Path

from ..illava import ModelFolderError
from . import comfy_compat

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")


def no_models_hint() -> str:
    """The single combo entry shown when no model folder was found."""
    return f"no models found: put a model folder in {comfy_compat.default_model_folder()}"


def list_models() -> list[str]:
    """Names (relative to their root, '/'-separated) of folders with config.json and weights, two levels deep."""
    names: list[str] = []
    for root in comfy_compat.model_roots():
        base = Path(root)
        if not base.is_dir():
            continue
        for candidate in _candidates(base):
            name = candidate.relative_to(base).as_posix()
            if name not in names and _inside(base, candidate):
                names.append(name)
    return sorted(names, key=str.lower)


def _candidates(base: Path) -> list[Path]:
    found = []
    for first in _subdirs(base):
        if _looks_like_model(first):
            found.append(first)
            continue
        found.extend(second for second in _subdirs(first) if _looks_like_model(second))
    return found


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _looks_like_model(folder: Path) -> bool:
    if not (folder / "config.json").is_file():
        return False
    try:
        return any(entry.name.endswith(WEIGHT_SUFFIXES) for entry in folder.iterdir())
    except OSError:
        return False


def _inside(base: Path, candidate: Path) -> bool:
    real_base = os.path.realpath(base)
    return os.path.commonpath([real_base, os.path.realpath(candidate)]) == real_base


def resolve_model(name: str) -> Path:
    """The folder a listed name points to; rejects names that could leave the model folders."""
    if not name or name == no_models_hint():
        raise ModelFolderError(
            f"Put a model folder (config.json + *.safetensors) in {comfy_compat.default_model_folder()}, then refresh.\n"
            "No model folder was found under models/LLM or models/VLM (or extra_model_paths.yaml's LLM / VLM entries)."
        )
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or ":" in name:
        raise ModelFolderError(
            f"Choose a model from the list: {name!r} is not a folder name under the model folders "
            "(absolute paths and '..' are not allowed)."
        )
    for root in comfy_compat.model_roots():
        candidate = Path(root).joinpath(*parts)
        if candidate.is_dir():
            if not _inside(Path(root), candidate):
                raise ModelFolderError(
                    f"Move the model into {root} (or list its real location in extra_model_paths.yaml): "
                    f"{name!r} is a link that points outside the model folders."
                )
            return candidate
    raise ModelFolderError(
        f"Put the model folder {name!r} back in {comfy_compat.default_model_folder()}, or pick another model and refresh: "
        "it was not found under any registered LLM / VLM folder."
    )
