"""Shared fixtures: tiny random-weight models of the real architectures, saved and loaded for real."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Merge profiles a test calibrates go to a store of the test run's own, never the user's, gone after the run.
os.environ["ILLAVA_PROFILE_DIR"] = tempfile.mkdtemp(prefix="illava-profiles-")
atexit.register(shutil.rmtree, os.environ["ILLAVA_PROFILE_DIR"], ignore_errors=True)

import pytest
import torch
from PIL import Image

import illava
from helpers import TEST_DEVICE, TEST_DTYPE, random_image, write_video
from illava.testing.models import build_model_folder

ARCHES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl")


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {arch: str(build_model_folder(root / arch, arch=arch, initializer_range=0.1)) for arch in ARCHES}


@pytest.fixture(scope="session")
def lvlms(model_dirs) -> dict[str, illava.LVLM]:
    return {arch: illava.load(path, device=TEST_DEVICE, dtype=TEST_DTYPE) for arch, path in model_dirs.items()}


@pytest.fixture(params=ARCHES)
def lvlm(request, lvlms) -> illava.LVLM:
    return lvlms[request.param]


@pytest.fixture(scope="session")
def qwen25(lvlms) -> illava.LVLM:
    return lvlms["qwen2_5_vl"]


@pytest.fixture(scope="session")
def llava_onevision(tmp_path_factory) -> illava.LVLM:
    """A tiny LLaVA-OneVision, apart from ``ARCHES``: its prompts and tiles differ from Qwen's."""
    path = build_model_folder(tmp_path_factory.mktemp("models") / "llava_onevision", arch="llava_onevision", initializer_range=0.1)
    return illava.load(path, device=TEST_DEVICE, dtype=TEST_DTYPE)


@pytest.fixture(scope="session")
def internvl(tmp_path_factory) -> illava.LVLM:
    """A tiny InternVL, apart from ``ARCHES``: its tiles and prompts differ from Qwen's."""
    path = build_model_folder(tmp_path_factory.mktemp("models") / "internvl", arch="internvl", initializer_range=0.1)
    return illava.load(path, device=TEST_DEVICE, dtype=TEST_DTYPE)


@pytest.fixture(scope="session")
def minicpmv(tmp_path_factory) -> illava.LVLM:
    """A tiny MiniCPM-V 4.6 (SigLIP encoder with its window merger, Qwen3.5 text with linear-attention layers)."""
    path = build_model_folder(tmp_path_factory.mktemp("models") / "minicpmv", arch="minicpmv", initializer_range=0.1)
    return illava.load(path, device=TEST_DEVICE, dtype=TEST_DTYPE)


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    """Three images of different sizes and aspect ratios."""
    return [random_image(1, 224, 280), random_image(2, 168, 336), random_image(3, 252, 196)]


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> str:
    return write_video(tmp_path_factory.mktemp("video") / "moving.mp4")
