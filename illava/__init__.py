"""iLLaVA: two-stage visual token merging for vision-language models in transformers."""

import os

# Models come from local folders only: transformers and huggingface_hub must never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from .config import PRESETS, MergeConfig, preset
from .loading import LVLM, ModelFolderError, load
from .pipeline import Generation, GenerationOptions, VisualTokens, encode, generate, generate_batch

__all__ = [
    "LVLM",
    "Generation",
    "GenerationOptions",
    "MergeConfig",
    "ModelFolderError",
    "PRESETS",
    "VisualTokens",
    "encode",
    "generate",
    "generate_batch",
    "load",
    "preset",
]
