"""A small random-weight LLaVA-OneVision (SigLIP + Qwen2), for ``synthetic.build_model_folder``.

Tiles are 70 pixels, 5x5 SigLIP tokens: an odd side like the real 27x27, so video pooling
(5 -> 3 cells a side) overlaps as it does at full size. The pinpoints allow grids of up to 2x2 and
1x3 tiles, so wide, tall and square images take different anyres paths.
"""

from __future__ import annotations

from .fixture import Fixture
from .text import byte_level_tokenizer, set_generation_ids, text_config

QWEN2_ROPE = {"rope_type": "default", "rope_theta": 1e6}
TILE = 70
PATCH = 14
PINPOINTS = [[70, 70], [70, 140], [140, 70], [140, 140], [70, 210], [210, 70]]
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<image>", "<video>"]

# LLaVA-OneVision's own chat format: the user turn lists its images / video first, each followed by a newline.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<image>\n{% elif content['type'] == 'video' %}<video>\n{% endif %}"
    "{% endfor %}{% for content in message['content'] %}"
    "{% if content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer():
    """The byte-level tokenizer with LLaVA-OneVision's chat and image / video tokens."""

    return byte_level_tokenizer(SPECIAL_TOKENS, CHAT_TEMPLATE)


def model_config(text, vision, tokenizer, initializer_range: float = 0.02):
    """(config, model class) with a SigLIP of ``vision``'s size and a Qwen2 of ``text``'s."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
    )

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    im_end = ids["<|im_end|>"]
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_hidden_layers=vision.depth,
            num_attention_heads=vision.num_heads,
            patch_size=PATCH,
            image_size=TILE,
            vision_use_head=False,
        ),
        text_config=text_config(
            text, tokenizer, im_end, initializer_range, model_type="qwen2", rope_parameters=QWEN2_ROPE
        ),
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=text.tie_word_embeddings,
    )
    return set_generation_ids(config, im_end, initializer_range), LlavaOnevisionForConditionalGeneration


def processor(tokenizer):
    """``LlavaOnevisionProcessor`` with 70-pixel tiles over ``tokenizer``."""
    from transformers import (
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    size = {"height": TILE, "width": TILE}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(size=size, image_grid_pinpoints=PINPOINTS),
        tokenizer=tokenizer,
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        num_image_tokens=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
    )


FIXTURES = {"llava_onevision": Fixture(tokenizer, model_config, lambda tokenizer_, min_pixels, max_pixels: processor(tokenizer_))}
