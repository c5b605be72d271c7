"""Server routes the web extension asks: a chosen model's depths and presets for the Merge Config readout."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from ..illava import ModelFolderError
from ..illava.describe import describe_model
from . import comfy_compat
from .model_folders import resolve_model

MODEL_INFO_ROUTE = "/illava/model_info"


def model_info(name: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for the model listed as ``name`` in Load LVLM; errors say what to fix."""
    try:
        folder = resolve_model(name)
        store = comfy_compat.profile_store()
        info = _described(str(folder), store, _version(folder, store))
    except ModelFolderError as error:
        return 404, {"error": str(error)}
    return 200, {"model": name, **info}


def _version(folder: Path, store: str | None) -> tuple[int, ...]:
    """Changes when the model's config or any of its merge profiles does (Calibrate writes a new one)."""
    paths = [folder / "config.json", folder / "illava_profile.json"] + ([Path(store)] if store else [])
    return tuple(path.stat().st_mtime_ns if path.exists() else 0 for path in paths)


@lru_cache(maxsize=32)
def _described(folder: str, store: str | None, version: tuple[int, ...]) -> dict[str, Any]:
    return describe_model(folder, [store] if store else []).to_dict()


def register() -> None:
    """Add the routes to ComfyUI's server (no-op outside ComfyUI)."""
    comfy_compat.add_json_route(MODEL_INFO_ROUTE, lambda query: model_info(query.get("model", "")))


