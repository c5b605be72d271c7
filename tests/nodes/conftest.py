"""Fixtures for the node tests: the pack imported by path, a tiny model folder, a loaded model, images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nodes_harness import WorkflowRunner, load_pack, run_node, widget_defaults


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="session")
def mappings(pack):
    return pack.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="session")
def models_root(tmp_path_factory, pack):
    """A models/LLM folder holding one tiny random-weight Qwen2.5-VL, registered like ComfyUI would."""
    from illava_pack.illava.testing.models import build_model_folder
    from illava_pack.nodes import comfy_compat

    root = tmp_path_factory.mktemp("models") / "LLM"
    build_model_folder(root / "tiny-qwen2_5_vl", initializer_range=0.1)
    comfy_compat.add_model_root("LLM", str(root))
    return root


@pytest.fixture(scope="session")
def lvlm(mappings, models_root):
    node = mappings["iLLaVA_LoadLVLM"]
    inputs = widget_defaults(node)
    inputs.update(model="tiny-qwen2_5_vl", device="cpu")
    (handle,), _ = run_node(node, **inputs)
    return handle


@pytest.fixture(scope="session")
def images():
    """Two different 112x140 images in 0..1, as one ComfyUI IMAGE batch."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand((2, 112, 140, 3), generator=generator)


@pytest.fixture
def runner(mappings):
    return lambda extra=None: WorkflowRunner(mappings, extra or {})


@pytest.fixture
def api_workflow():
    return lambda name: json.loads((Path(__file__).parent / "workflows" / name).read_text())
