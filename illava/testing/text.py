"""Tokenizer and text-model pieces that every synthetic model of ``illava.testing`` builds alike."""

from __future__ import annotations

from typing import Any

SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def byte_vocab() -> dict[str, int]:
    """``<|endoftext|>`` then the 256 byte-level symbols: a vocabulary that spells any text without merges."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<|endoftext|>": 0}
    for symbol in bytes_to_unicode().values():
        vocab[symbol] = len(vocab)
    return vocab


def named_token_tokenizer(named_tokens: dict[str, str], chat_tokens: list[str], chat_template: str):
    """A byte-level Qwen2 tokenizer whose vision tokens are also attributes (``named_tokens``: name to token).

    Named special tokens can only be given when the tokenizer is made, so this is not ``byte_level_tokenizer``.
    """
    from transformers import Qwen2Tokenizer

    out = Qwen2Tokenizer(vocab=byte_vocab(), merges=[], extra_special_tokens=named_tokens)
    out.add_special_tokens({"additional_special_tokens": chat_tokens}, replace_extra_special_tokens=False)
    out.chat_template = chat_template
    return out


def text_config(text, tokenizer, eos_token_id: int, initializer_range: float, **extra: Any) -> dict[str, Any]:
    """The text-model config of ``text``'s dimensions: a 32k context, bos and pad 0, ``extra`` on top."""
    return dict(
        vocab_size=text.vocab_size or len(tokenizer),
        hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size,
        num_hidden_layers=text.num_hidden_layers,
        num_attention_heads=text.num_attention_heads,
        num_key_value_heads=text.num_key_value_heads,
        max_position_embeddings=32768,
        bos_token_id=0,
        eos_token_id=eos_token_id,
        pad_token_id=0,
        initializer_range=initializer_range,
        tie_word_embeddings=text.tie_word_embeddings,
    ) | extra


def set_generation_ids(config, eos_token_id: int, initializer_range: float):
    """``config`` with the top-level initializer range and eos / pad ids that generation and init read."""
    config.initializer_range = initializer_range
    config.eos_token_id = eos_token_id
    config.pad_token_id = 0
    return config


def byte_level_tokenizer(special_tokens: list[str] = SPECIAL_TOKENS, chat_template: str = CHAT_TEMPLATE):
    """A Qwen2 tokenizer over the 256 byte-level symbols plus chat and vision special tokens (Qwen's by default)."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(vocab=byte_vocab(), merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": special_tokens})
    tokenizer.chat_template = chat_template
    return tokenizer
