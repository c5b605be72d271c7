"""Where the pack's own demo model lives: a small Qwen2.5-VL trained on ``illava.scenes`` questions."""

from __future__ import annotations

from pathlib import Path

from ..loading import ModelFolderError

DEMO_MODEL_NAME = "illava-scenes-qwen2.5-vl"


def shipped_models_root() -> Path:
    """The pack's ``models/`` folder, which ComfyUI's Load LVLM lists beside models/LLM.

    In a checkout it sits at the repository root; ``pip install .`` copies it into this package.
    """
    installed = Path(__file__).resolve().parent / "models"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "models"


def demo_model_folder() -> Path:
    """The shipped demo model's folder; a clear error if this copy of the pack lacks it."""
    folder = shipped_models_root() / DEMO_MODEL_NAME
    if not (folder / "config.json").is_file():
        raise ModelFolderError(
            f"The demo model is missing from {folder}: restore it from the repository (git checkout -- models), "
            f"retrain it with 'python scripts/train_demo --out {folder}', or pass --model DIR."
        )
    return folder
