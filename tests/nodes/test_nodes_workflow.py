"""Whole workflows: the API-format test workflow and the UI-format example workflows, run node by node."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile

import pytest
import torch

from nodes_harness import ROOT

EXAMPLES = sorted((ROOT / "example_workflows").glob("*.json"))
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")


class LoadImageStandIn:
    """Core Load Image's interface, returning a fixed 84x112 picture."""

    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "MASK")

    def load(self, image: str, upload: str = "image"):
        generator = torch.Generator().manual_seed(len(image))
        return torch.rand((1, 84, 112, 3), generator=generator), torch.zeros((1, 84, 112))


def widget_names(cls) -> list[str]:
    spec = cls.INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            if isinstance(entry[0], list) or entry[0] in WIDGET_KINDS:
                names.append(name)
    return names


class PreviewAnyStandIn:
    """Core Preview Any's interface: shows any value as text."""

    FUNCTION = "main"
    RETURN_TYPES = ()

    def main(self, source=None):
        return {"ui": {"text": (str(source),)}, "result": ()}


def runnable(api: dict) -> dict:
    """Point a workflow at the tiny test model and keep generation short."""
    for node in api.values():
        if node["class_type"] == "iLLaVA_LoadLVLM":
            node["inputs"].update(model="tiny-qwen2_5_vl", device="cpu")
        if node["class_type"] in ("iLLaVA_Generate", "iLLaVA_Caption"):
            node["inputs"]["max_new_tokens"] = 4
    return api


def ui_to_api(workflow: dict, mappings: dict) -> dict:
    """Convert a UI workflow to API format the way the frontend's graphToPrompt does for these nodes."""
    links = {link[0]: link for link in workflow["links"]}
    api = {}
    for node in workflow["nodes"]:
        inputs = {}
        for socket in node["inputs"]:
            if socket.get("link") is not None:
                link = links[socket["link"]]
                inputs[socket["name"]] = [str(link[1]), link[2]]
        if node["type"] in mappings:
            inputs.update(zip(widget_names(mappings[node["type"]]), node["widgets_values"]))
        elif node["type"] == "LoadImage":
            inputs["image"] = node["widgets_values"][0]
        elif node["type"] != "PreviewAny":
            raise AssertionError(f"example uses a node the test cannot stand in for: {node['type']}")
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def test_api_workflow_runs_node_by_node(runner, api_workflow, models_root):
    outputs, ui = runner({"LoadImage": LoadImageStandIn}).run(api_workflow("caption_api.json"))
    text, texts, stats, trace = outputs["5"]
    assert isinstance(text, str) and texts == [text]
    assert "after stage 2" in stats and ui["5"]["stats"] == [stats]
    assert ui["4"]["text"][0].startswith("1 image:")
    (maps,) = outputs["6"]
    assert maps.shape[0] == 2 and len(ui["6"]["images"]) == 2


def test_invalid_config_in_a_workflow_fails_validation(runner, api_workflow, models_root):
    workflow = api_workflow("caption_api.json")
    workflow["2"]["inputs"].update(preset="custom", stage2_keep=0)
    with pytest.raises(AssertionError, match=r"failed validation: \['stage2_keep: 0 out of range'\]"):
        runner({"LoadImage": LoadImageStandIn}).run(workflow)


