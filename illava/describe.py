"""What a model folder holds, without loading its weights: depths, usable stage-2 layers, merge profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .backbones import Backbone, backbone_for
from .loading import ModelFolderError, check_model_folder
from .profiles import MergeProfile, find_profile


@dataclass(frozen=True)
class ModelOutline:
    """A model folder's adapter over an empty model, and its merge profile: what a preset or ``auto``
    (``resolve``) reads from a loaded ``LVLM``, for a process that never loads the weights (a Ray driver)."""

    path: Path
    model_type: str
    backbone: Backbone
    processor: Any
    profile: MergeProfile | None
    profile_note: str


@dataclass(frozen=True)
class ModelInfo:
    """A model's merge-relevant shape: what a settings readout needs before the model is loaded."""

    model_type: str
    vit_depth: int
    llm_depth: int
    stage2_choices: tuple[int, ...] | None
    profile_budgets: dict[str, tuple[float, ...]]
    profile_note: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "vit_depth": self.vit_depth,
            "llm_depth": self.llm_depth,
            "stage2_choices": list(self.stage2_choices) if self.stage2_choices is not None else None,
            "profile": {kind: list(budgets) for kind, budgets in self.profile_budgets.items()} or None,
            "profile_note": self.profile_note,
        }


def outline_model(path: str | Path, profile_stores: Sequence[str | Path] = ()) -> ModelOutline:
    """Read ``path``'s config into an empty (meta-device) model of its transformers class, so the backbone
    adapter reports the true depths; nothing is loaded onto a device and no weights are read. The profile is
    found as ``load`` finds it."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    folder = Path(path)
    check_model_folder(folder)
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # noqa: BLE001 - any failure inside transformers becomes one clear message
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFolderError(f"could not read the model config in {str(folder)!r}: {first}") from error
    profile, note = find_profile(folder, profile_stores)
    return ModelOutline(folder, config.model_type, backbone_for(model), processor, profile, note)


def describe_model(path: str | Path, profile_stores: Sequence[str | Path] = ()) -> ModelInfo:
    """The depths, usable stage-2 layers and profile budgets of ``path`` (``outline_model``: no weights read)."""
    outline = outline_model(path, profile_stores)
    backbone, profile = outline.backbone, outline.profile
    budgets = {kind: tuple(entry.budget for entry in entries) for kind, entries in profile.entries.items()} if profile else {}
    return ModelInfo(
        model_type=outline.model_type,
        vit_depth=backbone.vit_depth,
        llm_depth=backbone.llm_depth,
        stage2_choices=backbone.stage2_choices,
        profile_budgets=budgets,
        profile_note=outline.profile_note,
    )
