"""iLLaVA Calibrate as ComfyUI calls it: a profile saved and used by auto, Cancel writing nothing, clear errors."""

from __future__ import annotations

import pytest
import torch

from nodes_harness import run_node, widget_defaults


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


@pytest.fixture
def store(tmp_path, monkeypatch, lvlm):
    """The per-user profile store, pointed at a temporary folder (never the real home); the shared
    model gets its profile back afterwards, since the other node tests share it."""
    monkeypatch.setenv("ILLAVA_PROFILE_DIR", str(tmp_path))
    before = lvlm.shared.lvlm
    yield tmp_path
    lvlm.shared.lvlm = before


@pytest.fixture
def batch():
    """Three 448x448 images, as one ComfyUI IMAGE batch."""
    return torch.rand((3, 448, 448, 3), generator=torch.Generator().manual_seed(1))


def calibrate(mappings, lvlm, **inputs):
    node = mappings["iLLaVA_Calibrate"]
    return run_node(node, **{**widget_defaults(node), "lvlm": lvlm, "budgets": "0.5", **inputs})


def test_calibrate_saves_a_profile_that_auto_then_uses(mappings, lvlm, batch, store):
    config_node, caption_node = mappings["iLLaVA_MergeConfig"], mappings["iLLaVA_Caption"]
    before = (config_node.IS_CHANGED(preset="auto"), caption_node.IS_CHANGED(budget=0.33))
    (table, chart), ui = calibrate(mappings, lvlm, images=batch)
    saved = list(store.glob("*.json"))
    assert len(saved) == 1 and str(saved[0]) in table and "| image | 50% |" in table
    assert chart.ndim == 4 and chart.shape[-1] == 3 and ui["images"]
    model = lvlm.acquire()
    assert model.profile is not None and model.profile.identity == saved[0].stem
    (choice,), _ = run_node(config_node, **{**widget_defaults(config_node), "preset": "auto", "budget": 0.5})
    assert "calibrated" in choice.resolve(model, "image").origin
    # ComfyUI re-runs the cached nodes that use auto (and what they feed) on the next queue.
    assert config_node.IS_CHANGED(preset="auto") != before[0] and caption_node.IS_CHANGED(budget=0.33) != before[1]
    assert config_node.IS_CHANGED(preset="off") == "" and caption_node.IS_CHANGED(budget=1.0) == ""


def test_cancel_during_the_search_writes_nothing(mappings, lvlm, batch, store, monkeypatch):
    from illava_pack.nodes import comfy_compat

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 2:
            raise Interrupted

    monkeypatch.setattr(comfy_compat, "check_interrupt", interrupt)
    with pytest.raises(Interrupted):
        calibrate(mappings, lvlm, images=batch)
    assert not list(store.iterdir())


@pytest.mark.parametrize(
    ("inputs", "message"),
    [({}, "Connect images"), ({"prompt": "  "}, "Write a prompt")],
    ids=["no inputs", "empty prompt"],
)
def test_bad_input_names_the_node_and_field(mappings, lvlm, batch, store, inputs, message):
    extra = {} if "prompt" not in inputs else {"images": batch}
    with pytest.raises(ValueError, match=message):
        calibrate(mappings, lvlm, **inputs, **extra)


def test_bad_budgets_fail_validation(mappings):
    node = mappings["iLLaVA_Calibrate"]
    assert "budgets must be fractions" in node.VALIDATE_INPUTS(budgets="0.5, 2")
    assert "budgets must be fractions" in node.VALIDATE_INPUTS(budgets="half")
    assert node.VALIDATE_INPUTS(budgets="0.5, 0.33") is True
