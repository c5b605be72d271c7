"""The shipped demo model loads like a real checkpoint, stays small, answers held-out questions, and runs the demo."""

from __future__ import annotations

import argparse
import re

import pytest

import illava
from illava.lab import demo_model
from illava.lab.demo import run_demo
from illava.lab.demo_model import demo_model_folder
from illava.lab.evaluate import evaluate, prior_accuracy

MAX_BYTES = 25 * 1024 * 1024
QUESTIONS = 200
# The shipped model scores 98% (image), 91% (video) and 97.5% (image pairs) on these questions
# (README), against 41%, 15.5% and 49% for always giving each question type's most common answer:
# the floors check that it still reads the visuals, with room for a few answers that flip between
# machines.
MARGIN_OVER_PRIOR = {"image": 0.53, "video": 0.71, "multi": 0.44}


@pytest.fixture(scope="module")
def demo() -> illava.LVLM:
    return illava.load(demo_model_folder(), device="cpu", dtype="auto")


def test_demo_model_is_under_25_mb():
    size = sum(path.stat().st_size for path in demo_model_folder().rglob("*") if path.is_file())
    assert size <= MAX_BYTES, f"the demo model is {size / 2**20:.1f} MiB"


def test_demo_model_is_a_qwen25_vl_with_its_own_tokenizer(demo):
    assert type(demo.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert demo.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == demo.model.config.image_token_id
    assert demo.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>") == demo.model.config.video_token_id


@pytest.mark.parametrize("kind", sorted(MARGIN_OVER_PRIOR))
def test_demo_model_answers_held_out_questions_from_the_visuals(demo, kind):
    result = evaluate(demo, kind=kind, n=QUESTIONS)
    floor = prior_accuracy(kind, QUESTIONS) + MARGIN_OVER_PRIOR[kind]
    assert result.overall.accuracy >= floor, result


def test_the_demo_runs_and_writes_maps(tmp_path, capsys):
    args = argparse.Namespace(
        model=None, out=str(tmp_path), device="cpu", dtype="auto", attention="sdpa", quantization="none", max_new_tokens=12
    )
    assert run_demo(args) == 0
    printed = capsys.readouterr().out
    assert "paper-image" in printed and "paper-video" in printed and "speedup" in printed
    assert "auto at work 0.33: the image settings calibrated for work 0.33 (merge profile shipped with the model)" in printed
    # Each line shows its work and the predicted speedup beside the measured one.
    assert re.search(r"^auto 0\.33\s+\d+\s+\d+\s+\d+\s+0\.3\d\s+\d+\.\d\dx\s+\d", printed, re.M), printed
    assert {p.name for p in tmp_path.glob("tokens-*.png")} == {
        "tokens-image-off.png", "tokens-image-auto-0.5.png", "tokens-image-auto-0.33.png", "tokens-image-paper-image.png",
        "tokens-image-fast.png", "tokens-video-off.png", "tokens-video-auto-0.5.png", "tokens-video-auto-0.33.png",
        "tokens-video-paper-video.png",
    }
    answers = re.findall(r"^  auto 0\.5\s+'[^']*' (right|wrong)$", printed, re.M)
    assert answers and set(answers) == {"right"}, "auto at half the work should answer the demo scene's questions right"


def test_a_missing_demo_model_says_how_to_restore_it(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_model, "shipped_models_root", lambda: tmp_path)
    with pytest.raises(illava.ModelFolderError, match="git checkout -- models"):
        demo_model_folder()
