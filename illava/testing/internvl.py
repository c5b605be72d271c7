"""A small random-weight InternVL (InternViT + Qwen2), for ``synthetic.build_model_folder``.

Tiles are 64 pixels of 8x8-pixel patches: an 8x8 patch grid plus the CLS token, pixel-shuffled
into 4x4 = 16 LLM tokens per tile. Images are cut into up to four tiles plus a thumbnail, as
InternVL's dynamic tiling does (up to twelve at full size).
"""

from __future__ import annotations

from .fixture import Fixture
from .text import named_token_tokenizer, set_generation_ids, text_config

QWEN2_ROPE = {"rope_type": "default", "rope_theta": 1e6}
TILE = 64
PATCH = 8
MAX_TILES = 4
TOKENS_PER_TILE = (TILE // PATCH // 2) ** 2
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
# InternVL's processor finds its image and video tokens by these tokenizer attribute names.
NAMED_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

# InternVL's own chat format: each image or video of the user turn, then a newline, in content order.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer():
    """A byte-level Qwen2 tokenizer with InternVL's named image / video tokens (``start_image_token`` and
    its kind) and chat tokens."""
    return named_token_tokenizer(NAMED_TOKENS, CHAT_TOKENS, CHAT_TEMPLATE)


def model_config(text, vision, tokenizer, initializer_range: float = 0.02):
    """(config, model class) with an InternViT of ``vision``'s size and a Qwen2 of ``text``'s."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_hidden_layers=vision.depth,
            num_attention_heads=vision.num_heads,
            patch_size=PATCH,
            image_size=TILE,
            # The final layer norm runs (InternVL3 checkpoints skip it), so the adapter's handling of it is tested.
            use_mean_pooling=False,
            initializer_range=initializer_range,
        ),
        text_config=text_config(
            text, tokenizer, im_end, initializer_range, model_type="qwen2", rope_parameters=QWEN2_ROPE
        ),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=text.tie_word_embeddings,
    )
    return set_generation_ids(config, im_end, initializer_range), InternVLForConditionalGeneration


def processor(tokenizer):
    """``InternVLProcessor`` with 64-pixel tiles, up to ``MAX_TILES`` tiles an image, over ``tokenizer``."""
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    size = {"height": TILE, "width": TILE}
    return InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=1, max_patches=MAX_TILES),
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size=size),
        image_seq_length=TOKENS_PER_TILE,
        chat_template=CHAT_TEMPLATE,
    )


FIXTURES = {"internvl": Fixture(tokenizer, model_config, lambda tokenizer_, min_pixels, max_pixels: processor(tokenizer_))}
