"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL fixtures: a byte-level tokenizer with Qwen's special tokens, transformers'
own config classes, and the processors real checkpoints ship."""

from __future__ import annotations

from functools import partial

from . import text as synthetic_text
from .fixture import Fixture
from .text import CHAT_TEMPLATE, SPECIAL_TOKENS, byte_level_tokenizer, set_generation_ids

QWEN3_PATCH = 16


def model_config(arch: str, text, vision, tokenizer, initializer_range: float = 0.02):
    """(config, model class) of the Qwen ``arch`` with these dimensions over ``tokenizer``'s special tokens."""
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
    config, model_cls = _BUILDERS[arch](text, vision, text_config, special, initializer_range)
    return set_generation_ids(config, im_end, initializer_range), model_cls


def _qwen2_5_vl(text, vision, text_config: dict, special: dict, initializer_range: float):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vision_config = dict(
        _merger_vision(text, vision, 14, initializer_range),
        window_size=vision.window_size,
        # A shortened encoder keeps the full-attention blocks it still has, and at least its last.
        fullatt_block_indexes=[i for i in vision.fullatt_block_indexes if i < vision.depth] or [vision.depth - 1],
        tokens_per_second=2,
    )
    return Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **special), Qwen2_5_VLForConditionalGeneration


def _qwen2_vl(text, vision, text_config: dict, special: dict, initializer_range: float):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

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
    return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **special), Qwen2VLForConditionalGeneration


def _qwen3_vl(text, vision, text_config: dict, special: dict, initializer_range: float):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    text_config["head_dim"] = text.hidden_size // text.num_attention_heads
    text_config["rope_parameters"] = {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": list(text.mrope_section),
        "mrope_interleaved": True,
    }
    vision_config = dict(
        _merger_vision(text, vision, QWEN3_PATCH, initializer_range),
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, vision.depth // 2],
    )
    return Qwen3VLConfig(text_config=text_config, vision_config=vision_config, **special), Qwen3VLForConditionalGeneration


def _merger_vision(text, vision, patch: int, initializer_range: float) -> dict:
    """What Qwen2.5-VL's and Qwen3-VL's vision configs share: the widths, and a merger out to the text width."""
    return dict(
        depth=vision.depth,
        hidden_size=vision.hidden_size,
        intermediate_size=vision.intermediate_size,
        num_heads=vision.num_heads,
        out_hidden_size=text.hidden_size,
        patch_size=patch,
        spatial_merge_size=2,
        temporal_patch_size=2,
        initializer_range=initializer_range,
    )


_BUILDERS = {"qwen2_5_vl": _qwen2_5_vl, "qwen2_vl": _qwen2_vl, "qwen3_vl": _qwen3_vl}


def processor(arch: str, tokenizer, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448):
    """The processor class ``arch``'s real checkpoints ship, over ``tokenizer``, with these pixel limits."""
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


FIXTURES = {
    arch: Fixture(byte_level_tokenizer, partial(model_config, arch), partial(processor, arch))
    for arch in _BUILDERS
}
