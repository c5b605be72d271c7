"""Load LVLM: listing, safe name resolution, sharing without strong references, clear errors."""

from __future__ import annotations

import gc
import json
import os

import pytest
import torch

from nodes_harness import run_node, widget_defaults


@pytest.fixture
def load_node(mappings):
    return mappings["iLLaVA_LoadLVLM"]


def load_inputs(node, **changes):
    inputs = widget_defaults(node)
    inputs.update(device="cpu", **changes)
    return inputs


def first_line(error: BaseException) -> str:
    return str(error).splitlines()[0]


def test_lists_model_folders(load_node, models_root):
    choices = load_node.INPUT_TYPES()["required"]["model"][0]
    assert "tiny-qwen2_5_vl" in choices
    assert load_node.VALIDATE_INPUTS("tiny-qwen2_5_vl") is True


def test_lists_the_shipped_demo_model(load_node):
    from illava_pack.illava.lab.demo_model import DEMO_MODEL_NAME

    assert DEMO_MODEL_NAME in load_node.INPUT_TYPES()["required"]["model"][0]
    assert load_node.VALIDATE_INPUTS(DEMO_MODEL_NAME) is True


def test_lists_two_levels_deep_and_skips_folders_without_weights(load_node, models_root, tmp_path, monkeypatch):
    from illava_pack.nodes import comfy_compat

    root = tmp_path / "VLM"
    (root / "Qwen" / "model-a").mkdir(parents=True)
    (root / "Qwen" / "model-a" / "config.json").write_text("{}")
    (root / "Qwen" / "model-a" / "model.safetensors").write_bytes(b"")
    (root / "no-weights").mkdir()
    (root / "no-weights" / "config.json").write_text("{}")
    monkeypatch.setitem(comfy_compat._fallback_roots, "VLM", [str(root)])
    choices = load_node.INPUT_TYPES()["required"]["model"][0]
    assert "Qwen/model-a" in choices
    assert "no-weights" not in choices


def test_empty_list_shows_a_hint_and_fails_validation_naming_the_folder(load_node, monkeypatch, tmp_path):
    from illava_pack.nodes import comfy_compat

    monkeypatch.setattr(comfy_compat, "_fallback_roots", {"LLM": [str(tmp_path)], "VLM": []})
    choices = load_node.INPUT_TYPES()["required"]["model"][0]
    assert choices[0].startswith("no models found") and all(c.startswith("download: ") for c in choices[1:])
    message = load_node.VALIDATE_INPUTS(choices[0])
    assert isinstance(message, str)
    assert message.splitlines()[0].startswith("Put a model folder")
    assert os.path.join("models", "LLM") in message.splitlines()[0]


@pytest.mark.parametrize("name", ["../tiny-qwen2_5_vl", "/etc", "..", "a/../../x", "C:\\models\\x"])
def test_names_that_escape_the_model_folders_are_rejected(load_node, models_root, name):
    message = load_node.VALIDATE_INPUTS(name)
    assert isinstance(message, str) and "not allowed" in message


def test_symlink_pointing_outside_is_rejected(load_node, models_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (outside / "model.safetensors").write_bytes(b"")
    link = models_root / "linked-out"
    link.symlink_to(outside, target_is_directory=True)
    try:
        assert "linked-out" not in load_node.INPUT_TYPES()["required"]["model"][0]
        message = load_node.VALIDATE_INPUTS("linked-out")
        assert isinstance(message, str) and "points outside" in message
        with pytest.raises(ValueError, match="points outside"):
            run_node(load_node, **load_inputs(load_node, model="linked-out"))
    finally:
        link.unlink()


def test_missing_model_is_a_validation_error_that_names_the_fix(load_node, models_root):
    message = load_node.VALIDATE_INPUTS("gone-model")
    assert message.startswith("Put the model folder 'gone-model' back in")


def test_incomplete_folder_gives_a_clear_error(load_node, models_root):
    folder = models_root / "incomplete"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"")
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ValueError) as caught:
        run_node(load_node, **load_inputs(load_node, model="incomplete"))
    assert first_line(caught.value).startswith("Fix or replace the model folder 'incomplete'")
    assert "missing weight shards" in first_line(caught.value)


