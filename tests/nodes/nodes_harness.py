"""Driving the nodes the way ComfyUI does, without ComfyUI installed: import, inputs, calls, workflows."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "illava_pack"


def load_pack():
    """Import the repository root as a package loaded by path, as ComfyUI imports custom_nodes/<dir>."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def widget_defaults(node_cls) -> dict:
    """The value each widget input starts with in the UI (default, else the first combo entry)."""
    values = {}
    for section in ("required", "optional"):
        for name, spec in node_cls.INPUT_TYPES().get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(kind, list):
                values[name] = options.get("default", kind[0])
            elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                values[name] = options["default"]
    return values


def run_node(node_cls, **inputs):
    """Call the node's FUNCTION as ComfyUI's executor does: inside inference mode, on a fresh instance."""
    with torch.inference_mode():
        out = getattr(node_cls(), node_cls.FUNCTION)(**inputs)
    result = out["result"] if isinstance(out, dict) else out
    assert isinstance(result, tuple) and len(result) == len(node_cls.RETURN_TYPES)
    return result, (out.get("ui") if isinstance(out, dict) else None)


def validation_errors(node_cls, constants: dict) -> list[str]:
    """The errors ComfyUI's queue-time validation reports for these widget values, one entry per error shown:
    range and combo checks per input, and VALIDATE_INPUTS' message once for every input it takes."""
    validate = getattr(node_cls, "VALIDATE_INPUTS", None)
    params = inspect.signature(validate).parameters if validate is not None else {}
    takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
    errors = []
    spec_of = node_cls.INPUT_TYPES() if hasattr(node_cls, "INPUT_TYPES") else {}
    for section in ("required", "optional"):
        for name, spec in spec_of.get(section, {}).items():
            if name not in constants or name in params or takes_all:
                continue
            kind, options, value = spec[0], (spec[1] if len(spec) > 1 else {}), constants[name]
            if isinstance(kind, list) and value not in kind:
                errors.append(f"{name}: {value!r} not in list")
            elif "min" in options and value < options["min"] or "max" in options and value > options["max"]:
                errors.append(f"{name}: {value!r} out of range")
    if validate is not None:
        checked_inputs = [name for name in constants if takes_all or name in params]
        checked = validate(**{name: constants[name] for name in checked_inputs})
        if checked is not True:
            errors.extend(f"{name} - {checked}" for name in checked_inputs)
    return errors


class WorkflowRunner:
    """Executes an API-format workflow node by node: constants from inputs, links from earlier outputs."""

    def __init__(self, mappings: dict, extra: dict) -> None:
        self.mappings = mappings
        self.extra = extra

    def run(self, workflow: dict) -> tuple[dict, dict]:
        outputs: dict[str, tuple] = {}
        ui: dict[str, dict] = {}
        pending = dict(workflow)
        while pending:
            ready = [nid for nid, node in pending.items() if all(
                not _is_link(v) or v[0] in outputs for v in node["inputs"].values())]
            assert ready, f"workflow has a cycle or a dangling link among {sorted(pending)}"
            for nid in ready:
                node = pending.pop(nid)
                cls = self.mappings.get(node["class_type"]) or self.extra[node["class_type"]]
                required = cls.INPUT_TYPES().get("required", {}) if hasattr(cls, "INPUT_TYPES") else {}
                missing = [name for name in required if name not in node["inputs"]]
                assert not missing, f"node {nid} lacks required inputs {missing}: ComfyUI would reject the prompt"
                kwargs = {k: outputs[v[0]][v[1]] if _is_link(v) else v for k, v in node["inputs"].items()}
                if "unique_id" in inspect.signature(getattr(cls, cls.FUNCTION)).parameters:
                    kwargs["unique_id"] = nid
                errors = validation_errors(cls, {k: v for k, v in node["inputs"].items() if not _is_link(v)})
                assert not errors, f"node {nid} failed validation: {errors}"
                outputs[nid], ui[nid] = run_node(cls, **kwargs)
        return outputs, ui


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)
