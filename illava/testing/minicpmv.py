"""A small random-weight MiniCPM-V 4.6 (SigLIP NaViT encoder + Qwen3.5 text), for ``synthetic.build_model_folder``.

Patches are 14 pixels; the encoder's window merger fuses 2x2 patches after its second layer and the
final merger fuses 2x2 of those, so an LLM token stands for 4x4 patches (the model's "16x" mode).
Images are resized to at most 168x168 pixels (12x12 patches, 9 tokens) and sliced into up to four
slices of that size, as MiniCPM-V's slicing does at 448 pixels. The text model mixes linear-attention
(Gated DeltaNet) and full-attention layers, as Qwen3.5 does.
"""

from __future__ import annotations

from .fixture import Fixture
from .text import named_token_tokenizer, set_generation_ids, text_config

PATCH = 14
SLICE = 168
MAX_SLICES = 4
INSERT_LAYER = 1
LAYER_TYPES = ("linear_attention", "full_attention", "linear_attention", "full_attention")
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
# MiniCPM-V's processor finds its markers by these tokenizer attribute names.
NAMED_TOKENS = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "image_start_token": "<image>",
    "image_end_token": "</image>",
    "slice_start_token": "<slice>",
    "slice_end_token": "</slice>",
    "image_id_start_token": "<image_id>",
    "image_id_end_token": "</image_id>",
}

# Each image or video of the user turn, then a newline, in content order (Qwen-style turns).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|image_pad|>\n{% elif content['type'] == 'video' %}<|video_pad|>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer():
    """A byte-level Qwen2 tokenizer with MiniCPM-V's named image, slice and id tokens and chat tokens."""
    return named_token_tokenizer(NAMED_TOKENS, CHAT_TOKENS, CHAT_TEMPLATE)


def model_config(text, vision, tokenizer, initializer_range: float = 0.02):
    """(config, model class) with a MiniCPM-V encoder of ``vision``'s size and a Qwen3.5 text model of ``text``'s."""
    from transformers import MiniCPMV4_6Config, MiniCPMV4_6ForConditionalGeneration

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    head_dim = text.hidden_size // text.num_attention_heads
    config = MiniCPMV4_6Config(
        vision_config=dict(
            hidden_size=vision.hidden_size,
            intermediate_size=vision.intermediate_size,
            num_hidden_layers=vision.depth,
            num_attention_heads=vision.num_heads,
            patch_size=PATCH,
            image_size=SLICE,
            initializer_range=initializer_range,
        ),
        text_config=text_config(
            text,
            tokenizer,
            im_end,
            initializer_range,
            model_type="qwen3_5_text",
            num_hidden_layers=len(LAYER_TYPES),
            layer_types=list(LAYER_TYPES),
            head_dim=head_dim,
            linear_num_key_heads=2,
            linear_num_value_heads=4,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "partial_rotary_factor": 0.5,
                "mrope_section": [2, 1, 1],
            },
        ),
        insert_layer_id=INSERT_LAYER,
        image_size=SLICE,
        image_token_id=tokenizer.image_token_id,
        video_token_id=tokenizer.video_token_id,
        downsample_mode="16x",
        tie_word_embeddings=text.tie_word_embeddings,
    )
    return set_generation_ids(config, im_end, initializer_range), MiniCPMV4_6ForConditionalGeneration


def processor(tokenizer):
    """``MiniCPMV4_6Processor`` slicing at ``SLICE`` pixels into up to ``MAX_SLICES`` slices, over ``tokenizer``."""
    from transformers import MiniCPMV4_6ImageProcessor, MiniCPMV4_6Processor, MiniCPMV4_6VideoProcessor

    sizes = dict(scale_resolution=SLICE, max_slice_nums=MAX_SLICES, patch_size=PATCH)
    return MiniCPMV4_6Processor(
        image_processor=MiniCPMV4_6ImageProcessor(**sizes),
        video_processor=MiniCPMV4_6VideoProcessor(**sizes),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


FIXTURES = {"minicpmv": Fixture(tokenizer, model_config, lambda tokenizer_, min_pixels, max_pixels: processor(tokenizer_))}
