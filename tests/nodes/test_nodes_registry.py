"""The pack imports like ComfyUI imports it and declares well-formed, stable nodes."""

from __future__ import annotations

import re
from pathlib import Path

from nodes_harness import ROOT

EXPECTED_IDS = {
    "iLLaVA_LoadLVLM",
    "iLLaVA_MergeConfig",
    "iLLaVA_EncodeImage",
    "iLLaVA_EncodeVideo",
    "iLLaVA_Generate",
    "iLLaVA_PreviewTokens",
    "iLLaVA_Calibrate",
    "iLLaVA_Caption",
    "iLLaVA_CaptionFolder",
    "iLLaVA_ExampleImage",
    "iLLaVA_ExampleVideo",
}
CORE_TYPES = {"IMAGE", "VIDEO", "STRING", "INT", "FLOAT", "BOOLEAN"}


def test_mappings_ids_and_display_names(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == EXPECTED_IDS
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == EXPECTED_IDS
    assert pack.WEB_DIRECTORY == "./web"
    assert (ROOT / "web").is_dir()


def test_every_node_is_well_formed(mappings):
    for node_id, cls in mappings.items():
        assert cls.CATEGORY == ("iLLaVA/examples" if node_id.startswith("iLLaVA_Example") else "iLLaVA"), node_id
        assert callable(getattr(cls, cls.FUNCTION)), node_id
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS), node_id
        for kind in cls.RETURN_TYPES:
            assert kind in CORE_TYPES or kind.startswith("ILLAVA_"), (node_id, kind)
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"}, node_id
        for section in ("required", "optional"):
            for name, entry in spec.get(section, {}).items():
                kind = entry[0]
                assert isinstance(kind, list) or kind in CORE_TYPES or kind.startswith("ILLAVA_"), (node_id, name)
                assert entry[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_output_nodes_and_lists(mappings):
    assert mappings["iLLaVA_Generate"].OUTPUT_NODE is True
    assert mappings["iLLaVA_PreviewTokens"].OUTPUT_NODE is True
    assert mappings["iLLaVA_Generate"].OUTPUT_IS_LIST == (False, True, False, False)
    assert mappings["iLLaVA_Caption"].OUTPUT_NODE is True
    assert mappings["iLLaVA_Caption"].OUTPUT_IS_LIST == (False, True, False)
    assert mappings["iLLaVA_CaptionFolder"].OUTPUT_NODE is True


def test_prompts_are_multiline_without_dynamic_prompts(mappings):
    for node_id, name, section in (("iLLaVA_Generate", "prompt", "required"), ("iLLaVA_Generate", "system_prompt", "optional"), ("iLLaVA_Caption", "prompt", "required"), ("iLLaVA_CaptionFolder", "prompt", "required")):
        options = mappings[node_id].INPUT_TYPES()[section][name][1]
        assert options["multiline"] is True and options["dynamicPrompts"] is False


def test_input_order_is_stable(mappings):
    """Saved UI workflows store widget values by position: this order must never change."""
    def names(node_id):
        spec = mappings[node_id].INPUT_TYPES()
        return list(spec["required"]) + list(spec.get("optional", {}))

    assert names("iLLaVA_LoadLVLM") == ["model", "device", "dtype", "attention", "keep_loaded", "trust_remote_code", "quantization"]
    assert names("iLLaVA_MergeConfig") == [
        "preset", "stage1_layers", "stage1_keep", "stage1_recycled", "stage2_layers", "stage2_keep",
        "stage2_recycled", "recycle_weighting", "score_chunk", "method", "budget",
    ]
    assert names("iLLaVA_EncodeImage") == ["lvlm", "image", "config", "max_pixels", "min_pixels"]
    assert names("iLLaVA_Generate") == [
        "lvlm", "visuals", "prompt", "max_new_tokens", "sampling", "temperature", "top_p", "top_k",
        "repetition_penalty", "seed", "per_image", "config", "system_prompt", "style",
    ]
    assert names("iLLaVA_Caption") == [
        "lvlm", "style", "prompt", "budget", "max_new_tokens", "sampling", "temperature", "top_p", "top_k",
        "repetition_penalty", "seed", "image", "video", "max_frames", "max_pixels", "min_pixels",
    ]
    assert names("iLLaVA_PreviewTokens") == ["visuals", "trace"]
    assert names("iLLaVA_CaptionFolder") == [
        "lvlm", "folder", "output_folder", "style", "prompt", "budget", "max_new_tokens", "batch_size", "recursive",
        "overwrite", "max_pixels", "min_pixels",
    ]


def test_only_compat_imports_comfyui():
    pattern = re.compile(r"^\s*(from|import)\s+(folder_paths|comfy\b|comfy_api|server\b|nodes\b)", re.MULTILINE)
    offenders = []
    for path in list((ROOT / "nodes").glob("*.py")) + [ROOT / "__init__.py"]:
        if path.name != "comfy_compat.py" and pattern.search(path.read_text()):
            offenders.append(path.name)
    assert offenders == []
    assert pattern.search((ROOT / "nodes" / "comfy_compat.py").read_text())


def test_nodes_use_relative_imports_only():
    absolute = re.compile(r"^\s*(from|import)\s+(illava|nodes)\b", re.MULTILINE)
    for path in list((ROOT / "nodes").glob("*.py")) + [ROOT / "__init__.py"]:
        assert not absolute.search(path.read_text()), path.name


def test_web_folder_holds_only_browser_modules():
    files = sorted(p.name for p in Path(ROOT / "web").rglob("*") if p.is_file())
    assert files and all(name.endswith(".js") for name in files)
    assert not any(name.endswith((".test.js", ".test.mjs")) for name in files)
