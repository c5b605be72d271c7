"""The built-in calibration set: scene images, image pairs and videos with their questions, never their answers.

Drawn from the scenes' calibration split, whose seeds are disjoint from the training and the test
(accuracy harness) splits, so a profile fitted on it is judged on questions it never saw.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..calibrate import CalibrationInput
from . import scenes
from .evaluate import VIDEO_FPS


def scene_inputs(images: int = 16, pairs: int = 4, videos: int = 8, first: int = 0) -> list[CalibrationInput]:
    """Calibration inputs from samples ``first ..`` of the calibration split (questions as prompts)."""
    inputs = []
    for kind, count in (("image", images), ("multi", pairs), ("video", videos)):
        for index in range(first, first + count):
            sample = scenes.sample("calibration", kind, index)
            name = f"scene {kind} {index}"
            if sample.frames:
                inputs.append(CalibrationInput(name, sample.question, video=np.stack(sample.frames), video_fps=VIDEO_FPS))
            else:
                inputs.append(CalibrationInput(name, sample.question, tuple(Image.fromarray(i) for i in sample.images)))
    return inputs
