"""Load LVLM's catalogue entries: listed after the local folders, downloaded into models/LLM only when
picked and run (against a stand-in hub on 127.0.0.1), then listed and used as a local folder."""

from __future__ import annotations

import pytest

from hub_server import HubServer, point_client_at
from nodes_harness import run_node, validation_errors, widget_defaults

REPO = "Qwen/Qwen2.5-VL-3B-Instruct"


@pytest.fixture
def models_dir(pack, tmp_path, monkeypatch):
    """An empty models/LLM, the only model folder registered, where downloads go."""
    from illava_pack.nodes import comfy_compat

    root = tmp_path / "models" / "LLM"
    root.mkdir(parents=True)
    monkeypatch.setattr(comfy_compat, "_fallback_roots", {"LLM": [str(root)], "VLM": []})
    monkeypatch.setattr(comfy_compat, "default_model_folder", lambda: str(root))
    return root


@pytest.fixture
def hub(tmp_path_factory, monkeypatch, tmp_path, pack):
    from illava_pack.illava.testing.models import build_model_folder

    source = build_model_folder(tmp_path_factory.mktemp("hub") / "tiny", arch="qwen2_5_vl")
    server = HubServer({REPO: source})
    point_client_at(monkeypatch, tmp_path, server.url)
    yield server
    server.close()


@pytest.fixture
def progress(pack, monkeypatch):
    """What the node drew on ComfyUI's progress bar: (value, total) pairs."""
    from illava_pack.nodes import comfy_compat

    drawn = []

    class Bar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None):
            drawn.append((value, self.total))

    monkeypatch.setattr(comfy_compat, "progress_bar", Bar)
    return drawn


def model_list(node) -> list[str]:
    return node.INPUT_TYPES()["required"]["model"][0]


def test_picking_a_catalogue_entry_downloads_it_once_and_loads_it(mappings, models_dir, hub, progress):
    node = mappings["iLLaVA_LoadLVLM"]
    choice = next(c for c in model_list(node) if c.startswith("download: Qwen2.5-VL-3B-Instruct ("))
    assert choice == "download: Qwen2.5-VL-3B-Instruct (7.5 GB, needs ~9.3 GB)"
    assert validation_errors(node, {**widget_defaults(node), "model": choice}) == []
    assert not hub.log, "listing and validating must not touch the network"

    inputs = {**widget_defaults(node), "model": choice, "device": "cpu"}
    (handle,), _ = run_node(node, **inputs)
    folder = models_dir / "Qwen2.5-VL-3B-Instruct"
    assert (folder / "model.safetensors").is_file() and handle.shared.lvlm.path == folder
    assert progress and progress[-1][0] == progress[-1][1]
    assert [p.name for p in models_dir.iterdir()] == ["Qwen2.5-VL-3B-Instruct"]

    listed = model_list(node)
    assert "Qwen2.5-VL-3B-Instruct" in listed and choice not in listed
    requests = len(hub.log)
    run_node(node, **inputs)  # a workflow saved with the download entry keeps working, without a download
    assert len(hub.log) == requests


def test_a_failed_download_is_a_clear_error_and_lists_nothing(mappings, models_dir, hub, progress):
    node = mappings["iLLaVA_LoadLVLM"]
    hub.faults["model.safetensors"] = ["500"]
    choice = next(c for c in model_list(node) if c.startswith("download: Qwen2.5-VL-3B-Instruct"))
    with pytest.raises(OSError, match=f"answered 500 for model.safetensors of {REPO}"):
        run_node(node, **{**widget_defaults(node), "model": choice, "device": "cpu"})
    assert choice in model_list(node) and "Qwen2.5-VL-3B-Instruct" not in model_list(node)


def test_a_missing_folder_named_like_a_catalogue_entry_offers_the_download(mappings, models_dir):
    message = mappings["iLLaVA_LoadLVLM"].VALIDATE_INPUTS("Qwen2.5-VL-3B-Instruct")
    assert "pick 'download: Qwen2.5-VL-3B-Instruct (7.5 GB" in message
