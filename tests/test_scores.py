"""The scores iLLaVA ranks tokens by equal eager attention's probabilities on the same input."""

import sys

import pytest
import torch

import illava
from illava.methods import encoder_scorer


@pytest.fixture(params=["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def eager_lvlm(request, model_dirs):
    return illava.load(model_dirs[request.param], device="cpu", dtype="fp32", attn_implementation="eager")


def _vanilla_inputs(lvlm, images, prompts):
    processor = lvlm.processor
    texts = []
    for prompt in prompts:
        content = [{"type": "image"}, {"type": "text", "text": prompt}]
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
    return processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side="left")


@pytest.mark.parametrize("layer", [1, 3])
def test_stage2_scores_equal_eager_attention_rows(eager_lvlm, images, layer):
    lvlm = eager_lvlm
    inputs = _vanilla_inputs(lvlm, images[:2], ["Short.", "A much longer question about this picture?"])
    text_model = lvlm.backbone.language_model
    captured = {}
    # The layer's true input (Qwen3-VL adds DeepStack features between layers, after the recorded states).
    hook = text_model.layers[layer].register_forward_pre_hook(lambda module, args: captured.setdefault("hidden", args[0]))
    try:
        out = lvlm.model(**inputs, output_attentions=True)
    finally:
        hook.remove()
    n = inputs["input_ids"].shape[1]
    # The last prompt token (iLLaVA, FastV, PyramidDrop) and two earlier text tokens (SparseVLM's raters).
    slots = torch.tensor([[n - 1, n - 3, n - 6]] * 2)
    expected = out.attentions[layer][:, :, slots[0], :].mean(dim=1)
    kwargs = {k: inputs[k] for k in ("attention_mask", "mm_token_type_ids", "image_grid_thw")}
    positions = lvlm.backbone.position_ids(inputs["input_ids"], kwargs)
    hidden = captured["hidden"]
    rotary = text_model.rotary_emb(hidden, positions[1:])
    key_mask = inputs["attention_mask"].bool()
    got = lvlm.backbone.query_scores(text_model.layers[layer], hidden, rotary, key_mask, slots)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert torch.all(got[0][:, ~key_mask[0]] == 0) and torch.all(got[:, 1, n - 2 :] == 0)


def test_stage1_scores_equal_eager_attention_received(eager_lvlm, images, monkeypatch):
    lvlm = eager_lvlm
    visual = lvlm.backbone.visual
    module = sys.modules[type(visual).__module__]
    weights = []

    def recording_eager(*args, **kwargs):
        output, attention = eager(*args, **kwargs)
        if "hidden" in captured and "done" not in captured:
            weights.append(attention)
        return output, attention

    eager = module.eager_attention_forward
    monkeypatch.setattr(module, "eager_attention_forward", recording_eager)
    block_index = 1  # a full-attention block in both tiny encoders
    captured = {}

    def capture(block, args, kwargs):
        captured["hidden"] = args[0]
        captured["kwargs"] = kwargs

    def capture_qkv(module, args, out):
        if "done" not in captured:
            captured["qkv"] = out

    block = visual.blocks[block_index]
    hooks = [
        block.register_forward_pre_hook(capture, with_kwargs=True),
        block.register_forward_hook(lambda *_: captured.update(done=True)),
        block.attn.qkv.register_forward_hook(capture_qkv),
    ]
    processed = lvlm.processor.image_processor(images=images[:2], return_tensors="pt")
    grid = processed["image_grid_thw"]
    try:
        visual(processed["pixel_values"], grid_thw=grid)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(weights) == grid.shape[0], "one full-attention call per image"
    expected = torch.cat([w[0].mean(dim=(0, 1)) for w in weights])
    expected_groups = expected.reshape(-1, 4).sum(-1)
    kwargs = captured["kwargs"]
    got = lvlm.backbone.group_scores(
        block.attn, captured["qkv"], kwargs["position_embeddings"], kwargs["cu_seqlens"], encoder_scorer("illava", chunk=37)
    )
    torch.testing.assert_close(got, expected_groups, rtol=0, atol=1e-5)
