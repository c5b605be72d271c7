"""Encode Image, Generate and Preview Retained Tokens on a tiny model, called as ComfyUI calls them."""

from __future__ import annotations

import dataclasses
import os
import tempfile

import pytest
import torch

from nodes_harness import run_node, widget_defaults


class Interrupted(Exception):
    """Stands in for ComfyUI's InterruptProcessingException."""


@pytest.fixture
def nodes(mappings):
    return mappings


def config_choice(nodes, preset="paper image"):
    node = nodes["iLLaVA_MergeConfig"]
    (choice,), _ = run_node(node, **{**widget_defaults(node), "preset": preset})
    return choice


def encode(nodes, lvlm, image, config=None):
    (visuals,), ui = run_node(nodes["iLLaVA_EncodeImage"], lvlm=lvlm, image=image, config=config)
    return visuals, ui


def generate(nodes, lvlm, visuals, **changes):
    node = nodes["iLLaVA_Generate"]
    inputs = {**widget_defaults(node), "lvlm": lvlm, "visuals": visuals, "max_new_tokens": 6, **changes}
    return run_node(node, **inputs)


def test_encode_applies_stage_one_and_shows_counts(nodes, lvlm, images):
    visuals, ui = encode(nodes, lvlm, images, config_choice(nodes))
    counts = visuals.counts()
    assert len(visuals.items) == 2
    assert counts["vit_output"] < counts["llm_input_full"]
    text = ui["text"][0]
    assert text.startswith("2 images:")
    assert f"{counts['llm_input_full']} visual tokens -> {counts['vit_output']} after stage 1" in text


def test_encode_without_config_keeps_every_token(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images[:1])
    counts = visuals.counts()
    assert counts["vit_output"] == counts["llm_input_full"] > 0
    assert visuals.config.is_off


@pytest.mark.parametrize("bad", [torch.zeros((0, 64, 64, 3)), torch.zeros((64, 64, 3)), None])
def test_encode_rejects_a_missing_or_empty_batch(nodes, lvlm, bad):
    with pytest.raises(ValueError) as caught:
        encode(nodes, lvlm, bad)
    assert str(caught.value).splitlines()[0].startswith("Connect")


def test_generate_outputs_text_stats_and_trace(nodes, lvlm, images):
    from illava_pack.illava.trace import ItemTrace

    visuals, _ = encode(nodes, lvlm, images, config_choice(nodes))
    (text, texts, stats, trace), ui = generate(nodes, lvlm, visuals, per_image=False)
    assert isinstance(text, str) and texts == [text]
    assert ui["text"] == [text] and ui["stats"] == [stats]
    assert "after stage 2" in stats and "new tokens: " in stats
    assert len(trace) == 2 and all(isinstance(t, ItemTrace) and t.stage2 is not None for t in trace)


def test_per_image_gives_one_text_per_image_plus_the_joined_text(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images, config_choice(nodes))
    (text, texts, stats, trace), _ = generate(nodes, lvlm, visuals, per_image=True)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert text == "\n\n".join(texts)
    assert "prompts: 2" in stats


def test_greedy_is_reproducible_and_ignores_the_seed(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images[:1])
    first = generate(nodes, lvlm, visuals, seed=1)[0]
    second = generate(nodes, lvlm, visuals, seed=2)[0]
    assert first[0] == second[0]


def test_sampling_uses_the_seed(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images[:1])
    options = dict(sampling="sample", temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=12)
    runs = {seed: generate(nodes, lvlm, visuals, seed=seed, **options)[0][0] for seed in (1, 2, 3)}
    assert generate(nodes, lvlm, visuals, seed=1, **options)[0][0] == runs[1]
    assert len(set(runs.values())) > 1


def test_merging_changes_the_prefill_but_not_the_api(nodes, lvlm, images):
    off, _ = encode(nodes, lvlm, images[:1], config_choice(nodes, "off"))
    on, _ = encode(nodes, lvlm, images[:1], config_choice(nodes, "fast"))
    stats_off = generate(nodes, lvlm, off)[0][2]
    stats_on = generate(nodes, lvlm, on, config=config_choice(nodes, "fast"))[0][2]
    assert stats_off != stats_on
    assert "(100%) -> " in stats_off.splitlines()[0]


