"""The supported transformers range: each backbone's oldest release, checked at load and stated where users look."""

import json
import re
import shutil
from pathlib import Path

import pytest
from packaging.version import Version

import illava
from illava.backbones import base, min_transformers, oldest_releases, supported_model_types
from illava.loading import ModelFolderError, check_model_folder

ROOT = Path(__file__).resolve().parent.parent


def _folder_of(tmp_path: Path, model_type: str) -> Path:
    """A folder that passes every file check, holding a ``model_type`` config."""
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json"):
        (folder / name).write_text("{}")
    return folder


def test_every_backbone_declares_a_5x_minimum():
    for model_type in supported_model_types():
        assert Version(min_transformers(model_type)).major == 5, model_type


def test_the_oldest_versions_run_tests_every_family_once_at_its_highest_minimum():
    releases = oldest_releases()
    assert [release for release, _ in releases] == sorted((r for r, _ in releases), key=Version)
    families = [family for _, names in releases for family in names]
    assert sorted(families) == sorted(set(families)) and {"qwen", "minicpmv"} <= set(families)
    by_family = {family: release for release, names in releases for family in names}
    assert by_family["minicpmv"] == min_transformers("minicpmv4_6")
    assert all(Version(min_transformers(t)) <= Version(by_family["qwen"]) for t in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"))


def test_an_older_transformers_names_the_version_the_model_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "installed_transformers", lambda: "5.18.0")
    with pytest.raises(ModelFolderError) as error:
        check_model_folder(_folder_of(tmp_path, "minicpmv4_6"))
    message = str(error.value)
    assert "MiniCPM-V 4.6 needs transformers >= 5.19.0 (installed: 5.18.0)" in message
    assert "pip install -U 'transformers>=5.19.0,<6'" in message
    assert "'minicpmv4_6' model" in message


def test_a_4x_transformers_is_refused_before_transformers_builds_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "installed_transformers", lambda: "4.57.1")
    with pytest.raises(ModelFolderError, match=r"Qwen2\.5-VL needs transformers >= 5\.18\.0 \(installed: 4\.57\.1\)"):
        illava.load(_folder_of(tmp_path, "qwen2_5_vl"), device="cpu")


def test_the_other_backbones_keep_loading(model_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(base, "installed_transformers", lambda: "5.18.0")
    folder = tmp_path / "qwen2_5_vl"
    shutil.copytree(model_dirs["qwen2_5_vl"], folder)
    assert illava.load(folder, device="cpu", dtype="fp32").backbone.language_model is not None


def test_requirements_pyproject_and_readme_state_the_minimums():
    oldest = min(Version(min_transformers(t)) for t in supported_model_types())
    floor = f"transformers>={oldest.major}.{oldest.minor},<6"
    assert floor in (ROOT / "requirements.txt").read_text().splitlines()
    assert f'"{floor}",' in (ROOT / "pyproject.toml").read_text()
    table = (ROOT / "README.md").read_text().split("## Supported models", 1)[1].split("\n\n", 2)[1]
    stated = dict(re.findall(r"\| `(\w+)` \| >= ([\d.]+) \|", table))
    assert stated == {t: min_transformers(t) for t in supported_model_types()}
