import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import illava
from illava.__main__ import main
from illava.captioning.styles import caption_prompt


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "illava", *args], capture_output=True, text=True, timeout=300,
        env=None if env is None else {**os.environ, **env},
    )


def test_caption_json_matches_the_library(model_dirs, images, tmp_path, qwen25):
    paths = []
    for i, image in enumerate(images[:2]):
        paths += ["--image", str(tmp_path / f"{i}.png")]
        image.save(tmp_path / f"{i}.png")
    done = run_cli(
        "caption", "--model", model_dirs["qwen2_5_vl"], *paths, "--prompt", "Compare them.",
        "--stage1-layer", "2", "--stage1-keep", "0.5", "--stage2-layer", "2", "--stage2-keep", "0.5",
        "--max-new-tokens", "5", "--dtype", "fp32", "--device", "cpu", "--json",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    tokens = record["stats"]["visual_tokens"]
    assert set(tokens) == {"vit_input", "vit_output", "llm_input", "llm_after_stage2", "llm_input_full"}
    assert tokens["vit_output"] < tokens["llm_input_full"] and tokens["llm_after_stage2"] < tokens["llm_input"]
    assert record["stats"]["prefill_s"] > 0 and record["stats"]["decode_s"] >= 0
    config = illava.MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)
    visuals = illava.encode(qwen25, [str(tmp_path / "0.png"), str(tmp_path / "1.png")], config)
    expected = illava.generate(qwen25, visuals, "Compare them.", config, illava.GenerationOptions(max_new_tokens=5))
    assert record["ids"] == expected.ids[0]
    assert record["text"] == expected.texts[0]


def test_presets_and_errors(model_dirs, images, tmp_path):
    images[0].save(tmp_path / "a.png")
    done = run_cli("caption", "--model", model_dirs["qwen2_vl"], "--image", str(tmp_path / "a.png"),
                   "--preset", "fast", "--max-new-tokens", "2", "--json")
    assert done.returncode == 0, done.stderr
    tokens = json.loads(done.stdout.strip().splitlines()[-1])["stats"]["visual_tokens"]
    assert tokens["llm_after_stage2"] < tokens["llm_input_full"]
    missing = run_cli("caption", "--model", str(tmp_path / "none"), "--image", str(tmp_path / "a.png"))
    assert missing.returncode == 2 and "does not exist: check the path" in missing.stderr
    bad = run_cli("caption", "--model", model_dirs["qwen2_vl"], "--image", str(tmp_path / "a.png"), "--stage2-keep", "2")
    assert bad.returncode == 2 and "--stage2-keep must be in (0, 1]" in bad.stderr and "stage2_keep" not in bad.stderr
    layers = run_cli("caption", "--model", model_dirs["qwen2_vl"], "--image", str(tmp_path / "a.png"), "--stage2-layer", "9")
    assert layers.returncode == 2 and "--stage2-layer contains 9" in layers.stderr
    helped = run_cli("caption", "--help")
    text = " ".join(helped.stdout.split())
    assert helped.returncode == 0 and "(default: 0.33)" in text and "else detailed-caption" in text
    assert "Describe this image." not in text


def test_caption_a_video(model_dirs, video_file):
    done = run_cli("caption", "--model", model_dirs["qwen2_5_vl"], "--video", video_file, "--fps", "4",
                   "--preset", "paper-video", "--max-new-tokens", "2", "--json")
    assert done.returncode == 0, done.stderr
    tokens = json.loads(done.stdout.strip().splitlines()[-1])["stats"]["visual_tokens"]
    assert tokens["llm_input_full"] == 80 and tokens["llm_after_stage2"] < tokens["llm_input"] < 80
    nothing = run_cli("caption", "--model", model_dirs["qwen2_5_vl"])
    assert nothing.returncode == 2 and "give at least one --image or a --video" in nothing.stderr