def test_unsupported_architecture_gives_a_clear_error(load_node, models_root):
    folder = models_root / "a-llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError) as caught:
        run_node(load_node, **load_inputs(load_node, model="a-llama"))
    line = first_line(caught.value)
    assert line.startswith("Fix or replace the model folder 'a-llama'")
    assert "'llama'" in line and "qwen2_5_vl" in line


def test_loads_share_one_model_and_hold_no_strong_reference(load_node, models_root):
    from illava_pack.nodes import handle as handle_module

    inputs = load_inputs(load_node, model="tiny-qwen2_5_vl", dtype="fp32", attention="eager")
    (first,), _ = run_node(load_node, **inputs)
    (second,), _ = run_node(load_node, **{**inputs, "keep_loaded": False})
    assert first.shared is second.shared
    assert first.keep_loaded and not second.keep_loaded
    assert first.shared.lvlm.dtype == torch.float32
    key = (str(models_root / "tiny-qwen2_5_vl"), "fp32", "cpu", "eager", "none")
    assert key in handle_module._shared
    del first, second
    gc.collect()
    assert key not in handle_module._shared


def test_flash_attention_without_the_package_falls_back_with_a_warning(load_node, models_root, caplog):
    (handle,), _ = run_node(load_node, **load_inputs(load_node, model="tiny-qwen2_5_vl", attention="flash_attention_2"))
    assert "using sdpa" in caplog.text
    assert handle.shared.lvlm.model.config._attn_implementation == "sdpa"


def test_is_changed_follows_the_weights(load_node, models_root):
    before = load_node.IS_CHANGED(model="tiny-qwen2_5_vl")
    assert "config.json" in before and ".safetensors" in before
    config = models_root / "tiny-qwen2_5_vl" / "config.json"
    stat = config.stat()
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert load_node.IS_CHANGED(model="tiny-qwen2_5_vl") != before
    finally:
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_load_shows_the_model_and_its_weights_memory(load_node, models_root):
    (handle,), ui = run_node(load_node, **load_inputs(load_node, model="tiny-qwen2_5_vl", dtype="fp32"))
    summary = ui["text"][0]
    assert summary.startswith("qwen2_5_vl, ViT ") and "(float32) for cpu" in summary
    assert f"{handle.shared.lvlm.weights_bytes / 1e6:.1f} MB" in summary


def test_a_quantized_load_is_its_own_model(load_node, models_root):
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("accelerate")
    (plain,), _ = run_node(load_node, **load_inputs(load_node, model="tiny-qwen2_5_vl", dtype="fp32"))
    (four_bit,), ui = run_node(load_node, **load_inputs(load_node, model="tiny-qwen2_5_vl", dtype="fp32", quantization="4-bit"))
    assert four_bit.shared is not plain.shared and "(4-bit)" in ui["text"][0]
    assert four_bit.shared.lvlm.weights_bytes < plain.shared.lvlm.weights_bytes


def test_the_weights_go_to_comfyuis_offload_device_and_its_size_is_reported(load_node, models_root, monkeypatch):
    from illava_pack.nodes import comfy_compat, handle

    managed, placed = [], []
    load = handle.load

    def placing(*args, weights_device, **kwargs):
        # "meta" stands for the CPU beside a GPU; the weights are read straight to it, so it cannot hold them here.
        placed.append(weights_device)
        return load(*args, weights_device=None, **kwargs)

    monkeypatch.setattr(comfy_compat, "offload_device", lambda: torch.device("meta"))
    monkeypatch.setattr(handle, "load", placing)
    monkeypatch.setattr(comfy_compat, "manage_model", lambda model, device, size: managed.append((model, device, size)) or "patcher")
    monkeypatch.setattr(handle, "_shared", type(handle._shared)())
    (loaded,), _ = run_node(load_node, **load_inputs(load_node, model="tiny-qwen2_5_vl", dtype="fp32", attention="eager"))
    model, device, size = managed[0]
    assert placed == [torch.device("meta")] and device == torch.device("cpu")
    assert size == loaded.shared.lvlm.weights_bytes and loaded.shared.patcher == "patcher"
