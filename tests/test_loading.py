"""Loading goes through transformers' own classes, from safetensors, with errors that name the fix."""

import json
import shutil

import pytest
import torch

import illava
from illava.loading import ModelFolderError, resolve_dtype


def test_loads_the_real_classes_with_sdpa(lvlms):
    lvlm = lvlms["qwen2_5_vl"]
    assert type(lvlm.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(lvlms["qwen2_vl"].model).__name__ == "Qwen2VLForConditionalGeneration"
    assert lvlm.model.config._attn_implementation == "sdpa"
    assert lvlm.dtype == torch.float32 and next(lvlm.model.parameters()).dtype == torch.float32


def test_loads_in_bfloat16(model_dirs):
    lvlm = illava.load(model_dirs["qwen2_5_vl"], device="cpu", dtype="bf16")
    assert next(lvlm.model.parameters()).dtype == torch.bfloat16


def _copy(model_dirs, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(model_dirs["qwen2_5_vl"], target)
    return target


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist: check the path"):
        illava.load(tmp_path / "nowhere")


def test_folder_without_config(model_dirs, tmp_path):
    folder = _copy(model_dirs, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(ModelFolderError, match="has no config.json"):
        illava.load(folder)


def test_unsupported_architecture(model_dirs, tmp_path):
    folder = _copy(model_dirs, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="holds a 'llama' model; iLLaVA supports internvl, llava_onevision, minicpmv4_6, qwen2_5_vl, qwen2_vl"):
        illava.load(folder)


def test_pickle_only_weights_are_refused(model_dirs, tmp_path):
    folder = _copy(model_dirs, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match="has only pickle weights .* Convert them to .safetensors"):
        illava.load(folder)


def test_missing_shard_is_named(model_dirs, tmp_path):
    folder = _copy(model_dirs, tmp_path)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelFolderError, match=r"missing weight shards \['model-00001-of-00002.safetensors'"):
        illava.load(folder)


def test_truncated_weights_give_a_clear_error(model_dirs, tmp_path):
    folder = _copy(model_dirs, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelFolderError, match="could not load the model in"):
        illava.load(folder)


def test_bad_dtype_and_device():
    with pytest.raises(ValueError, match="dtype must be one of auto"):
        resolve_dtype("int8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available: use 'cpu' or 'auto'"):
            illava.load.__globals__["resolve_device"]("cuda")


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16)])
def test_dtype_auto_takes_bf16_only_where_the_gpu_computes_it(monkeypatch, capability, expected):
    # A T4 or V100 reports bf16 as supported (emulated); only compute capability 8+ runs it natively.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_dtype("auto", torch.device("cuda:0")) == expected


def test_flash_attention_in_fp32_is_refused_before_loading(model_dirs):
    with pytest.raises(ValueError, match="flash attention runs only in fp16 or bf16: choose dtype bf16 or fp16"):
        illava.load(model_dirs["qwen2_5_vl"], device="cpu", dtype="fp32", attn_implementation="flash_attention_2")


def test_a_static_cache_is_refused_when_stage2_prunes(qwen25, images, monkeypatch):
    monkeypatch.setattr(qwen25.model.generation_config, "cache_implementation", "static")
    config = illava.MergeConfig(stage2_layers=(2,), stage2_keep=0.5)
    visuals = illava.encode(qwen25, images[0], config)
    with pytest.raises(ValueError, match="a 'static' cache .* cannot: set it to None or 'dynamic', or clear stage2_layers"):
        illava.generate(qwen25, visuals, "Hi", config, illava.GenerationOptions(max_new_tokens=1))


def test_layers_beyond_the_model_fail_before_any_work(qwen25, images):
    with pytest.raises(ValueError, match="stage1_layers contains 9, but this model's vision encoder has 4 layers"):
        illava.encode(qwen25, images[0], illava.MergeConfig(stage1_layers=(9,), stage1_keep=0.5))


def test_empty_prompt_is_refused(qwen25, images):
    visuals = illava.encode(qwen25, images[0])
    with pytest.raises(ValueError, match="the prompt is empty"):
        illava.generate(qwen25, visuals, "   ")
