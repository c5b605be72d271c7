"""Finding model folders under ComfyUI's models/LLM and models/VLM, resolving a chosen name safely, and
downloading a catalogue checkpoint when the user picked one."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..illava import ModelFolderError
from ..illava.backbones.catalogue import CATALOGUE, Checkpoint
from ..illava.hub import download
from . import comfy_compat

log = logging.getLogger("illava")

WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
DOWNLOAD_PREFIX = "download: "


def no_models_hint() -> str:
    """The single combo entry shown when no model folder was found."""
    return f"no models found: put a model folder in {comfy_compat.default_model_folder()}, or pick a download: entry"


def model_choices() -> list[str]:
    """Load LVLM's model list: the local folders, then the catalogue checkpoints not downloaded yet."""
    local = list_models()
    downloads = [download_choice(c) for c in CATALOGUE if c.folder not in local and c.repo_id not in local]
    return (local or [no_models_hint()]) + downloads


def download_choice(checkpoint: Checkpoint) -> str:
    """E.g. 'download: Qwen2.5-VL-3B-Instruct (7.5 GB, needs ~9.3 GB)'."""
    return (f"{DOWNLOAD_PREFIX}{checkpoint.folder} "
            f"({checkpoint.download_bytes / 1e9:.1f} GB, needs ~{checkpoint.memory_bytes / 1e9:.1f} GB)")


def catalogue_entry(choice: str) -> Checkpoint | None:
    """The checkpoint a 'download: <folder> (...)' choice names, read by folder alone so that a saved
    workflow still matches when the sizes shown change; None for any other choice."""
    if not choice.startswith(DOWNLOAD_PREFIX):
        return None
    folder = choice.removeprefix(DOWNLOAD_PREFIX).split(" (")[0]
    return next((c for c in CATALOGUE if c.folder == folder), None)


def check_model_choice(choice: str) -> None:
    """Raise ``ModelFolderError`` unless ``choice`` is a model folder or a catalogue checkpoint; downloads nothing."""
    if catalogue_entry(choice) is None:
        resolve_model(choice)


def fetch_model(choice: str) -> Path:
    """The folder for a model choice. A catalogue checkpoint is downloaded into models/LLM, with ComfyUI's
    progress bar, unless a folder of its name is listed already (then that one is used)."""
    checkpoint = catalogue_entry(choice)
    if checkpoint is None:
        return resolve_model(choice)
    local = list_models()
    for name in (checkpoint.folder, checkpoint.repo_id):
        if name in local:
            return resolve_model(name)
    target = Path(comfy_compat.default_model_folder()) / checkpoint.folder
    log.info("iLLaVA: downloading %s (%.1f GB) into %s", checkpoint.repo_id, checkpoint.download_bytes / 1e9, target)
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        # Megabytes: ComfyUI draws value / total, and byte counts of many GB are needlessly large numbers.
        if bar is None:
            bar = comfy_compat.progress_bar(max(total // 10**6, 1))
        bar.update_absolute(done // 10**6)

    return download(checkpoint.repo_id, target, progress=progress)


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
    offer = next((f", or pick '{download_choice(c)}' to download it" for c in CATALOGUE if name in (c.folder, c.repo_id)), "")
    raise ModelFolderError(
        f"Put the model folder {name!r} back in {comfy_compat.default_model_folder()}{offer}, or pick another model and refresh: "
        "it was not found under any registered LLM / VLM folder."
    )
