"""Small random-weight models of the real architectures, saved as ordinary Hugging Face folders.

Tests, the demo and the benchmark build their models here: nothing can be downloaded, so a model is
made from a config (transformers' own class), given a byte-level tokenizer and a processor, and
written with ``save_pretrained`` so that it loads through exactly the code a real checkpoint uses.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .fixture import Fixture


@dataclass(frozen=True)
class TextDims:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    mrope_section: tuple[int, int, int]
    vocab_size: int | None = None
    tie_word_embeddings: bool = False


@dataclass(frozen=True)
class VisionDims:
    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = ()


TINY_TEXT = TextDims(64, 128, 4, 4, 2, (2, 3, 3))
TINY_VISION = VisionDims(4, 32, 64, 2, window_size=56, fullatt_block_indexes=(1, 3))


def fixtures() -> dict[str, Fixture]:
    """Every family's fixtures by arch, found in this package's modules (each family's ``FIXTURES``)."""
    if not _FIXTURES:
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            module = importlib.import_module(f"{__package__}.{info.name}")
            _FIXTURES.update(getattr(module, "FIXTURES", {}))
    return _FIXTURES


_FIXTURES: dict[str, Fixture] = {}


def fixture(arch: str) -> Fixture:
    """The fixture builders of ``arch``; a ValueError naming the choices for an unknown one."""
    known = fixtures()
    if arch not in known:
        raise ValueError(f"arch must be one of {', '.join(sorted(known))}, got {arch!r}")
    return known[arch]


def model_config(arch: str, text: TextDims, vision: VisionDims, tokenizer, initializer_range: float = 0.02):
    """(config, model class) of an ``arch`` model with these dimensions over ``tokenizer``'s special tokens."""
    return fixture(arch).model_config(text, vision, tokenizer, initializer_range)


def build_model_folder(
    out_dir: str | Path,
    arch: str = "qwen2_5_vl",
    text: TextDims = TINY_TEXT,
    vision: VisionDims = TINY_VISION,
    seed: int = 0,
    initializer_range: float = 0.02,
    min_pixels: int = 56 * 56,
    max_pixels: int = 448 * 448,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random-weight ``arch`` model (one of ``fixtures()``) with tokenizer and processor to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = fixture(arch).tokenizer()
    config, model_cls = model_config(arch, text, vision, tokenizer, initializer_range)
    torch.manual_seed(seed)
    model = model_cls(config).to(dtype).eval()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = 0
    model.save_pretrained(out, safe_serialization=True)
    processor_for(arch, tokenizer, min_pixels, max_pixels).save_pretrained(out)
    return out


def processor_for(arch: str, tokenizer, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448):
    """The processor class ``arch``'s real checkpoints ship, over ``tokenizer``, with these pixel limits (Qwen's;
    the tiling families cut fixed tiles)."""
    return fixture(arch).processor(tokenizer, min_pixels, max_pixels)