def test_calibrate_writes_a_profile_that_caption_auto_uses(model_dirs, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_text("not an image")
    store = {"ILLAVA_PROFILE_DIR": str(tmp_path / "store")}
    done = run_cli("calibrate", "--model", model_dirs["qwen2_5_vl"], "--images", str(folder), "--prompt", "What is it?",
                   "--budgets", "0.5", "--dtype", "fp32", "--device", "cpu", env=store)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stderr and "broken.png" in done.stderr
    assert "| image | 50% |" in done.stdout and "profile written to" in done.stdout
    assert len(list((tmp_path / "store").glob("*.json"))) == 1
    caption = run_cli("caption", "--model", model_dirs["qwen2_5_vl"], "--image", str(folder / "0.png"), "--prompt", "Hi",
                      "--budget", "0.5", "--max-new-tokens", "2", "--dtype", "fp32", "--device", "cpu", "--json", env=store)
    assert caption.returncode == 0, caption.stderr
    assert "auto at work 0.50: the image settings calibrated for work 0.50 (merge profile " in caption.stderr
    assert "; work 0.4" in caption.stderr and "estimated ViT + prefill speedup" in caption.stderr
    bad = run_cli("calibrate", "--model", model_dirs["qwen2_5_vl"], "--images", str(folder), "--budgets", "1.5", env=store)
    assert bad.returncode == 2 and "budgets must be fractions in (0, 1]" in bad.stderr


def caption(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m illava caption ARGS`` in this process (a fixture model loads in well under a second)."""
    code = main(["caption", *args, "--max-new-tokens", "2", "--dtype", "fp32", "--device", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_caption_styles_choose_the_prompt_the_model_is_asked(capsys, model_dirs, images, tmp_path, qwen25):
    images[0].save(tmp_path / "a.png")
    model, image = model_dirs["qwen2_5_vl"], str(tmp_path / "a.png")
    code, out, err = caption(capsys, "--model", model, "--image", image, "--preset", "off", "--json")
    record = last_json(out)
    assert code == 0, err
    assert record["style"] == "detailed caption" and record["prompt"] == caption_prompt("detailed caption")
    assert record["inputs"] == [image] and record["prompt"] in err
    visuals = illava.encode(qwen25, [image])
    asked = illava.generate(qwen25, visuals, record["prompt"], options=illava.GenerationOptions(max_new_tokens=2))
    assert record["ids"] == asked.ids[0]
    for flags, style, prompt in (
        (["--style", "short-caption"], "short caption", caption_prompt("short caption")),
        (["--prompt", "What is it?"], "question", "What is it?"),
        (["--style", "custom", "--prompt", "Name the {kind}'s colours."], "custom", "Name the image's colours."),
    ):
        code, out, err = caption(capsys, "--model", model, "--image", image, *flags, "--json")
        assert code == 0, err
        assert (last_json(out)["style"], last_json(out)["prompt"]) == (style, prompt)


@pytest.mark.parametrize("flags, message", [
    (["--style", "custom"], "--style 'custom' takes its text from --prompt, which is empty"),
    (["--prompt", " "], "--style 'question' takes its text from --prompt, which is empty"),
    (["--style", "tags", "--prompt", "Hi"], "--prompt is read only by --style question or custom, not tags"),
    (["--style", "video-summary"], "needs a video input"),
])
def test_caption_style_errors_name_the_flags_before_the_model_loads(capsys, tmp_path, flags, message):
    code, out, err = caption(capsys, "--model", str(tmp_path / "not-loaded"), "--image", "a.png", *flags)
    assert code == 2 and message in err and "does not exist" not in err


def test_per_image_results_name_their_input_and_carry_their_own_timings(capsys, model_dirs, images, tmp_path, qwen25):
    paths = []
    for i, image in enumerate(images[:2]):
        image.save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    code, out, err = caption(capsys, "--model", model_dirs["qwen2_5_vl"], "--image", paths[0], "--image", paths[1],
                             "--prompt", "What is it?", "--preset", "off", "--per-image", "--json")
    assert code == 0, err
    results = last_json(out)["results"]
    assert [record["input"] for record in results] == paths
    for path, record in zip(paths, results):
        alone = illava.generate(qwen25, illava.encode(qwen25, [path]), "What is it?",
                                options=illava.GenerationOptions(max_new_tokens=2))
        assert record["ids"] == alone.ids[0]
        assert record["stats"]["visual_tokens"] == alone.stats[0]["visual_tokens"]
        assert f"[{path}: visual tokens:" in err
    timings = [tuple(record["stats"][key] for key in ("vit_s", "prefill_s", "decode_s")) for record in results]
    assert timings[0] != timings[1]


def test_a_peer_method_alone_runs_at_its_usual_placement(capsys, model_dirs, images, tmp_path, qwen25):
    images[0].save(tmp_path / "a.png")
    model, image = model_dirs["qwen2_5_vl"], str(tmp_path / "a.png")
    code, out, err = caption(capsys, "--model", model, "--image", image, "--method", "tome", "--json")
    assert code == 0, err
    record = last_json(out)
    tokens, config = record["stats"]["visual_tokens"], record["stats"]["config"]
    assert config["method"] == "tome" and config["stage1_layers"] == list(range(1, qwen25.backbone.vit_depth + 1))
    assert tokens["vit_output"] < tokens["llm_input_full"]
    assert "[tome: its usual placement (every-encoder-block), work 0.3" in err and "--stage1-layer 1,2,3,4 --stage1-keep" in err
    code, out, err = caption(capsys, "--model", model, "--image", image, "--method", "fastv", "--budget", "0.5",
                             "--stage2-keep", "0.25", "--json")
    assert code == 0, err
    tokens, config = (last_json(out)["stats"][key] for key in ("visual_tokens", "config"))
    assert config["method"] == "fastv" and config["stage2_layers"] and config["stage2_keep"] == 0.25
    assert tokens["llm_after_stage2"] < tokens["llm_input"] == tokens["llm_input_full"]


def test_an_image_too_small_for_one_merge_group_is_warned_about(capsys, model_dirs, images, tmp_path, qwen25):
    images[0].save(tmp_path / "big.png")
    images[0].resize((8, 8)).save(tmp_path / "tiny.png")
    side = math.isqrt(qwen25.backbone.smallest_image_pixels(qwen25.processor))
    assert side == 28  # Qwen2.5-VL: 14-pixel patches, merged 2x2
    code, out, err = caption(capsys, "--model", model_dirs["qwen2_5_vl"], "--image", str(tmp_path / "big.png"),
                             "--image", str(tmp_path / "tiny.png"), "--per-image")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1
    assert str(tmp_path / "tiny.png") in warnings[0] and "8x8 pixels" in warnings[0] and f"{side}x{side}" in warnings[0]


def test_max_pixels_lowers_the_token_count_and_a_bad_one_names_its_flag(model_dirs, images, tmp_path, capsys):
    from illava.__main__ import main

    path = tmp_path / "picture.png"
    images[0].save(path)
    counts = []
    for max_pixels in (0, 56 * 56):
        assert main(["caption", "--model", model_dirs["qwen2_5_vl"], "--image", str(path), "--max-pixels", str(max_pixels),
                     "--max-new-tokens", "2", "--json", "--device", "cpu"]) == 0
        counts.append(json.loads(capsys.readouterr().out.splitlines()[-1])["stats"]["visual_tokens"]["llm_input_full"])
    assert counts[1] < counts[0]
    assert main(["caption", "--model", model_dirs["qwen2_5_vl"], "--image", str(path), "--max-pixels", "-5"]) == 2
    assert "error: --max-pixels must be an integer >= 0" in capsys.readouterr().err


def test_caption_loads_quantized_and_says_the_weights_memory(model_dirs, images, tmp_path, capsys):
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("accelerate")
    from illava.__main__ import main

    path = tmp_path / "picture.png"
    images[0].save(path)
    for quantization in ("none", "4-bit"):
        assert main(["caption", "--model", model_dirs["qwen2_5_vl"], "--image", str(path), "--quantization", quantization,
                     "--max-new-tokens", "2", "--device", "cpu", "--dtype", "fp32"]) == 0
        err = capsys.readouterr().err
        assert "qwen2_5_vl, weights " in err and ("(4-bit)" in err) == (quantization == "4-bit")
