"""The only module that imports ComfyUI; every hook has a plain fallback so the nodes run without it."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..illava.profiles import user_profile_dir

try:
    import folder_paths
except ImportError:
    folder_paths = None

try:
    import comfy.model_management as model_management
    import comfy.model_patcher as model_patcher
    import comfy.utils as comfy_utils
except ImportError:
    model_management = model_patcher = comfy_utils = None

try:
    from server import PromptServer
except ImportError:
    PromptServer = None

try:
    from comfy_api.input_impl import VideoFromFile
except ImportError:
    VideoFromFile = None

log = logging.getLogger("illava")

MODEL_FOLDER_NAMES = ("LLM", "VLM")
_fallback_roots: dict[str, list[str]] = {name: [] for name in MODEL_FOLDER_NAMES}


def register_model_folders() -> None:
    """Register models/LLM and models/VLM with ComfyUI, keeping paths extra_model_paths.yaml already added."""
    if folder_paths is None:
        return
    for name in MODEL_FOLDER_NAMES:
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))


def add_model_root(name: str, path: str) -> None:
    """Add a folder to scan for models (ComfyUI's folder_paths, or the fallback list outside ComfyUI)."""
    if folder_paths is not None:
        folder_paths.add_model_folder_path(name, path)
    else:
        _fallback_roots.setdefault(name, []).append(path)


def model_roots() -> list[str]:
    """Every folder registered for LLM and VLM models, in priority order, without repeats."""
    roots: list[str] = []
    for name in MODEL_FOLDER_NAMES:
        if folder_paths is not None:
            try:
                paths = folder_paths.get_folder_paths(name)
            except KeyError:
                paths = []
        else:
            paths = _fallback_roots.get(name, [])
        roots.extend(p for p in paths if p not in roots)
    return roots


def default_model_folder() -> str:
    """Where the docs and error messages tell users to put model folders."""
    if folder_paths is not None:
        return os.path.join(folder_paths.models_dir, "LLM")
    return os.path.join("ComfyUI", "models", "LLM")


def input_path(path: str) -> str:
    """A relative path is read from ComfyUI's input folder (where uploads land); absolute ones stay."""
    if folder_paths is None or os.path.isabs(path):
        return path
    return os.path.join(folder_paths.get_input_directory(), path)


def output_path(path: str) -> str:
    """A relative path is written under ComfyUI's output folder (outside ComfyUI: the system's temporary
    folder's illava-output), never into the pack; absolute ones stay."""
    if os.path.isabs(path):
        return path
    if folder_paths is None:
        return os.path.join(tempfile.gettempdir(), "illava-output", path)
    return os.path.join(folder_paths.get_output_directory(), path)


def profile_store() -> str | None:
    """Where calibrated merge profiles go inside ComfyUI: its user directory's illava/profiles; None outside."""
    if folder_paths is None:
        return None
    return os.path.join(folder_paths.get_user_directory(), "illava", "profiles")


def profile_store_state() -> str:
    """Changes whenever a merge profile is written to the store (``os.replace`` renews the folder's mtime):
    what nodes using ``auto`` add to their cache key, so a new calibration takes effect on the next queue."""
    try:
        return str(os.stat(profile_store() or user_profile_dir()).st_mtime_ns)
    except OSError:
        return ""


def add_json_route(path: str, handler: Callable[[dict[str, str]], tuple[int, Any]]) -> None:
    """Serve GET ``path`` with ``handler(query) -> (status, JSON body)``, run off the server's event loop
    since it may read files; no-op outside ComfyUI."""
    server = getattr(PromptServer, "instance", None) if PromptServer is not None else None
    if server is None:
        return
    from aiohttp import web

    async def respond(request: "web.Request") -> "web.Response":
        status, body = await asyncio.to_thread(handler, dict(request.rel_url.query))
        return web.json_response(body, status=status)

    server.routes.get(path)(respond)


def video_from_file(path: str) -> Any:
    """ComfyUI's VIDEO for a file (what Load Video outputs), or the path itself outside ComfyUI."""
    return VideoFromFile(path) if VideoFromFile is not None else path


def default_device() -> torch.device | None:
    """ComfyUI's compute device (honours --cpu and --cuda-device); None outside ComfyUI."""
    if model_management is None:
        return None
    return model_management.get_torch_device()


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception once Cancel was pressed; no-op outside ComfyUI."""
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()


class _PlainProgress:
    def __init__(self, total: int) -> None:
        self.total = total

    def update_absolute(self, value: int, total: int | None = None) -> None:
        pass


def progress_bar(total: int) -> Any:
    """ComfyUI's per-node progress bar (its hook also raises after Cancel), or a silent stand-in."""
    if comfy_utils is None:
        return _PlainProgress(total)
    return comfy_utils.ProgressBar(total)


def send_progress_text(text: str, node_id: str | None) -> None:
    """Draw ``text`` under the node while it runs, when a ComfyUI server is there to send it."""
    server = getattr(PromptServer, "instance", None) if PromptServer is not None else None
    if server is None or node_id is None or not hasattr(server, "send_progress_text"):
        return
    server.send_progress_text(text, node_id)


class _ModuleAdapter(torch.nn.Module):
    """Gives ComfyUI's ModelPatcher a module with a writable ``device`` (transformers' is read-only)."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.inner = model
        self.device = device


def offload_device() -> torch.device | None:
    """Where ComfyUI keeps weights it is not using (the CPU, unless told to keep them on the GPU); None
    outside ComfyUI."""
    return model_management.unet_offload_device() if model_management is not None else None


def intermediate_device() -> torch.device | None:
    """Where ComfyUI keeps node outputs between nodes (the CPU, unless told to keep everything on the GPU);
    None outside ComfyUI."""
    return model_management.intermediate_device() if model_management is not None else None


def manage_model(model: torch.nn.Module, device: torch.device, size: int) -> Any:
    """Hand a model whose weights sit on the offload device to ComfyUI's memory management, which moves
    them to ``device`` when asked (freeing room for them first) and back when it needs the room; ``size``
    is the weights' memory as ComfyUI should count it. Returns the patcher (None outside ComfyUI)."""
    if model_patcher is None:
        return None
    adapter = _ModuleAdapter(model, offload_device())
    return model_patcher.ModelPatcher(adapter, load_device=device, offload_device=offload_device(), size=size)


def load_to_device(patcher: Any) -> None:
    """Bring the weights back to the compute device after ComfyUI offloaded them (Unload, low memory)."""
    if patcher is not None:
        model_management.load_models_gpu([patcher], force_full_load=True)


def release(patcher: Any) -> None:
    """Move the weights off the compute device and return the cached memory (keep_loaded off)."""
    if patcher is None:
        return
    unload = getattr(model_management, "unload_model_and_clones", None)
    if unload is not None:
        unload(patcher)
    else:
        patcher.detach()
    model_management.soft_empty_cache()


def save_preview_images(images: list[np.ndarray]) -> list[dict[str, str]]:
    """Write uint8 RGB arrays as temp PNGs the way core Preview Image does; returns the ui.images entries."""
    if folder_paths is not None:
        out_dir = folder_paths.get_temp_directory()
    else:
        out_dir = os.path.join(tempfile.gettempdir(), "illava_preview")
    os.makedirs(out_dir, exist_ok=True)
    prefix = "illava_tokens_" + os.urandom(4).hex()
    entries = []
    for i, image in enumerate(images):
        name = f"{prefix}_{i:05}_.png"
        Image.fromarray(image).save(os.path.join(out_dir, name), compress_level=1)
        entries.append({"filename": name, "subfolder": "", "type": "temp"})
    return entries
