"""iLLaVA: two-stage visual token merging for vision-language models in transformers."""

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
