"""Calibration and merge profiles: the fidelity measure, budgets, determinism, and profiles that are
found, refused, repaired or missing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import illava
from helpers import extended_inputs, random_image
from illava import MergeConfig
from illava.calibrate import CalibrationInput, _Search, calibrate, read_inputs
from illava.stage2 import Stage2, installed
from illava.resolve import auto_config
from illava.profiles import (
    PROFILE_NAME,
    MergeProfile,
    ProfileError,
    model_identity,
    read_profile,
    write_profile,
)

CONFIG = MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5, stage2_recycled=1)
PROMPTS = ("Describe it.", "What is here?", "List the colours.", "Tell a story.", "Name one thing.")
BUDGETS = (0.5, 0.25)


@pytest.fixture(scope="module")
def inputs():
    """Three 448x448 images (256 tokens each, so budgets can be met to the point) with prompts."""
    return [CalibrationInput(f"image {i}", PROMPTS[i], (random_image(i, 448, 448),)) for i in range(3)]


@pytest.fixture(scope="module")
def report(qwen25, inputs):
    return calibrate(qwen25, inputs, BUDGETS, max_new_tokens=3)


def _fresh_logits(lvlm, item: CalibrationInput, config: MergeConfig, answer: list[int]) -> torch.Tensor:
    """One uncached forward over the (reduced) prompt plus the answer: the logits at each answer step
    (the last prompt position and each answer token's)."""
    visuals = illava.encode(lvlm, list(item.images), config)
    prompt, fresh = extended_inputs(lvlm, [(visuals.items, item.prompt)], torch.tensor([answer], dtype=torch.long))
    n = prompt["input_ids"].shape[1]
    stage2 = None
    if config.stage2_active:
        stage2 = Stage2(lvlm.backbone, config, fresh["mm_token_type_ids"] != 0, score_position=n - 1)
    with torch.inference_mode(), installed(lvlm.backbone, stage2):
        # Stage 2 shortens the sequence inside the model: the answer steps are the last ones.
        return lvlm.model(**fresh).logits[0, -(len(answer) + 1) :].float()


def test_the_fidelity_measure_equals_an_independent_recomputation(qwen25, inputs):
    search = _Search(qwen25, inputs, max_new_tokens=3, batch_size=2, check_interrupt=None, kl_tolerance=0.0)
    placeholders = {qwen25.model.config.image_token_id, qwen25.model.config.video_token_id}
    assert not any(placeholders & set(answer) for answer in search.answers), "an answer holds a placeholder id"
    measured = search.measure(CONFIG)
    kls, kept = [], []
    for i, item in enumerate(inputs):
        steps = search.steps[i]
        reference = _fresh_logits(qwen25, item, MergeConfig(), search.answers[i])[:steps].log_softmax(-1)
        merged = _fresh_logits(qwen25, item, CONFIG, search.answers[i])[:steps].log_softmax(-1)
        kl = torch.nn.functional.kl_div(merged, reference, log_target=True, reduction="none").sum(-1).mean()
        kls.append(float(kl))
        kept.append(bool(torch.equal(reference.argmax(-1), merged.argmax(-1))))
    assert measured.kl == pytest.approx(sum(kls) / len(kls), abs=1e-4)
    assert measured.agreement == sum(kept) / len(kept)
    assert measured.kl > 0, "a real reduction should move the distributions a little"


def test_each_chosen_configuration_spends_its_budget(qwen25, inputs, report):
    entries = report.profile.entries["image"]
    assert [entry.budget for entry in entries] == list(BUDGETS)
    for entry in entries:
        works = []
        for item in inputs:
            visuals = illava.encode(qwen25, list(item.images), entry.config)
            result = illava.generate(qwen25, visuals, item.prompt, entry.config, illava.GenerationOptions(max_new_tokens=1))
            works.append(result.stats[0]["work"])
        measured = sum(works) / len(works)
        assert abs(measured - entry.budget) <= 0.02, (entry.budget, measured, entry.config)
        assert measured == pytest.approx(entry.work)
        assert 0 < entry.token_fraction < 1


def test_calibration_is_deterministic(qwen25, inputs, report):
    again = calibrate(qwen25, inputs, BUDGETS, max_new_tokens=3)
    assert again.profile.to_dict()["entries"] == report.profile.to_dict()["entries"]


def test_profiles_round_trip(tmp_path, report):
    path = write_profile(report.profile, tmp_path / "profile.json")
    assert read_profile(path, report.profile.identity) == report.profile
    assert MergeProfile.from_dict(json.loads(path.read_text())) == report.profile
    assert not list(tmp_path.glob("*.partial"))


@pytest.fixture
def model_copy(tmp_path, model_dirs):
    """A private copy of the tiny Qwen2.5-VL folder, to put profiles in."""
    return shutil.copytree(model_dirs["qwen2_5_vl"], tmp_path / "model")


def test_a_profile_in_the_model_folder_is_found_and_used(model_copy, report):
    profile = MergeProfile(model_identity(model_copy), report.profile.entries, report.profile.calibration, "test")
    write_profile(profile, model_copy / PROFILE_NAME)
    lvlm = illava.load(model_copy, device="cpu", dtype="fp32")
    assert lvlm.profile == profile
    config = auto_config(lvlm, 0.25, "image")
    expected = profile.entries["image"][-1].config
    assert (config.stage1_layers, config.stage2_layers) == (expected.stage1_layers, expected.stage2_layers)
    assert "calibrated" in config.origin


def test_the_users_own_profile_wins_over_the_one_the_folder_ships(model_copy, report, tmp_path, monkeypatch):
    identity = model_identity(model_copy)
    shipped = MergeProfile(identity, report.profile.entries, {"description": "shipped"}, "test")
    own = MergeProfile(identity, {"image": report.profile.entries["image"][:1]}, {"description": "own"}, "test")
    write_profile(shipped, model_copy / PROFILE_NAME)
    monkeypatch.setenv("ILLAVA_PROFILE_DIR", str(tmp_path / "store"))
    write_profile(own, tmp_path / "store" / f"{identity}.json")
    lvlm = illava.load(model_copy, device="cpu", dtype="fp32")
    assert lvlm.profile == own and str(tmp_path / "store") in lvlm.profile_note
    assert str(tmp_path / "store") in auto_config(lvlm, 0.5, "image").origin


def test_a_profile_of_another_model_is_refused_with_a_clear_message(model_copy, report, model_dirs):
    other = MergeProfile(model_identity(model_dirs["qwen2_vl"]), report.profile.entries, {}, "test")
    write_profile(other, model_copy / PROFILE_NAME)
    with pytest.raises(ProfileError, match="fitted to another model"):
        read_profile(model_copy / PROFILE_NAME, model_identity(model_copy))
    lvlm = illava.load(model_copy, device="cpu", dtype="fp32")
    assert lvlm.profile is None and "fitted to another model" in lvlm.profile_note
    assert "fitted to another model" in auto_config(lvlm, 0.33, "image").origin


@pytest.mark.parametrize(
    "text",
    ["{not json", json.dumps({"format": 2, "identity": "x"}), "EDITED"],
    ids=["corrupt", "incomplete", "hand-edited"],
)
def test_a_broken_profile_gives_a_clear_note_and_the_fallback(model_copy, report, text):
    if text == "EDITED":
        data = MergeProfile(model_identity(model_copy), report.profile.entries, {}, "test").to_dict()
        data["entries"]["image"][0]["config"]["stage2_keep"] = 7
        text = json.dumps(data)
    (model_copy / PROFILE_NAME).write_text(text)
    lvlm = illava.load(model_copy, device="cpu", dtype="fp32")
    assert lvlm.profile is None and "unreadable or malformed" in lvlm.profile_note
    config = auto_config(lvlm, 0.33, "image")
    assert "paper-image preset" in config.origin and config.stage2_active


def test_auto_without_a_profile_falls_back_and_says_so(qwen25, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLAVA_PROFILE_DIR", str(tmp_path))
    assert qwen25.profile is None
    config = auto_config(qwen25, 0.33, "video")
    assert "no merge profile" in config.origin and "paper-video preset scaled to the budget" in config.origin
    assert "at work 0.33" in config.origin
    result = illava.generate(qwen25, illava.encode(qwen25, random_image(0, 112, 112), config), "Hi", config,
                             illava.GenerationOptions(max_new_tokens=1))
    assert result.stats[0]["config"]["origin"] == config.origin


def test_a_profile_of_token_budgets_is_refused_with_a_note_to_calibrate_again(model_copy, report):
    data = MergeProfile(model_identity(model_copy), report.profile.entries, {}, "test").to_dict()
    data["format"] = 1
    (model_copy / PROFILE_NAME).write_text(json.dumps(data))
    lvlm = illava.load(model_copy, device="cpu", dtype="fp32")
    assert lvlm.profile is None
    assert "counts its budgets in visual tokens" in lvlm.profile_note and "calibrate again" in lvlm.profile_note
    assert "calibrate again" in auto_config(lvlm, 0.33, "image").origin


@pytest.mark.parametrize("budget", [0, -0.1, 1.5, float("nan"), True])
def test_a_budget_outside_zero_to_one_is_refused(qwen25, inputs, budget):
    with pytest.raises(ValueError, match=r"budget must be in \(0, 1\]"):
        auto_config(qwen25, budget, "image")
    with pytest.raises(ValueError, match=r"budget must be in \(0, 1\]"):
        calibrate(qwen25, inputs[:1], [budget])


def test_no_inputs_is_a_clear_error(qwen25):
    with pytest.raises(ValueError, match="at least one image or video"):
        calibrate(qwen25, [])


def test_an_unreadable_file_is_skipped_and_named(tmp_path):
    good = tmp_path / "good.png"
    random_image(0, 64, 64).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    inputs, skipped = read_inputs([str(good), str(bad)], [str(tmp_path / "missing.mp4")], "What is it?")
    assert [i.name for i in inputs] == [str(good)] and inputs[0].prompt == "What is it?"
    assert len(skipped) == 2 and str(bad) in skipped[0] and "missing.mp4" in skipped[1]


def test_an_interrupt_stops_the_search(qwen25, inputs):
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(qwen25, inputs[:1], BUDGETS, max_new_tokens=2, check_interrupt=interrupt)
    assert len(calls) == 4
