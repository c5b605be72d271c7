"""iLLaVA Caption, the example inputs, resolution on Encode, the model-info route: as a user meets them."""

from __future__ import annotations

import pytest

from nodes_harness import run_node, widget_defaults


def caption(mappings, lvlm, **changes):
    node = mappings["iLLaVA_Caption"]
    return run_node(node, **{**widget_defaults(node), "lvlm": lvlm, "max_new_tokens": 4, **changes})


def test_caption_gives_one_caption_per_image_and_shows_the_prompt(mappings, lvlm, images):
    (text, texts, stats), ui = caption(mappings, lvlm, image=images, style="tags")
    assert len(texts) == 2 and text == "\n\n".join(texts)
    assert "prompt: List tags for this image" in stats and ui["stats"] == [stats]
    assert stats.splitlines()[0].startswith("visual tokens:") and "auto at work 0.33" in stats
    assert stats.splitlines()[1].startswith("work 0.") and "estimated ViT + prefill speedup" in stats


def test_caption_matches_the_chain_it_stands_for(mappings, lvlm, images):
    (text, _, stats), _ = caption(mappings, lvlm, image=images[:1], style="question", prompt="What is it?", budget=0.5)
    config_node = mappings["iLLaVA_MergeConfig"]
    (choice,), _ = run_node(config_node, **{**widget_defaults(config_node), "preset": "auto", "budget": 0.5})
    (visuals,), _ = run_node(mappings["iLLaVA_EncodeImage"], lvlm=lvlm, image=images[:1], config=choice)
    generate = mappings["iLLaVA_Generate"]
    (chain_text, _, chain_stats, _), _ = run_node(
        generate, **{**widget_defaults(generate), "lvlm": lvlm, "visuals": visuals, "prompt": "What is it?", "max_new_tokens": 4}
    )
    assert text == chain_text and stats.splitlines()[0] == chain_stats.splitlines()[0]


def test_a_budget_of_one_merges_nothing(mappings, lvlm, images):
    (_, _, stats), _ = caption(mappings, lvlm, image=images[:1], budget=1.0)
    assert stats.splitlines()[0].endswith("after stage 2 (100%)")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"style": "custom", "prompt": "  "}, "^iLLaVA Caption: style 'custom' takes its text from prompt, which is empty"),
        ({"style": "video summary"}, "^iLLaVA Caption: style 'video summary' needs a video input"),
        ({"max_pixels": 100}, "^iLLaVA Caption: max_pixels 100 is below the smallest image this model encodes"),
        ({"min_pixels": 5000, "max_pixels": 4000}, "^iLLaVA Caption: min_pixels"),
    ],
)
def test_bad_settings_name_the_node_and_field_and_the_next_run_works(mappings, lvlm, images, changes, message):
    with pytest.raises(ValueError, match=message):
        caption(mappings, lvlm, image=images[:1], **changes)
    (text, _, _), _ = caption(mappings, lvlm, image=images[:1])
    assert text.strip()


def test_caption_needs_exactly_one_input(mappings, lvlm, images, video_file):
    with pytest.raises(ValueError, match="^Connect an image .* or a video to iLLaVA Caption"):
        caption(mappings, lvlm)
    with pytest.raises(ValueError, match="^Connect an image .* or a video to iLLaVA Caption"):
        caption(mappings, lvlm, image=images, video=video_file)


def test_caption_describes_a_video(mappings, lvlm, video_file):
    (text, texts, stats), _ = caption(mappings, lvlm, video=video_file, style="video summary", max_frames=4)
    assert len(texts) == 1 and "prompt: Summarize what happens in this video" in stats and "1 video" in stats


def test_max_pixels_on_encode_lowers_the_token_count_it_shows(mappings, lvlm, images):
    node = mappings["iLLaVA_EncodeImage"]
    (full,), full_ui = run_node(node, lvlm=lvlm, image=images[:1])
    (capped,), capped_ui = run_node(node, lvlm=lvlm, image=images[:1], max_pixels=56 * 56)
    assert capped.counts()["llm_input_full"] < full.counts()["llm_input_full"]
    assert capped_ui["text"][0] != full_ui["text"][0]
    with pytest.raises(ValueError, match="^Encode Image: max_pixels 10 is below"):
        run_node(node, lvlm=lvlm, image=images[:1], max_pixels=10)


