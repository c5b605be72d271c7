"""pytest: collect the checkout's root as a plain folder, not as a package.

ComfyUI imports this folder as a package, so its ``__init__.py`` uses relative imports. pytest would
import that file on its own when it collects the folder as a package, which fails whenever the folder's
name is not a Python identifier (``ComfyUI-iLLaVA``, as users clone it). The tests import the pack the
way ComfyUI does instead (``tests/nodes/nodes_harness.py``).
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if path == ROOT:
        return pytest.Dir.from_parent(parent, path=path)
    return None
