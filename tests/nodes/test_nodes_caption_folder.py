"""iLLaVA Caption Folder: captions beside the images or into an output folder, the summary, Cancel, re-queueing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nodes_harness import run_node, widget_defaults


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i, (width, height) in enumerate(((56, 56), (84, 56), (56, 84), (70, 70), (56, 112))):
        Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


def _inputs(node, lvlm, **values):
    inputs = widget_defaults(node)
    inputs.update(lvlm=lvlm, max_new_tokens=2, batch_size=2, **values)
    return inputs


def test_captions_go_beside_the_images_and_the_summary_names_the_bad_file(mappings, lvlm, folder, monkeypatch, pack):
    from illava_pack.nodes import comfy_compat

    shown = []
    monkeypatch.setattr(comfy_compat, "send_progress_text", lambda text, node_id: shown.append(text))
    node = mappings["iLLaVA_CaptionFolder"]
    (summary,), ui = run_node(node, **_inputs(node, lvlm, folder=str(folder)))
    assert shown[-1].startswith("6 of 6 done: 5 captioned, 1 failed (")
    assert sorted(p.name for p in folder.glob("*.txt")) == [f"img{i}.txt" for i in range(5)]
    assert "Captioned 5 of 6" in summary and "broken.jpg" in summary and ui["text"] == [summary]
    errors = [json.loads(line) for line in (folder / "illava-errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == ["broken.jpg"]
    (again,), _ = run_node(node, **_inputs(node, lvlm, folder=str(folder)))
    assert "Captioned 0 of 6" in again and "5 already captioned were skipped" in again


def test_an_output_folder_is_resolved_and_cancel_keeps_the_finished_batch(mappings, lvlm, folder, tmp_path_factory, monkeypatch, pack):
    from illava_pack.nodes import comfy_compat

    node = mappings["iLLaVA_CaptionFolder"]
    out = tmp_path_factory.mktemp("captions")

    def cancel_pressed():
        raise RuntimeError("interrupted")

    monkeypatch.setattr(comfy_compat, "check_interrupt", cancel_pressed)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_node(node, **_inputs(node, lvlm, folder=str(folder), output_folder=str(out)))
    assert len(list(out.glob("*.txt"))) == 2 and not list(folder.glob("*.txt"))
    monkeypatch.setattr(comfy_compat, "check_interrupt", lambda: None)
    (summary,), _ = run_node(node, **_inputs(node, lvlm, folder=str(folder), output_folder=str(out)))
    assert "Captioned 3 of 6" in summary and "2 already captioned" in summary
    assert comfy_compat.output_path("x/y").endswith("illava-output/x/y")


def test_re_queueing_re_scans_the_folder(mappings, folder):
    node = mappings["iLLaVA_CaptionFolder"]
    before = node.IS_CHANGED(folder=str(folder), output_folder="")
    assert node.IS_CHANGED(folder=str(folder), output_folder="") == before
    (folder / "img0.txt").write_text("a caption")
    assert node.IS_CHANGED(folder=str(folder), output_folder="") != before


def test_a_missing_folder_names_the_node_and_field(mappings, lvlm, tmp_path):
    node = mappings["iLLaVA_CaptionFolder"]
    with pytest.raises(ValueError, match="^iLLaVA Caption Folder: folder is empty"):
        run_node(node, **_inputs(node, lvlm, folder=" "))
    with pytest.raises(ValueError, match="^iLLaVA Caption Folder: folder .* is not a folder"):
        run_node(node, **_inputs(node, lvlm, folder=str(tmp_path / "nowhere")))
