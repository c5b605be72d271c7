"""The demo model's word-level tokenizer, its Qwen2.5-VL processor and the freshly initialised model."""

from __future__ import annotations

import argparse

from illava.lab import scenes
from illava.testing.text import CHAT_TEMPLATE, SPECIAL_TOKENS

IMAGE_MIN_PIXELS, IMAGE_MAX_PIXELS = 56 * 56, 224 * 224
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 56 * 56, 160 * 160
UNKNOWN = "<unk>"
PAD = "<|endoftext|>"


def build_tokenizer():
    """A word-level fast tokenizer: Qwen's special tokens, then every word the scenes can use."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0}
    for token in SPECIAL_TOKENS + [UNKNOWN]:
        vocab[token] = len(vocab)
    for word in scenes.vocabulary():
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNKNOWN, pad_token=PAD, eos_token="<|im_end|>", model_max_length=32768
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(tokenizer):
    """Qwen2.5-VL's processor with pixel limits that keep images at most 64 tokens and video frames small."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(min_pixels=IMAGE_MIN_PIXELS, max_pixels=IMAGE_MAX_PIXELS),
        video_processor=Qwen2VLVideoProcessor(min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(tokenizer, args: argparse.Namespace):
    """A freshly initialised Qwen2_5_VLForConditionalGeneration sized by ``args``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    im_end = ids["<|im_end|>"]
    head_dim = args.hidden // args.heads
    rotary = head_dim // 2
    temporal = rotary // 4
    spatial = rotary - temporal
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 3,
        num_hidden_layers=args.llm_depth,
        num_attention_heads=args.heads,
        num_key_value_heads=max(1, args.heads // 2),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": args.rope_theta,
            "mrope_section": [1] * rotary if args.interleave_rope else [temporal, spatial // 2, spatial - spatial // 2],
        },
        max_position_embeddings=4096,
        bos_token_id=0,
        eos_token_id=im_end,
        pad_token_id=0,
    )
    vision_config = dict(
        depth=args.vit_depth,
        hidden_size=args.vit_width,
        intermediate_size=args.vit_width * 4,
        num_heads=max(1, args.vit_width // 64),
        out_hidden_size=args.hidden,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=list(range(1, args.vit_depth, 2)),
        tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    config.eos_token_id = im_end
    config.pad_token_id = 0
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = 0
    model.generation_config.bos_token_id = 0
    return model