def test_bad_layers_in_a_workflow_fail_on_merge_config_naming_the_field(runner, api_workflow, models_root):
    workflow = api_workflow("caption_api.json")
    workflow["2"]["inputs"].update(preset="custom", stage2_layers="8,4")
    with pytest.raises(ValueError, match="^iLLaVA Merge Config: stage2_layers must be strictly increasing"):
        runner({"LoadImage": LoadImageStandIn}).run(workflow)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_is_consistent(path, mappings):
    workflow = json.loads(path.read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in nodes.values():
        cls = mappings.get(node["type"])
        if cls is None:
            continue
        names = widget_names(cls)
        assert len(node["widgets_values"]) == len(names), (node["id"], node["type"])
        spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
        for name, value in zip(names, node["widgets_values"]):
            if isinstance(spec[name][0], list):
                assert value in spec[name][0], (node["id"], name, value)
    for link_id, origin, slot, target, target_slot, kind in workflow["links"]:
        source = nodes[origin]
        assert source["outputs"][slot]["type"] == kind and link_id in source["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["type"] in (kind, "*")
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        if source["type"] in mappings:
            assert mappings[source["type"]].RETURN_TYPES[slot] == kind


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_runs_as_shipped(path, mappings, runner, tmp_path, monkeypatch):
    """On the bundled demo model and the bundled inputs, as a fresh install queues it."""
    # Outside ComfyUI a relative output folder lands in the temporary folder: a fresh one per run.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    api = ui_to_api(json.loads(path.read_text()), mappings)
    outputs, ui = runner({"PreviewAny": PreviewAnyStandIn}).run(api)
    answering = [nid for nid, node in api.items() if node["class_type"] in ("iLLaVA_Generate", "iLLaVA_Caption")]
    folders = [nid for nid, node in api.items() if node["class_type"] == "iLLaVA_CaptionFolder"]
    assert answering or folders
    for nid in answering:
        assert outputs[nid][0].strip() and ui[nid]["stats"][0].startswith("visual tokens:")
    for nid in folders:
        shipped = len(list((ROOT / "example_workflows" / "inputs" / api[nid]["inputs"]["folder"]).glob("*.png")))
        assert outputs[nid][0].startswith(f"Captioned {shipped} of {shipped} inputs") and "failed" not in outputs[nid][0]
        assert len(list(tmp_path.rglob("*.txt"))) == shipped


def test_ab_example_compares_merging_off_and_on(mappings, runner):
    api = ui_to_api(json.loads((ROOT / "example_workflows" / "Compare merging off and on.json").read_text()), mappings)
    outputs, ui = runner({"PreviewAny": PreviewAnyStandIn}).run(api)
    stats = {api[nid]["inputs"]["preset"]: outputs[answer][2] for answer, node in api.items()
             if node["class_type"] == "iLLaVA_Generate" for nid in [api[node["inputs"]["visuals"][0]]["inputs"]["config"][0]]}
    assert stats["off"].splitlines()[0].endswith("after stage 2 (100%)")
    assert not stats["auto"].splitlines()[0].endswith("after stage 2 (100%)")


def test_examples_fit_a_1280_pixel_wide_screen_and_nodes_do_not_overlap():
    for path in EXAMPLES:
        nodes = json.loads(path.read_text())["nodes"]
        # ComfyUI's sidebar takes about 40 px of a 1280 px window; node titles sit above their boxes.
        assert max(node["pos"][0] + node["size"][0] for node in nodes) <= 1220, path.name
        boxes = [(n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in nodes]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (path.name, a, b)


def test_examples_are_the_generated_ones(tmp_path):
    """example_workflows/ holds what scripts/example_workflows.py writes from the nodes' current inputs."""
    script = (ROOT / "scripts" / "example_workflows.py").read_text().replace(
        'OUT = ROOT / "example_workflows"', f"OUT = Path({str(tmp_path)!r})")
    namespace = {"__name__": "generated", "__file__": str(ROOT / "scripts" / "example_workflows.py")}
    exec(compile(script, "example_workflows.py", "exec"), namespace)
    namespace["main"]()
    for path in EXAMPLES:
        assert json.loads((tmp_path / path.name).read_text()) == json.loads(path.read_text()), path.name


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_web_presets_match_the_library(pack):
    from illava_pack.illava import PRESETS
    from illava_pack.illava.config import preset

    # (vit depth, llm depth, stage-2 choices): the reference, deeper, shallower with halves to round, restricted.
    models = [(32, 28, None), (32, 36, None), (16, 21, None), (27, 48, [3, 7, 11, 15, 19, 23, 27]), (4, 6, None)]
    script = (
        "import {PRESETS, REFERENCE, scaleLayers} from './web/budget.js';"
        "const models = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify({presets: PRESETS, scaled: models.map(([vitDepth, llmDepth, stage2Choices]) =>"
        " Object.fromEntries(Object.entries(PRESETS).map(([n, c]) => [n, scaleLayers(c, {...REFERENCE, vitDepth, llmDepth, stage2Choices})])))}));"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, json.dumps(models)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    web = json.loads(result.stdout)
    fields = ("stage1_layers", "stage1_keep", "stage2_layers", "stage2_keep")
    assert set(web["presets"]) == set(PRESETS)
    for name, config in PRESETS.items():
        assert {f: web["presets"][name][f] for f in fields} == {f: config.to_dict()[f] for f in fields}, name
    for (vit, llm, choices), scaled in zip(models, web["scaled"]):
        for name in PRESETS:
            python = preset(name, vit, llm, tuple(choices) if choices else None).to_dict()
            assert {f: scaled[name][f] for f in fields} == {f: python[f] for f in fields}, (name, vit, llm, choices)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_web_prompt_styles_match_the_library(pack):
    from illava_pack.illava.captioning.styles import CAPTION_STYLES

    script = "import {PROMPT_STYLES} from './web/visibility.js'; console.log(JSON.stringify(PROMPT_STYLES));"
    result = subprocess.run(["node", "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == [name for name, style in CAPTION_STYLES.items() if style.uses_prompt]

def test_peers_example_runs_each_method_at_the_same_work(mappings, runner):
    path = ROOT / "example_workflows" / "Compare iLLaVA with the paper's peers at the same work.json"
    api = ui_to_api(json.loads(path.read_text()), mappings)
    outputs, _ = runner({"PreviewAny": PreviewAnyStandIn}).run(api)
    stats = {api[nid]["inputs"]["preset"]: outputs[answer][2] for answer, node in api.items()
             if node["class_type"] == "iLLaVA_Generate" for nid in [api[node["inputs"]["visuals"][0]]["inputs"]["config"][0]]}
    assert sorted(stats) == ["auto", "fastervlm", "pyramiddrop", "sparsevlm"]
    for text in stats.values():
        work = float(re.search(r"^work ([0-9.]+) of merging off", text, re.M).group(1))
        assert abs(work - 0.75) <= 0.02, text
    # FasterVLM merges in the encoder only; PyramidDrop and SparseVLM in the LLM only.
    shares = {name: re.search(r"after stage 1 \((\d+)%\) -> \d+ after stage 2 \((\d+)%\)", text).groups()
              for name, text in stats.items()}
    assert shares["fastervlm"][0] == shares["fastervlm"][1] != "100"
    assert shares["pyramiddrop"][0] == shares["sparsevlm"][0] == "100" != shares["sparsevlm"][1]
