import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

import illava


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
    assert helped.returncode == 0 and "(default: 0.33)" in text and "(default: Describe this image.)" in text


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
    assert "profile entry for 50% (calibrated; merge profile " in caption.stderr
    bad = run_cli("calibrate", "--model", model_dirs["qwen2_5_vl"], "--images", str(folder), "--budgets", "1.5", env=store)
    assert bad.returncode == 2 and "budgets must be fractions in (0, 1]" in bad.stderr
