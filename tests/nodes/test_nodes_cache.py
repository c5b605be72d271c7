"""Encode and Generate re-run only for what changes their output, whatever ComfyUI's own cache keys on."""

from __future__ import annotations

import dataclasses

import pytest

from nodes_harness import run_node, widget_defaults


@pytest.fixture
def lvlm(lvlm):
    """The session's model with nothing remembered yet."""
    from illava_pack.nodes.handle import SharedModel

    return dataclasses.replace(lvlm, shared=SharedModel(lvlm=lvlm.shared.lvlm, patcher=lvlm.shared.patcher))


@pytest.fixture
def counted(monkeypatch):
    """Counts the library encode and generate calls behind the nodes."""
    from illava_pack.nodes import encode as encode_module
    from illava_pack.nodes import run as run_module

    calls = {"encode": 0, "generate": 0}

    def counting(name, module, function):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    counting("encode", encode_module, encode_module.encode)
    counting("generate", run_module, run_module.generate)
    return calls


def chain(mappings, lvlm, image, config_values: dict, generate_values: dict):
    """Merge Config -> Encode Image -> Generate, each node run afresh as ComfyUI does when an upstream widget changes."""
    config_node = mappings["iLLaVA_MergeConfig"]
    (choice,), _ = run_node(config_node, **{**widget_defaults(config_node), **config_values})
    (visuals,), encode_ui = run_node(mappings["iLLaVA_EncodeImage"], lvlm=lvlm, image=image, config=choice)
    node = mappings["iLLaVA_Generate"]
    inputs = {**widget_defaults(node), "lvlm": lvlm, "visuals": visuals, "max_new_tokens": 4, **generate_values}
    result, ui = run_node(node, **inputs)
    return visuals, encode_ui, result


CUSTOM = {"preset": "custom", "stage1_layers": "1", "stage1_keep": 0.5, "stage2_layers": "1", "stage2_keep": 0.5}


def test_a_stage2_knob_reuses_the_encoding(mappings, lvlm, images, counted):
    first, _, answer = chain(mappings, lvlm, images[:1], CUSTOM, {})
    second, encode_ui, changed = chain(mappings, lvlm, images[:1], {**CUSTOM, "stage2_keep": 0.25}, {})
    assert counted == {"encode": 1, "generate": 2}
    assert second.items is first.items and second.config.stage2_keep == 0.25
    assert encode_ui["text"][0].startswith("1 image:")
    assert changed[2].splitlines()[0] != answer[2].splitlines()[0]


def test_a_stage1_knob_or_another_image_encodes_again(mappings, lvlm, images, counted):
    chain(mappings, lvlm, images[:1], CUSTOM, {})
    chain(mappings, lvlm, images[:1], {**CUSTOM, "stage1_keep": 0.25}, {})
    chain(mappings, lvlm, images[1:], CUSTOM, {})
    assert counted["encode"] == 3


def test_ignored_knobs_change_nothing(mappings, lvlm, images, counted):
    auto = {"preset": "auto", "budget": 0.4}
    _, _, answer = chain(mappings, lvlm, images[:1], auto, {"sampling": "greedy"})
    ignored_config = {**auto, "stage1_layers": "9", "stage2_keep": 0.9, "method": "tome"}
    ignored_sampling = {"sampling": "greedy", "temperature": 2.0, "top_p": 0.5, "top_k": 3, "seed": 7}
    _, _, again = chain(mappings, lvlm, images[:1], ignored_config, ignored_sampling)
    assert counted == {"encode": 1, "generate": 1}
    assert again[0] == answer[0] and again[2].startswith(answer[2]) and "answered from memory" in again[2]


def test_sampling_knobs_matter_when_sampling(mappings, lvlm, images, counted):
    chain(mappings, lvlm, images[:1], CUSTOM, {"sampling": "sample", "seed": 1})
    chain(mappings, lvlm, images[:1], CUSTOM, {"sampling": "sample", "seed": 2})
    assert counted == {"encode": 1, "generate": 2}


def test_encoded_tokens_wait_on_comfyuis_intermediate_device(mappings, lvlm, images, monkeypatch):
    """Neither the memo nor ComfyUI's output cache holds GPU memory once the weights are unloaded ("meta"
    stands in for the CPU beside a GPU)."""
    import torch
    from illava_pack.nodes import comfy_compat

    monkeypatch.setattr(comfy_compat, "intermediate_device", lambda: torch.device("meta"))
    (visuals,), _ = run_node(mappings["iLLaVA_EncodeImage"], lvlm=lvlm, image=images[:1])
    remembered = list(lvlm.shared.encodes._entries.values())
    assert remembered == [visuals]
    assert all(t.device.type == "meta" for item in visuals.items for t in (item.features, item.kept_groups))
