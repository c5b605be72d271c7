"""The layout's rules: the core knows no model and never imports the lab or the fixtures; backbones
import nothing above them; no import circles; the Backbone contract declares every hook the core calls."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from illava.backbones import Backbone, supported_model_types

PACKAGE = Path(__file__).resolve().parents[1] / "illava"
# The core: what a ComfyUI install needs to merge, generate and caption. The command line (__main__.py and cli/)
# is not: it also runs the lab's jobs (demo, eval, bench).
CORE = sorted([*(p for p in PACKAGE.glob("*.py") if p.name != "__main__.py"), *(PACKAGE / "captioning").glob("*.py")])
FAMILY_WORDS = ("qwen", "llava", "internvl", "internvit", "minicpm", "siglip", "deepstack", "mrope_section")
# "illava" (this library) contains "llava"; it names no model.
OWN_NAME = "illava"
# What a backbone may import from the library: the tensor algorithm and its settings.
BELOW_BACKBONES = {"illava.config", "illava.merge", "illava.methods"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every illava module ``path`` imports, at module level or inside functions."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("illava"):
                out.add(module)
                out.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("illava"))
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in out if name in modules}


def _code_words(path: Path) -> set[str]:
    """Names, attributes and string constants of a module's code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
    return words


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_imports_neither_the_lab_nor_the_fixtures(path):
    bad = sorted(m for m in _imports(path) if m.startswith(("illava.lab", "illava.testing")))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_names_no_model(path):
    named = sorted(
        word for word in _code_words(path)
        for family in FAMILY_WORDS + tuple(supported_model_types())
        if family in word.lower().replace(OWN_NAME, "")
    )
    assert not named, f"{path.name} names {named}: model knowledge belongs in illava/backbones/"


@pytest.mark.parametrize("path", sorted((PACKAGE / "backbones").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_backbones_import_nothing_above_them(path):
    above = sorted(m for m in _imports(path) if not m.startswith("illava.backbones") and m not in BELOW_BACKBONES)
    assert not above, f"{path.relative_to(PACKAGE)} imports {above}"


def test_no_import_circles():
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    # A package's __init__ re-exporting its own modules is not a circle.
    edges = {m: {d for d in deps if not m.startswith(d + ".") and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == 1 and not dep.startswith(module + "."):
                pytest.fail("import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def _backbone_uses(path: Path) -> set[str]:
    """Attributes the module reads from anything it calls ``backbone`` (or ``self.backbone``)."""
    uses = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            value = node.value
            if (isinstance(value, ast.Name) and value.id == "backbone") or (
                isinstance(value, ast.Attribute) and value.attr == "backbone"
            ):
                uses.add(node.attr)
    return uses


def test_the_backbone_contract_declares_every_hook_the_core_calls():
    used = set().union(*(_backbone_uses(path) for path in CORE))
    assert used, "the scan found no backbone calls: it is broken"
    missing = sorted(name for name in used if not hasattr(Backbone, name))
    assert not missing, f"the core calls {missing} on a backbone, but Backbone does not declare them"
    undocumented = sorted(
        name for name in used
        if callable(getattr(Backbone, name)) or isinstance(inspect.getattr_static(Backbone, name), property)
        if not inspect.getdoc(getattr(Backbone, name)) and not inspect.getdoc(inspect.getattr_static(Backbone, name))
    )
    assert not undocumented, f"Backbone hooks without a docstring: {undocumented}"


def test_every_folder_of_the_library_is_a_package_the_wheel_finds():
    """setup.py finds the wheel's packages; a folder of modules without an __init__.py would be left out silently."""
    folders = {path.parent for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    missing = sorted(str(folder.relative_to(PACKAGE.parent)) for folder in folders if not (folder / "__init__.py").is_file())
    assert not missing, f"folders without __init__.py: {missing}"


def test_the_command_line_is_a_few_lines_of_dispatch():
    lines = [line for line in (PACKAGE / "__main__.py").read_text().splitlines() if line.strip()]
    assert len(lines) <= 20


def test_a_family_missing_a_required_hook_cannot_be_made():
    class Partial(Backbone):
        @property
        def language_model(self):
            return None

    with pytest.raises(TypeError, match="abstract"):
        Partial(None)
    required = sorted(Backbone.__abstractmethods__)
    assert "encode_vision" in required and "image_inputs" in required and "query_scores" not in required


def test_a_new_family_is_a_folder_of_backbones_and_nothing_else(tmp_path, monkeypatch, qwen25, images):
    """A family added as one folder beside the others is found, registered and served, merging included, with no
    list to edit anywhere: here a copy of Qwen2.5-VL's adapter under a made-up model type."""
    import dataclasses
    import sys

    import illava
    from illava import backbones
    from illava.backbones import base

    family = tmp_path / "fake_vl"
    family.mkdir()
    (family / "__init__.py").write_text(
        "from ..base import register\n"
        "from ..qwen.qwen2_vl import QwenVLBackbone\n\n\n"
        "class FakeVLBackbone(QwenVLBackbone):\n"
        "    pass\n\n\n"
        "register('fake_vl', FakeVLBackbone, 'FakeVL', min_transformers='5.18.0')\n"
    )
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(base, "_REQUIREMENTS", dict(base._REQUIREMENTS))
    monkeypatch.setattr(backbones, "__path__", [*backbones.__path__, str(tmp_path)])
    try:
        backbones.import_families()
        assert "fake_vl" in backbones.supported_model_types() and "FakeVL" in backbones.family_names()
        monkeypatch.setattr(qwen25.model.config, "model_type", "fake_vl")
        adapter = backbones.backbone_for(qwen25.model)
        assert type(adapter).__name__ == "FakeVLBackbone"
        lvlm = dataclasses.replace(qwen25, backbone=adapter)
        config = illava.MergeConfig(stage1_layers=(2,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)
        result = illava.generate(lvlm, illava.encode(lvlm, images[:1], config), "What is this?", config,
                                 illava.GenerationOptions(max_new_tokens=2))
        tokens = result.stats[0]["visual_tokens"]
        assert tokens["llm_after_stage2"] < tokens["llm_input"] < tokens["llm_input_full"]
    finally:
        sys.modules.pop("illava.backbones.fake_vl", None)
