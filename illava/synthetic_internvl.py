"""A small random-weight InternVL (InternViT + Qwen2), for ``synthetic.build_model_folder``.

Tiles are 64 pixels of 8x8-pixel patches: an 8x8 patch grid plus the CLS token, pixel-shuffled
into 4x4 = 16 LLM tokens per tile. Images are cut into up to four tiles plus a thumbnail, as
InternVL's dynamic tiling does (up to twelve at full size).
"""

from __future__ import annotations

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
    """A byte-level Qwen2 tokenizer with InternVL's named image / video tokens and chat tokens.

    Built here rather than by ``synthetic.byte_level_tokenizer``: named special tokens (the
    ``start_image_token`` attribute and its kind) can only be given when the tokenizer is made.
    """
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<|endoftext|>": 0}
    for symbol in bytes_to_unicode().values():
        vocab[symbol] = len(vocab)
    out = Qwen2Tokenizer(vocab=vocab, merges=[], extra_special_tokens=NAMED_TOKENS)
    out.add_special_tokens({"additional_special_tokens": CHAT_TOKENS}, replace_extra_special_tokens=False)
    out.chat_template = CHAT_TEMPLATE
    return out


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
        text_config=dict(
            model_type="qwen2",
            vocab_size=text.vocab_size or len(tokenizer),
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            num_hidden_layers=text.num_hidden_layers,
            num_attention_heads=text.num_attention_heads,
            num_key_value_heads=text.num_key_value_heads,
            max_position_embeddings=32768,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
            bos_token_id=0,
            eos_token_id=im_end,
            pad_token_id=0,
            initializer_range=initializer_range,
            tie_word_embeddings=text.tie_word_embeddings,
        ),
        image_token_id=tokenizer.context_image_token_id,
        image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=text.tie_word_embeddings,
    )
    config.initializer_range = initializer_range
    config.eos_token_id = im_end
    config.pad_token_id = 0
    return config, InternVLForConditionalGeneration


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
