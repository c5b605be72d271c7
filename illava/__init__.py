"""iLLaVA: two-stage visual token merging for vision-language models in transformers.

``load`` a model folder, ``encode`` images or a video (stage 1 runs in the vision encoder), then
``generate`` (stage 2 runs inside the language model's prefill). Importing the package changes
nothing process-wide; models are read from local folders only.
"""

__version__ = "0.1.0"

from .config import PRESETS, MergeConfig, preset
from .generation import Generation, GenerationOptions, Stats, generate, generate_batch
from .loading import LVLM, ModelFolderError, load
from .profiles import auto_config
from .visuals import VisualItem, VisualTokens, encode

__all__ = [
    "__version__",
    "LVLM",
    "Generation",
    "GenerationOptions",
    "MergeConfig",
    "ModelFolderError",
    "PRESETS",
    "Stats",
    "VisualItem",
    "VisualTokens",
    "auto_config",
    "encode",
    "generate",
    "generate_batch",
    "load",
    "preset",
]
