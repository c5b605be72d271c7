"""Example inputs that ship with the pack: scenes the bundled demo model was trained on, with its questions.

They let the example workflows run on a fresh install, where ComfyUI's input folder holds none of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import comfy_compat

INPUTS = Path(__file__).resolve().parents[1] / "example_workflows" / "inputs"


def questions() -> dict[str, list[dict[str, str]]]:
    """Per example file, the questions the demo model answers about it, with their true answers."""
    return json.loads((INPUTS / "questions.json").read_text())


def _examples(suffix: str) -> list[str]:
    return sorted(name for name in questions() if name.endswith(suffix))


def _question_text(name: str) -> str:
    return "\n".join(f"{q['question']}  (true answer: {q['answer']})" for q in questions()[name])


def _checked(name: str, names: list[str], node: str) -> Path:
    if name not in names:
        raise ValueError(f"{node}: example must be one of {', '.join(names)}; got {name!r}")
    path = INPUTS / name
    if not path.is_file():
        raise ValueError(
            f"{node}: example {name!r} is missing from the pack ({path}): restore it with git checkout, or reinstall the pack"
        )
    return path


def _file_state(name: str) -> str:
    """Changes when the file does, so ComfyUI re-runs the node (and notices a missing file) instead of reusing its cache."""
    path = INPUTS / name
    return str(path.stat().st_mtime_ns) if path.is_file() else "missing"


class ExampleImage:
    """A scene image for the demo model, and the first question it answers about it."""

    CATEGORY = "iLLaVA/examples"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "STRING", "STRING")
    RETURN_NAMES = ("image", "question", "questions")
    OUTPUT_TOOLTIPS = ("The scene as a ComfyUI IMAGE.", "A question the demo model was trained on.", "Every question about it, with the true answers.")
    DESCRIPTION = "A synthetic scene from the demo model's test split (shipped with the pack), for the example workflows."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"example": (_examples(".png"), {"tooltip": "A scene shipped in example_workflows/inputs."})}}

    @classmethod
    def IS_CHANGED(cls, example: str) -> str:
        return _file_state(example)

    def load(self, example: str) -> tuple[torch.Tensor, str, str]:
        path = _checked(example, _examples(".png"), "iLLaVA Example Image")
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels)[None], questions()[example][0]["question"], _question_text(example)


class ExampleVideo:
    """A scene video for the demo model, and the question it answers about it."""

    CATEGORY = "iLLaVA/examples"
    FUNCTION = "load"
    RETURN_TYPES = ("VIDEO", "STRING", "STRING")
    RETURN_NAMES = ("video", "question", "questions")
    OUTPUT_TOOLTIPS = ("The clip as ComfyUI's VIDEO (what Load Video gives).", "A question the demo model was trained on.", "Every question about it, with the true answers.")
    DESCRIPTION = "A synthetic clip (2 frames per second) from the demo model's test split, shipped with the pack."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {"example": (_examples(".mp4"), {"tooltip": "A clip shipped in example_workflows/inputs."})}}

    @classmethod
    def IS_CHANGED(cls, example: str) -> str:
        return _file_state(example)

    def load(self, example: str) -> tuple[object, str, str]:
        path = _checked(example, _examples(".mp4"), "iLLaVA Example Video")
        return comfy_compat.video_from_file(str(path)), questions()[example][0]["question"], _question_text(example)
