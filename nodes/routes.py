"""Server routes the web extension asks: a chosen model's depths and profile, and what Merge Config's settings
buy on it (the library's cost model: the web extension computes nothing the library knows)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from ..illava import ModelFolderError
from ..illava.describe import ModelOutline, describe_model, outline_model
from . import comfy_compat
from .config import build_choice, readout
from .model_folders import resolve_model

MODEL_INFO_ROUTE = "/illava/model_info"
READOUT_ROUTE = "/illava/readout"
# Merge Config's widgets the readout reads; the rest of a query is ignored.
READOUT_FIELDS = ("preset", "budget", "stage1_layers", "stage1_keep", "stage1_recycled", "stage2_layers", "stage2_keep",
                  "stage2_recycled", "recycle_weighting", "score_chunk", "method")


def model_info(name: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for the model listed as ``name`` in Load LVLM; errors say what to fix."""
    try:
        info = _described(*_model_key(name))
    except ModelFolderError as error:
        return 404, {"error": str(error)}
    return 200, {"model": name, **info}


def settings_readout(query: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, {"text"}) for Merge Config's widget values in ``query`` and the model it names; a bad value
    gets a 200 whose text says what to change, as the readout shows it."""
    name = query.get("model", "")
    try:
        outline = _outline(*_model_key(name))
    except ModelFolderError as error:
        return 404, {"error": str(error)}
    values = {key: _number(value) for key, value in query.items() if key in READOUT_FIELDS}
    try:
        return 200, {"text": readout(build_choice(**values), outline, name)}
    except (TypeError, ValueError) as error:
        return 200, {"text": f"invalid: {error}"}


def _number(text: str) -> Any:
    """A widget value as the node would get it: an int or float where the text is one."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _model_key(name: str) -> tuple[str, str | None, tuple[int, ...]]:
    """(folder, profile store, version) of the model listed as ``name``: what the cached answers are keyed on."""
    folder = resolve_model(name)
    store = comfy_compat.profile_store()
    return str(folder), store, _version(folder, store)


def _version(folder: Path, store: str | None) -> tuple[int, ...]:
    """Changes when the model's config or any of its merge profiles does (Calibrate writes a new one)."""
    paths = [folder / "config.json", folder / "illava_profile.json"] + ([Path(store)] if store else [])
    return tuple(path.stat().st_mtime_ns if path.exists() else 0 for path in paths)


@lru_cache(maxsize=8)
def _outline(folder: str, store: str | None, version: tuple[int, ...]) -> ModelOutline:
    return outline_model(folder, [store] if store else [])


@lru_cache(maxsize=32)
def _described(folder: str, store: str | None, version: tuple[int, ...]) -> dict[str, Any]:
    return describe_model(folder, [store] if store else []).to_dict()


def register() -> None:
    """Add the routes to ComfyUI's server (no-op outside ComfyUI)."""
    comfy_compat.add_json_route(MODEL_INFO_ROUTE, lambda query: model_info(query.get("model", "")))
    comfy_compat.add_json_route(READOUT_ROUTE, settings_readout)