def test_generate_reports_progress_per_token(nodes, lvlm, images, monkeypatch):
    from illava_pack.nodes import comfy_compat

    seen = []

    class Recorder:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None):
            seen.append((value, total))

    monkeypatch.setattr(comfy_compat, "progress_bar", Recorder)
    visuals, _ = encode(nodes, lvlm, images[:1])
    (_, _, stats, _), _ = generate(nodes, lvlm, visuals, max_new_tokens=5)
    steps = [value for value, _ in seen]
    assert steps[-1] == 5 and steps[:-1] == list(range(1, len(steps)))


def test_cancel_stops_generation_and_the_model_stays_usable(nodes, lvlm, images, monkeypatch):
    from illava_pack.nodes import comfy_compat
    from illava_pack.nodes.handle import SharedModel

    def unremembered():
        """A handle on the same model object with nothing remembered, so every answer is computed."""
        return dataclasses.replace(lvlm, shared=SharedModel(lvlm=lvlm.shared.lvlm, patcher=lvlm.shared.patcher))

    visuals, _ = encode(nodes, lvlm, images, config_choice(nodes))
    before = generate(nodes, unremembered(), visuals, max_new_tokens=8)[0]
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted()

    monkeypatch.setattr(comfy_compat, "check_interrupt", interrupt)
    with pytest.raises(Interrupted):
        generate(nodes, unremembered(), visuals, max_new_tokens=8)
    monkeypatch.undo()
    after = generate(nodes, unremembered(), visuals, max_new_tokens=8)[0]
    assert after[0] == before[0] and after[2].splitlines()[:2] == before[2].splitlines()[:2]


def test_keep_loaded_off_releases_after_generate(nodes, lvlm, images, monkeypatch):
    from illava_pack.nodes import comfy_compat

    released = []
    monkeypatch.setattr(comfy_compat, "release", released.append)
    visuals, _ = encode(nodes, lvlm, images[:1])
    generate(nodes, lvlm, visuals)
    assert released == []
    generate(nodes, dataclasses.replace(lvlm, keep_loaded=False), visuals)
    assert released == [lvlm.shared.patcher]


def test_generate_without_visuals_names_the_fix(nodes, lvlm):
    with pytest.raises(ValueError) as caught:
        generate(nodes, lvlm, None)
    assert str(caught.value).startswith("Connect Encode Image's visuals output to Generate")


def test_generate_rejects_visuals_from_another_model(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images[:1])
    foreign = dataclasses.replace(visuals, model_id="other|torch.float16|cuda:0")
    with pytest.raises(ValueError, match="^Encode the images with the same Load LVLM"):
        generate(nodes, lvlm, foreign)


def test_empty_prompt_names_the_fix(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images[:1])
    with pytest.raises(ValueError, match="^Generate: style 'question' takes its text from prompt, which is empty"):
        generate(nodes, lvlm, visuals, prompt="   ")


def test_preview_shows_stage_one_then_both_stages(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images, config_choice(nodes))
    trace = generate(nodes, lvlm, visuals)[0][3]
    node = nodes["iLLaVA_PreviewTokens"]
    (only_stage1,), ui1 = run_node(node, visuals=visuals)
    (both,), ui2 = run_node(node, visuals=visuals, trace=trace)
    assert only_stage1.shape[0] == 2 and both.shape[0] == 4
    assert both.dtype == torch.float32 and both.shape[-1] == 3
    assert 0.0 <= float(both.min()) and float(both.max()) <= 1.0
    assert not torch.equal(both[0], both[1]), "stage-2 map should differ from stage-1 map"
    assert len(ui2["images"]) == 4
    for entry in ui1["images"] + ui2["images"]:
        assert entry["type"] == "temp"


def test_preview_images_are_written(nodes, lvlm, images):
    visuals, _ = encode(nodes, lvlm, images[:1], config_choice(nodes))
    (_,), ui = run_node(nodes["iLLaVA_PreviewTokens"], visuals=visuals)
    path = os.path.join(tempfile.gettempdir(), "illava_preview", ui["images"][0]["filename"])
    assert os.path.getsize(path) > 0


def test_preview_rejects_a_trace_of_other_visuals(nodes, lvlm, images):
    two, _ = encode(nodes, lvlm, images, config_choice(nodes))
    one, _ = encode(nodes, lvlm, images[:1], config_choice(nodes))
    trace = generate(nodes, lvlm, two)[0][3]
    with pytest.raises(ValueError, match="^Connect the trace of the Generate that used these visuals"):
        run_node(nodes["iLLaVA_PreviewTokens"], visuals=one, trace=trace)
