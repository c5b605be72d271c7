"""Small random-weight models of the real architectures, saved as ordinary Hugging Face folders.

Tests, the demo and the benchmark build their models here: nothing can be downloaded, so a model is
made from a config (transformers' own class), given a byte-level tokenizer and a processor, and
written with ``save_pretrained`` so that it loads through exactly the code a real checkpoint uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import text as synthetic_text
from .text import CHAT_TEMPLATE, SPECIAL_TOKENS, byte_level_tokenizer, set_generation_ids


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


ARCHES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "llava_onevision", "internvl", "minicpmv")
QWEN3_PATCH = 16
TINY_TEXT = TextDims(64, 128, 4, 4, 2, (2, 3, 3))
TINY_VISION = VisionDims(4, 32, 64, 2, window_size=56, fullatt_block_indexes=(1, 3))


def model_config(arch: str, text: TextDims, vision: VisionDims, tokenizer, initializer_range: float = 0.02):
    """(config, model class) of an ``arch`` model with these dimensions over ``tokenizer``'s special tokens."""
    if arch == "llava_onevision":
        from . import llava_onevision as synthetic_llava_onevision

        return synthetic_llava_onevision.model_config(text, vision, tokenizer, initializer_range)
    if arch == "internvl":
        from . import internvl as synthetic_internvl

        return synthetic_internvl.model_config(text, vision, tokenizer, initializer_range)
    if arch == "minicpmv":
        from . import minicpmv as synthetic_minicpmv

        return synthetic_minicpmv.model_config(text, vision, tokenizer, initializer_range)
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    im_end = ids["<|im_end|>"]
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": list(text.mrope_section)}
    text_config = synthetic_text.text_config(text, tokenizer, im_end, initializer_range, rope_parameters=rope)
    special = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=text.tie_word_embeddings,
    )
    if arch == "qwen2_5_vl":
        vision_config = dict(
            depth=vision.depth,
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_heads=vision.num_heads,
            out_hidden_size=text.hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=vision.window_size,
            # A shortened encoder keeps the full-attention blocks it still has, and at least its last.
            fullatt_block_indexes=[i for i in vision.fullatt_block_indexes if i < vision.depth] or [vision.depth - 1],
            tokens_per_second=2,
            initializer_range=initializer_range,
        )
        config = Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **special)
        model_cls = Qwen2_5_VLForConditionalGeneration
    elif arch == "qwen2_vl":
        vision_config = dict(
            depth=vision.depth,
            embed_dim=vision.hidden_size,
            hidden_size=text.hidden_size,
            mlp_ratio=vision.intermediate_size // vision.hidden_size,
            num_heads=vision.num_heads,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=initializer_range,
        )
        config = Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **special)
        model_cls = Qwen2VLForConditionalGeneration
    elif arch == "qwen3_vl":
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        text_config["head_dim"] = text.hidden_size // text.num_attention_heads
        text_config["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": list(text.mrope_section),
            "mrope_interleaved": True,
        }
        vision_config = dict(
            depth=vision.depth,
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_heads=vision.num_heads,
            out_hidden_size=text.hidden_size,
            patch_size=QWEN3_PATCH,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, vision.depth // 2],
            initializer_range=initializer_range,
        )
        config = Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **special)
        model_cls = Qwen3VLForConditionalGeneration
    else:
        raise ValueError(f"arch must be one of {', '.join(ARCHES)}, got {arch!r}")
    return set_generation_ids(config, im_end, initializer_range), model_cls


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
    """Write a random-weight ``arch`` model (one of ``ARCHES``) with tokenizer and processor to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if arch == "llava_onevision":
        from .llava_onevision import tokenizer as llava_onevision_tokenizer

        tokenizer = llava_onevision_tokenizer()
    elif arch == "internvl":
        from .internvl import tokenizer as internvl_tokenizer

        tokenizer = internvl_tokenizer()
    elif arch == "minicpmv":
        from .minicpmv import tokenizer as minicpmv_tokenizer

        tokenizer = minicpmv_tokenizer()
    else:
        tokenizer = byte_level_tokenizer()
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
    """The processor class ``arch``'s real checkpoints ship, over ``tokenizer``, with these pixel limits."""
    if arch == "llava_onevision":
        from . import llava_onevision as synthetic_llava_onevision

        return synthetic_llava_onevision.processor(tokenizer)
    if arch == "internvl":
        from . import internvl as synthetic_internvl

        return synthetic_internvl.processor(tokenizer)
    if arch == "minicpmv":
        from . import minicpmv as synthetic_minicpmv

        return synthetic_minicpmv.processor(tokenizer)
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen2VLProcessor, Qwen3VLProcessor

    patch = QWEN3_PATCH if arch == "qwen3_vl" else 14
    image_processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch)
    video_processor = _video_processor(arch, min_pixels, max_pixels, patch)
    processor_cls = {"qwen2_5_vl": Qwen2_5_VLProcessor, "qwen2_vl": Qwen2VLProcessor, "qwen3_vl": Qwen3VLProcessor}[arch]
    return processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def _video_processor(arch: str, min_pixels: int, max_pixels: int, patch: int):
    """Qwen's torchvision-based video processor, or None where torchvision is missing."""
    try:
        from transformers import Qwen2VLVideoProcessor, Qwen3VLVideoProcessor
    except ImportError:
        return None
    if arch == "qwen3_vl":
        return Qwen3VLVideoProcessor(size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, patch_size=patch)
    return Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
