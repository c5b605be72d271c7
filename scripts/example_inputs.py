"""Writes the example workflows' inputs: a scene image and a scene video from the demo model's test split,
with the questions it was trained to answer about them (example_workflows/inputs/, committed).

Run from the repository root: python scripts/example_inputs.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illava.lab import scenes
from illava.lab.demo import DEMO_CONVERSATION, DEMO_VIDEO_FAMILY
from illava.lab.evaluate import VIDEO_FPS

OUT = Path(__file__).resolve().parents[1] / "example_workflows" / "inputs"
# The folder the Caption Folder example captions, below OUT.
SCENES = "scenes"
SCENE_COUNT = 4


def write_video(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """An MP4 decord can read, at a quality that keeps the shapes' colours."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=int(fps), options={"qscale": "2"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    chat = scenes.conversation(DEMO_CONVERSATION, turns=5, split="test")
    Image.fromarray(chat.image).save(OUT / "scene.png", optimize=True)
    clip = next(s for s in (scenes.sample("test", "video", i) for i in range(100)) if s.family == DEMO_VIDEO_FAMILY)
    write_video(OUT / "scene-video.mp4", list(clip.frames), VIDEO_FPS)
    questions = {
        "scene.png": [{"question": question, "answer": answer} for _, question, answer in chat.turns]
        + [{"question": scenes.DESCRIBE_QUESTION, "answer": scenes.describe(list(chat.shapes))}],
        "scene-video.mp4": [{"question": clip.question, "answer": clip.answer}],
    }
    questions.update(write_scenes(OUT / SCENES))
    (OUT / "questions.json").write_text(json.dumps(questions, indent=1) + "\n")


def write_scenes(folder: Path) -> dict[str, list[dict[str, str]]]:
    """A few more test-split scenes for the folder captioning example, each with the describe question."""
    folder.mkdir(parents=True, exist_ok=True)
    questions = {}
    for index in range(SCENE_COUNT):
        shown = scenes.sample("test", "image", index)
        name = f"scene-{index + 1}.png"
        Image.fromarray(shown.images[0]).save(folder / name, optimize=True)
        truth = scenes.describe(list(shown.shapes[0]))
        questions[f"{SCENES}/{name}"] = [{"question": scenes.DESCRIBE_QUESTION, "answer": truth}]
    return questions


if __name__ == "__main__":
    main()
