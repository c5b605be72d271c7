"""Writes the example workflows (example_workflows/*.json, committed) from the nodes' own input lists, so every
widget value sits where ComfyUI expects it. The file names are what ComfyUI's templates browser shows.

Run from the repository root: python scripts/example_workflows.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN")
DEMO_MODEL = "illava-scenes-qwen2.5-vl"
IMAGE_QUESTION = "how many objects are there?"
VIDEO_QUESTION = "which shape appears?"
DESCRIBE_QUESTION = "what objects are there?"
PEERS_BUDGET = 0.75
# Sockets ComfyUI core nodes used here take and give, with their widgets' values.
CORE = {
    "PreviewAny": {"inputs": [("source", "*")], "outputs": [], "widgets": []},
}


def load_pack():
    spec = importlib.util.spec_from_file_location("illava_pack", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["illava_pack"] = module
    spec.loader.exec_module(module)
    return module.NODE_CLASS_MAPPINGS


class Workflow:
    """A UI-format workflow built node by node; links are made from (node, output name) to (node, input name)."""

    def __init__(self, mappings: dict) -> None:
        self.mappings = mappings
        self.nodes: list[dict] = []
        self.links: list[list] = []

    def node(self, kind: str, pos: tuple[int, int], size: tuple[int, int], title: str | None = None, **values) -> dict:
        if kind in self.mappings:
            cls = self.mappings[kind]
            spec = cls.INPUT_TYPES()
            entries = {**spec.get("required", {}), **spec.get("optional", {})}
            widgets = [name for name, entry in entries.items() if isinstance(entry[0], list) or entry[0] in WIDGET_KINDS]
            sockets = [(name, entry[0]) for name, entry in entries.items() if name not in widgets]
            optional = set(spec.get("optional", {}))
            outputs = list(zip(cls.RETURN_NAMES, cls.RETURN_TYPES))
            lists = getattr(cls, "OUTPUT_IS_LIST", (False,) * len(outputs))
            defaults = {name: self._default(entries[name]) for name in widgets}
        else:
            core = CORE[kind]
            widgets, sockets, optional, outputs = core["widgets"], core["inputs"], set(), core["outputs"]
            lists, defaults = (False,) * len(outputs), {}
        unknown = set(values) - set(widgets)
        if unknown:
            raise ValueError(f"{kind} has no widgets {sorted(unknown)}")
        node = {
            "id": len(self.nodes) + 1,
            "type": kind,
            "pos": list(pos),
            "size": list(size),
            "flags": {},
            "order": len(self.nodes),
            "mode": 0,
            "inputs": [{"name": name, "type": socket, "link": None, **({"shape": 7} if name in optional else {})} for name, socket in sockets],
            "outputs": [
                {"name": name, "type": socket, "links": [], "slot_index": i, **({"shape": 6} if lists[i] else {})}
                for i, (name, socket) in enumerate(outputs)
            ],
            "properties": {"Node name for S&R": kind},
            "widgets_values": [values.get(name, defaults.get(name)) for name in widgets],
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    @staticmethod
    def _default(entry: tuple):
        kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
        return options.get("default", kind[0] if isinstance(kind, list) else None)

    def link(self, source: dict, output: str, target: dict, input_name: str) -> None:
        slot = next(i for i, o in enumerate(source["outputs"]) if o["name"] == output)
        target_slot = next(i for i, s in enumerate(target["inputs"]) if s["name"] == input_name)
        link_id = len(self.links) + 1
        kind = source["outputs"][slot]["type"]
        self.links.append([link_id, source["id"], slot, target["id"], target_slot, kind])
        source["outputs"][slot]["links"].append(link_id)
        target["inputs"][target_slot]["link"] = link_id

    def encode_and_answer(self, model: dict, source: tuple[dict, str], config: dict, encoded: dict, answer: dict) -> None:
        """Link Load LVLM, ``source`` (node, output) and a Merge Config into an Encode node, and on to a Generate node."""
        self.link(model, "lvlm", encoded, "lvlm")
        self.link(source[0], source[1], encoded, source[1])
        self.link(config, "config", encoded, "config")
        self.link(model, "lvlm", answer, "lvlm")
        self.link(encoded, "visuals", answer, "visuals")

    def write(self, name: str) -> None:
        workflow = {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}},
            "version": 0.4,
        }
        (OUT / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")


def caption_in_one_node(mappings: dict) -> None:
    w = Workflow(mappings)
    model = w.node("iLLaVA_LoadLVLM", (10, 10), (280, 380), model=DEMO_MODEL)
    example = w.node("iLLaVA_ExampleImage", (10, 420), (280, 130))
    caption = w.node("iLLaVA_Caption", (310, 10), (420, 760), style="question", prompt=IMAGE_QUESTION, max_new_tokens=32)
    truth = w.node("PreviewAny", (750, 10), (460, 260), title="questions and true answers")
    w.link(model, "lvlm", caption, "lvlm")
    w.link(example, "image", caption, "image")
    w.link(example, "questions", truth, "source")
    w.write("Caption an image in one node")


def merging_off_and_on(mappings: dict) -> None:
    w = Workflow(mappings)
    model = w.node("iLLaVA_LoadLVLM", (10, 10), (280, 380), model=DEMO_MODEL)
    example = w.node("iLLaVA_ExampleImage", (10, 420), (280, 130))
    truth = w.node("PreviewAny", (10, 580), (280, 260), title="questions and true answers")
    w.link(example, "questions", truth, "source")
    rows = (("off", "merging off", {"preset": "off"}, 10), ("auto", "auto at a third of the tokens", {"preset": "auto"}, 620))
    for name, title, values, y in rows:
        config = w.node("iLLaVA_MergeConfig", (310, y), (270, 300), title=title, **values)
        encoded = w.node("iLLaVA_EncodeImage", (600, y), (250, 300), title=f"Encode ({name})")
        answer = w.node("iLLaVA_Generate", (870, y), (340, 580), title=f"Generate ({name})", prompt=IMAGE_QUESTION, max_new_tokens=16)
        w.encode_and_answer(model, (example, "image"), config, encoded, answer)
    maps = w.node("iLLaVA_PreviewTokens", (10, 1230), (840, 520), title="what auto kept (stage 1, then stage 2)")
    w.link(encoded, "visuals", maps, "visuals")
    w.link(answer, "trace", maps, "trace")
    w.write("Compare merging off and on")


def papers_peers(mappings: dict) -> None:
    """iLLaVA (auto) beside the three methods the paper compares against, each placed as its paper does and
    spending the same work; 0.75 is the least all three can reach on the demo model."""
    w = Workflow(mappings)
    model = w.node("iLLaVA_LoadLVLM", (10, 10), (280, 380), model=DEMO_MODEL)
    example = w.node("iLLaVA_ExampleImage", (10, 420), (280, 130))
    truth = w.node("PreviewAny", (10, 580), (280, 260), title="questions and true answers")
    w.link(example, "questions", truth, "source")
    for index, (preset, title) in enumerate((("auto", "iLLaVA (auto)"), ("fastervlm", "FasterVLM"),
                                             ("pyramiddrop", "PyramidDrop"), ("sparsevlm", "SparseVLM"))):
        x, y = 310 + 460 * (index % 2), 10 + 610 * (index // 2)
        config = w.node("iLLaVA_MergeConfig", (x, y), (220, 310), title=f"{title} at work {PEERS_BUDGET}",
                        preset=preset, budget=PEERS_BUDGET)
        encoded = w.node("iLLaVA_EncodeImage", (x, y + 350), (220, 220), title=f"Encode ({title})")
        answer = w.node("iLLaVA_Generate", (x + 230, y), (220, 570), title=f"Generate ({title})", prompt=IMAGE_QUESTION,
                        max_new_tokens=16)
        w.encode_and_answer(model, (example, "image"), config, encoded, answer)
    w.write("Compare iLLaVA with the paper's peers at the same work")


def video_question(mappings: dict) -> None:
    w = Workflow(mappings)
    model = w.node("iLLaVA_LoadLVLM", (10, 10), (280, 380), model=DEMO_MODEL)
    example = w.node("iLLaVA_ExampleVideo", (10, 420), (280, 130))
    config = w.node("iLLaVA_MergeConfig", (10, 580), (280, 300), preset="auto", budget=0.33)
    encoded = w.node("iLLaVA_EncodeVideo", (310, 10), (280, 400), fps=2.0, max_frames=16)
    answer = w.node("iLLaVA_Generate", (610, 10), (340, 580), prompt=VIDEO_QUESTION, max_new_tokens=16)
    truth = w.node("PreviewAny", (970, 10), (240, 260), title="questions and true answers")
    maps = w.node("iLLaVA_PreviewTokens", (310, 640), (900, 460), title="what each stage kept, frame group by frame group")
    w.encode_and_answer(model, (example, "video"), config, encoded, answer)
    w.link(example, "questions", truth, "source")
    w.link(encoded, "visuals", maps, "visuals")
    w.link(answer, "trace", maps, "trace")
    w.write("Ask about a video at a third of the work")


def budgets(mappings: dict) -> None:
    w = Workflow(mappings)
    model = w.node("iLLaVA_LoadLVLM", (10, 10), (280, 380), model=DEMO_MODEL)
    example = w.node("iLLaVA_ExampleImage", (10, 420), (280, 130))
    truth = w.node("PreviewAny", (10, 580), (280, 260), title="questions and true answers")
    w.link(example, "questions", truth, "source")
    for index, (budget, share) in enumerate(((1.0, "no merging"), (0.5, "half the work"), (0.33, "a third of the work"))):
        caption = w.node(
            "iLLaVA_Caption", (310 + 305 * index, 10), (295, 800), title=f"budget {budget} ({share})",
            style="question", prompt=IMAGE_QUESTION, budget=budget, max_new_tokens=16,
        )
        w.link(model, "lvlm", caption, "lvlm")
        w.link(example, "image", caption, "image")
    w.write("Compare budgets on one image")


def caption_a_folder(mappings: dict) -> None:
    w = Workflow(mappings)
    model = w.node("iLLaVA_LoadLVLM", (10, 10), (280, 380), model=DEMO_MODEL)
    # "scenes" is looked up in ComfyUI's input folder, then among the pack's example inputs; the captions go
    # to ComfyUI's output folder, never into the pack.
    caption = w.node(
        "iLLaVA_CaptionFolder", (310, 10), (420, 760), folder="scenes", output_folder="illava-captions/scenes",
        style="question", prompt=DESCRIBE_QUESTION, max_new_tokens=32,
    )
    w.link(model, "lvlm", caption, "lvlm")
    w.write("Caption a folder into text files")


def main() -> None:
    mappings = load_pack()
    for build in (caption_in_one_node, merging_off_and_on, papers_peers, video_question, budgets, caption_a_folder):
        build(mappings)


if __name__ == "__main__":
    main()
