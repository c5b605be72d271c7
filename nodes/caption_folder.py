"""iLLaVA Caption Folder: caption every image and video of a folder into .txt files, batched and resumable."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..illava.budget import DEFAULT_BUDGET
from ..illava.captioning.plan import KINDS
from ..illava.captioning.styles import DEFAULT_STYLE
from ..illava.captioning.folder import Progress, caption_folder
from ..illava.generation import GenerationOptions
from . import comfy_compat
from .caption import caption_choice
from .encode import image_resolution, resolution_inputs
from .examples import INPUTS
from .generate import style_input
from .handle import LVLMHandle

NODE_NAME = "iLLaVA Caption Folder"


def source_folder(folder: str) -> Path:
    """A typed folder: absolute, or relative to ComfyUI's input folder, else among the pack's example inputs
    (so the example workflow runs on a fresh install). Raises ValueError naming the node and field."""
    text = folder.strip()
    if not text:
        raise ValueError(f"{NODE_NAME}: folder is empty: type the folder of images and videos to caption")
    path = Path(comfy_compat.input_path(text))
    if not path.is_dir() and not os.path.isabs(text) and (INPUTS / text).is_dir():
        path = INPUTS / text
    if not path.is_dir():
        raise ValueError(f"{NODE_NAME}: folder {text!r} is not a folder (looked for {path}): type an existing folder")
    return path


def target_folder(folder: str) -> Path | None:
    """Where the .txt files go: None (beside the inputs) when empty, else absolute or under ComfyUI's output."""
    text = folder.strip()
    return Path(comfy_compat.output_path(text)) if text else None


def _listing(*folders: Path | None) -> str:
    """Changes whenever a file in these folders is added, removed or rewritten."""
    digest = hashlib.sha256()
    for folder in folders:
        if folder is None or not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class _NodeProgress:
    """caption_folder's progress in ComfyUI's bar (whose hook raises after Cancel) and as text under the node."""

    def __init__(self, node_id: str | None) -> None:
        self.node_id = node_id
        self.bar = None

    def __call__(self, progress: Progress) -> None:
        if self.bar is None:
            self.bar = comfy_compat.progress_bar(progress.total)
        self.bar.update_absolute(progress.done, progress.total)
        comfy_compat.send_progress_text(progress_text(progress), self.node_id)


def progress_text(progress: Progress) -> str:
    """E.g. "12 of 40 done: 11 captioned, 1 failed (0.50 items/s, 56 s left)"."""
    eta = f", {progress.eta_s:.0f} s left" if progress.eta_s is not None else ""
    failed = f", {progress.failed} failed" if progress.failed else ""
    captioned = progress.done - progress.failed
    return f"{progress.done} of {progress.total} done: {captioned} captioned{failed} ({progress.items_per_s:.2f} items/s{eta})"


def _stop_when_cancelled() -> bool:
    comfy_compat.check_interrupt()
    return False


class CaptionFolder:
    """Captions a folder of images and videos into .txt files; captioned ones are skipped, bad ones listed."""

    CATEGORY = "iLLaVA"
    FUNCTION = "caption"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("summary",)
    OUTPUT_TOOLTIPS = ("What the run did: captioned, skipped and failed files (each named), items per minute, where the captions went.",)
    DESCRIPTION = (
        "Load LVLM + a folder -> one .txt caption per image or video, beside it or in output_folder (the folder's tree "
        "mirrored). Answered in batches; files captioned already are skipped, so a cancelled run resumes where it "
        "stopped; unreadable files are listed in the summary and in illava-errors.jsonl."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM."}),
                "folder": ("STRING", {"default": "", "tooltip": "The folder of images and videos: absolute, or relative to ComfyUI's input folder."}),
                "output_folder": ("STRING", {"default": "", "tooltip": "Where the .txt files go: empty = beside each input; else absolute, or relative to ComfyUI's output folder (the input folder's tree mirrored)."}),
                "style": style_input(DEFAULT_STYLE),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "", "tooltip": "Your question (style question) or instruction (style custom); unused by the other styles."}),
                "budget": ("FLOAT", {"default": DEFAULT_BUDGET, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Share of the work on the picture that remains, every vision-encoder and LLM layer counted (0.33 = about three times less); 1.0 = no merging."}),
                "max_new_tokens": ("INT", {"default": 256, "min": 1, "max": 32768, "tooltip": "Most tokens per caption (greedy decoding)."}),
                "batch_size": ("INT", {"default": 4, "min": 0, "max": 256, "tooltip": "Files answered together; 0 = as many as the free memory holds (merged prompts need less, so more fit)."}),
                "recursive": ("BOOLEAN", {"default": False, "tooltip": "Also caption the files in subfolders."}),
                "overwrite": ("BOOLEAN", {"default": False, "tooltip": "Caption files again even when their .txt exists."}),
            },
            "optional": resolution_inputs(),
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, folder: str = "", output_folder: str = "", **_) -> str:
        """Re-run when a file in the folder or its captions changed (a caption deleted, an image added), or
        when Calibrate wrote a profile that auto now uses."""
        try:
            return _listing(source_folder(folder), target_folder(output_folder)) + comfy_compat.profile_store_state()
        except ValueError:
            return "missing"

    def caption(
        self,
        lvlm: LVLMHandle,
        folder: str,
        output_folder: str,
        style: str,
        prompt: str,
        budget: float,
        max_new_tokens: int,
        batch_size: int,
        recursive: bool,
        overwrite: bool,
        max_pixels: int = 0,
        min_pixels: int = 0,
        unique_id: str | None = None,
    ) -> dict:
        source, target = source_folder(folder), target_folder(output_folder)
        resolution = image_resolution(NODE_NAME, min_pixels, max_pixels)
        choice = caption_choice(budget)
        model = lvlm.acquire()
        try:
            configs = {kind: choice.resolve(model, kind) for kind in KINDS}
            summary = caption_folder(
                model, source, out=target, style=style, prompt=prompt, config=configs,
                options=GenerationOptions(max_new_tokens=max_new_tokens), batch_size=batch_size or "auto",
                recursive=recursive, overwrite=overwrite, resolution=resolution,
                progress=_NodeProgress(unique_id), should_stop=_stop_when_cancelled,
            )
        except ValueError as error:
            raise ValueError(f"{NODE_NAME}: {error}") from None
        finally:
            lvlm.finish()
        text = summary.text()
        return {"ui": {"text": [text]}, "result": (text,)}