def test_example_inputs_load_with_their_questions(mappings):
    (image, question, questions), _ = run_node(mappings["iLLaVA_ExampleImage"], example="scene.png")
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3 and 0 <= image.min() and image.max() <= 1
    assert question in questions and "true answer" in questions
    (video, question, _), _ = run_node(mappings["iLLaVA_ExampleVideo"], example="scene-video.mp4")
    assert str(video).endswith("scene-video.mp4") and question.endswith("?")


def test_a_missing_example_input_says_how_to_restore_it(mappings, monkeypatch, tmp_path):
    from illava_pack.nodes import examples

    (tmp_path / "questions.json").write_text((examples.INPUTS / "questions.json").read_text())
    monkeypatch.setattr(examples, "INPUTS", tmp_path)
    before = mappings["iLLaVA_ExampleImage"].IS_CHANGED(example="scene.png")
    with pytest.raises(ValueError, match="^iLLaVA Example Image: example 'scene.png' is missing from the pack .*: restore it"):
        run_node(mappings["iLLaVA_ExampleImage"], example="scene.png")
    assert before == "missing"


def test_model_info_route_reports_the_chosen_models_depths(pack, models_root):
    from illava_pack.illava.lab.demo_model import DEMO_MODEL_NAME
    from illava_pack.nodes.routes import model_info

    status, body = model_info("tiny-qwen2_5_vl")
    assert status == 200 and body["model_type"] == "qwen2_5_vl"
    assert body["vit_depth"] >= 1 and body["llm_depth"] >= 2
    status, demo = model_info(DEMO_MODEL_NAME)
    assert status == 200 and demo["profile"]["image"]
    status, missing = model_info("no-such-model")
    assert status == 404 and "Put the model folder 'no-such-model' back" in missing["error"]


def test_the_readout_route_says_what_settings_buy_on_the_chosen_model(pack, models_root):
    from illava_pack.illava.lab.demo_model import DEMO_MODEL_NAME
    from illava_pack.nodes.routes import settings_readout

    status, body = settings_readout({"model": DEMO_MODEL_NAME, "preset": "auto", "budget": "0.33", "seed": "3"})
    lines = body["text"].splitlines()
    assert status == 200 and lines[0] == f"auto at budget 0.33 on {DEMO_MODEL_NAME}:"
    assert lines[1].startswith("1024x768 image: work 0.3") and "less work on the picture" in lines[1]
    assert lines[2].startswith("16-frame video: work 0.3") and "estimated ViT + prefill speedup" in lines[2]
    assert lines[3].startswith("image: stage 1 before encoder block") and "calibrated for work" in lines[3]
    status, body = settings_readout({"model": "tiny-qwen2_5_vl", "preset": "off"})
    assert status == 200 and "work 1.00, no work saved; estimated ViT + prefill speedup 1.0x" in body["text"]
    status, body = settings_readout({"model": "tiny-qwen2_5_vl", "preset": "custom", "stage1_layers": "9"})
    assert body["text"].startswith("invalid: iLLaVA Merge Config: stage1_layers contains 9")
    assert settings_readout({"model": "no-such-model"})[0] == 404
    status, body = settings_readout({"model": DEMO_MODEL_NAME, "preset": "fastervlm", "budget": "0.75"})
    assert status == 200 and body["text"].splitlines()[0] == f"fastervlm at budget 0.75 on {DEMO_MODEL_NAME}:"
    assert "image: stage 1 at the encoder output keeps" in body["text"]
    status, body = settings_readout({"model": DEMO_MODEL_NAME, "preset": "pyramiddrop", "budget": "0.5"})
    assert "cannot reach 0.50 there" in body["text"] and "keeps 0%" not in body["text"]


def test_a_model_removed_after_the_workflow_was_saved_is_named_at_queue_time(mappings, models_root):
    message = mappings["iLLaVA_LoadLVLM"].VALIDATE_INPUTS("Qwen2.5-VL-3B-Instruct")
    assert isinstance(message, str) and message.startswith("Put the model folder 'Qwen2.5-VL-3B-Instruct' back")
