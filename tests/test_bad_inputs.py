"""A catalogue of bad inputs: each gets a message that names the problem and the fix, and the next
valid run gives exactly the result it gave before."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import illava
from illava import GenerationOptions, MergeConfig
from illava.loading import ModelFolderError

CONFIG = MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)
PROMPT = "What is in this picture?"


def valid_run(lvlm, image):
    visuals = illava.encode(lvlm, image, CONFIG)
    return illava.generate(lvlm, visuals, PROMPT, CONFIG, GenerationOptions(max_new_tokens=4), return_logits=True)


@pytest.fixture(scope="module")
def reference(qwen25, images):
    return valid_run(qwen25, images[0])


@pytest.fixture
def still_works(qwen25, images, reference):
    """After the test body, the same valid run must give the same ids and logits as before."""
    yield
    again = valid_run(qwen25, images[0])
    assert again.ids == reference.ids
    assert torch.equal(again.logits[0], reference.logits[0])
    assert "forward" not in vars(qwen25.backbone.language_model), "stage 2 left its forward installed"


def broken_folder(model_dirs, tmp_path, change):
    folder = tmp_path / "model"
    shutil.copytree(model_dirs["qwen2_5_vl"], folder)
    change(folder)
    return folder


def _set_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


FOLDER_CASES = {
    "missing folder": (lambda f: shutil.rmtree(f), "does not exist: check the path"),
    "no config.json": (lambda f: (f / "config.json").unlink(), "has no config.json"),
    "config.json not JSON": (lambda f: (f / "config.json").write_text("{oops"), "is not valid JSON"),
    "unsupported architecture": (lambda f: _set_json(f / "config.json", model_type="bert"), "holds a 'bert' model; iLLaVA supports"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), r"has no weights: expected model\*\.safetensors"),
    "pickle weights only": (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "has only pickle weights"),
    "truncated weights": (
        lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:4096]),
        "could not load the model in",
    ),
    "missing shard": (
        lambda f: (f / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00002-of-00002.safetensors"}})),
        "missing weight shards",
    ),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "has no tokenizer files"),
    "no processor config": (lambda f: (f / "processor_config.json").unlink(), "has no image processor config"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_broken_model_folders(model_dirs, tmp_path, case, still_works):
    change, message = FOLDER_CASES[case]
    folder = broken_folder(model_dirs, tmp_path, change)
    with pytest.raises(ModelFolderError, match=message):
        illava.load(folder, device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dtype": "int4"}, "dtype must be one of auto"),
        ({"attn_implementation": "magic"}, "attn_implementation must be one of"),
        ({"device": "cuda:7"} if not torch.cuda.is_available() else {"dtype": "half-ish"}, "CUDA is not available|dtype must be"),
    ],
    ids=["dtype", "attention", "device"],
)
def test_bad_load_options(model_dirs, kwargs, message, still_works):
    with pytest.raises(ValueError, match=message):
        illava.load(model_dirs["qwen2_5_vl"], **kwargs)


def test_a_one_pixel_image_is_upscaled_by_the_processor(qwen25, still_works):
    visuals = illava.encode(qwen25, Image.new("RGB", (1, 1), (200, 10, 10)))
    assert visuals.items[0].layout.grid_thw == (1, 4, 4)


def test_a_huge_image_is_downscaled_not_loaded_into_the_model(qwen25, still_works):
    huge = Image.new("RGB", (20000, 20000), (10, 120, 200))
    visuals = illava.encode(qwen25, huge, CONFIG)
    t, h, w = visuals.items[0].layout.grid_thw
    assert h * w * 14 * 14 <= 448 * 448


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (60, 80), 128),
        Image.new("RGBA", (60, 80), (1, 2, 3, 4)),
        Image.new("I;16", (60, 80), 40000),
        np.full((60, 80), 40000, dtype=np.uint16),
        np.full((60, 80, 4), 0.5, dtype=np.float32),
    ],
    ids=["grayscale", "rgba", "16-bit PIL", "16-bit array", "float RGBA array"],
)
def test_unusual_pixel_formats_are_converted(qwen25, image, still_works):
    visuals = illava.encode(qwen25, image)
    assert visuals.items[0].tokens_kept > 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((1, 32, 32, 3), float("nan")), "contains NaN or infinite values"),
        (torch.zeros((0, 32, 32, 3)), "no images given"),
        ([], "no images given"),
        ({"not": "an image"}, "unsupported type dict"),
        ("/nowhere/cat.png", "does not exist"),
        (np.zeros((32, 32, 5)), "expected an H x W x C array with 1, 3 or 4 channels"),
        (Image.new("RGB", (3, 1200)), "aspect ratios up to 200:1; crop or pad it"),
    ],
    ids=["nan", "empty batch", "empty list", "wrong type", "missing file", "five channels", "too elongated"],
)
def test_bad_images(qwen25, bad, message, still_works):
    with pytest.raises(ValueError, match=message):
        illava.encode(qwen25, bad)


def test_a_text_file_is_not_an_image(qwen25, tmp_path, still_works):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(ValueError, match="is not a readable image"):
        illava.encode(qwen25, str(path))


def test_nothing_to_encode(qwen25, still_works):
    with pytest.raises(ValueError, match="nothing to encode: give at least one image or a video"):
        illava.encode(qwen25)


@pytest.mark.parametrize(
    "video, kwargs, message",
    [
        (torch.rand(0, 16, 16, 3), {}, "the video has no frames"),
        (torch.rand(4, 16, 16, 3), {"fps": 0.0}, "fps must be > 0"),
        (torch.rand(4, 16, 16, 3), {"max_frames": 0}, "max_frames must be >= 1"),
        ([np.zeros((16, 16, 3)), np.zeros((20, 16, 3))], {"fps": 30.0, "video_fps": 30.0}, "all frames of a video must have one size"),
        (12345, {}, "unsupported video input int"),
    ],
    ids=["zero frames", "zero fps", "zero max_frames", "mixed frame sizes", "wrong type"],
)
def test_bad_videos(qwen25, video, kwargs, message, still_works):
    with pytest.raises(ValueError, match=message):
        illava.encode(qwen25, video=video, **kwargs)


@pytest.mark.parametrize(
    "prompt, options, message",
    [
        ("", {}, "the prompt is empty"),
        ("  \n ", {}, "the prompt is empty"),
        ("x" * 40000, {}, "but this model's context holds 32768: shorten the prompt"),
        (PROMPT, {"max_new_tokens": 0}, "max_new_tokens must be an integer from 1 to 32768"),
        (PROMPT, {"max_new_tokens": 10**9}, "max_new_tokens must be an integer from 1 to 32768"),
        (PROMPT, {"temperature": 0.0, "do_sample": True}, "temperature must be in"),
        (PROMPT, {"top_p": 1.5}, "top_p must be in"),
        (PROMPT, {"min_new_tokens": 9, "max_new_tokens": 4}, "min_new_tokens must be an integer from 0 to max_new_tokens"),
    ],
    ids=["empty", "blank", "longer than the context", "zero tokens", "absurd tokens", "zero temperature", "top_p", "min over max"],
)
def test_bad_prompts_and_options(qwen25, images, prompt, options, message, still_works):
    visuals = illava.encode(qwen25, images[0])
    with pytest.raises(ValueError, match=message):
        illava.generate(qwen25, visuals, prompt, options=GenerationOptions(**options))


@pytest.mark.parametrize(
    "config, message",
    [
        (MergeConfig(stage1_layers=(5,), stage1_keep=0.5), "stage1_layers contains 5, but this model's vision encoder has 4 layers"),
        (MergeConfig(stage2_layers=(9,), stage2_keep=0.5), "stage2_layers contains 9, but this model's language model has 4 layers"),
        (illava.PRESETS["paper-image"], "stage1_layers contains 13, but this model's vision encoder has 4 layers"),
    ],
    ids=["ViT layer past the depth", "LLM layer past the depth", "a preset written for another model"],
)
def test_configs_that_do_not_fit_the_model(qwen25, images, config, message, still_works):
    with pytest.raises(ValueError, match=message):
        illava.encode(qwen25, images[0], config)


def test_visuals_from_another_model_are_refused(lvlms, images, still_works):
    visuals = illava.encode(lvlms["qwen2_vl"], images[0])
    with pytest.raises(ValueError, match="encoded by another model .* encode them again with this one"):
        illava.generate(lvlms["qwen2_5_vl"], visuals, PROMPT)


def test_a_chat_template_that_mislabels_an_input_is_named(qwen25, images, still_works, monkeypatch):
    template = qwen25.processor.chat_template
    assert "<|image_pad|>" in template
    monkeypatch.setattr(qwen25.processor, "chat_template", template.replace("<|image_pad|>", "<|video_pad|>"))
    visuals = illava.encode(qwen25, images[0])
    message = "produced 0 image and 1 video placeholders for 1 images and 0 videos; check the model's chat_template"
    with pytest.raises(ValueError, match=message):
        illava.generate(qwen25, visuals, PROMPT)


def test_interrupting_mid_decode_leaves_the_model_usable(qwen25, images, reference, still_works):
    class Interrupted(Exception):
        pass

    def interrupt(step, total, ids):
        if step == 2:
            raise Interrupted

    visuals = illava.encode(qwen25, images[0], CONFIG)
    with pytest.raises(Interrupted):
        illava.generate(qwen25, visuals, PROMPT, CONFIG, GenerationOptions(max_new_tokens=4), on_token=interrupt)


def test_nothing_reaches_the_network(model_dirs, images, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("iLLaVA tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    lvlm = illava.load(model_dirs["qwen2_vl"], device="cpu", dtype="fp32")
    result = illava.generate(lvlm, illava.encode(lvlm, images[1], CONFIG), PROMPT, CONFIG, GenerationOptions(max_new_tokens=2))
    assert len(result.ids[0]) >= 1
