"""iLLaVA: two-stage visual token merging for vision-language models in transformers.

``load`` a model folder, ``encode`` images or a video (stage 1 runs in the vision encoder), then
``generate`` (stage 2 runs inside the language model's prefill). Importing the package changes
nothing process-wide; models are read from local folders only.
"""

__version__ = "0.1.0"

from .captioning.styles import CAPTION_STYLES, caption_prompt
from .config import PRESETS, MergeConfig, Resolution, preset
from .generation import Generation, GenerationOptions, Stats, generate, generate_batch
from .loading import LVLM, ModelFolderError, load
from .resolve import auto_config, resolve
from .encoding import VisualItem, VisualTokens, encode

__all__ = [
    "__version__",
    "CAPTION_STYLES",
    "LVLM",
    "Generation",
    "GenerationOptions",
    "MergeConfig",
    "ModelFolderError",
    "PRESETS",
    "Resolution",
    "Stats",
    "VisualItem",
    "VisualTokens",
    "auto_config",
    "caption_prompt",
    "encode",
    "generate",
    "generate_batch",
    "load",
    "preset",
    "resolve",
]
