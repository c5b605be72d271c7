"""A long session: many encode + generate runs with varying inputs and configs, watching memory.

``python -m illava.lab.soak MODEL_DIR [RUNS]`` prints one JSON line with the resident memory after the
warm-up runs and at the end; the reliability test and the figure in docs/results.md come from it.
"""

from __future__ import annotations

import gc
import json
import sys

import numpy as np
from PIL import Image

from .. import GenerationOptions, MergeConfig, encode, generate, load

CONFIGS = (
    MergeConfig(),
    MergeConfig(stage1_layers=(2,), stage1_keep=0.5),
    MergeConfig(stage2_layers=(1, 3), stage2_keep=0.3, stage2_recycled=2),
    MergeConfig(stage1_layers=(1, 3), stage1_keep=0.4, stage2_layers=(2,), stage2_keep=0.5, recycle_weighting="paper"),
)
SIZES = ((224, 280), (168, 336), (252, 196), (112, 112))
PROMPTS = ("Describe this.", "What colour dominates?", "Count the objects, then name them.")
WARMUP = 20


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def soak(model_dir: str, runs: int = 200) -> dict:
    lvlm = load(model_dir, device="cpu", dtype="fp32")
    rng = np.random.default_rng(0)
    after_warmup = 0
    for run in range(runs):
        height, width = SIZES[run % len(SIZES)]
        count = 1 + run % 3
        images = [Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)) for _ in range(count)]
        config = CONFIGS[run % len(CONFIGS)]
        video = rng.integers(0, 256, (6, 112, 112, 3), dtype=np.uint8) if run % 5 == 0 else None
        visuals = encode(lvlm, images, config, video=video, fps=2.0, video_fps=2.0)
        generate(lvlm, visuals, PROMPTS[run % len(PROMPTS)], config, GenerationOptions(max_new_tokens=4), per_item=run % 2 == 1)
        if run + 1 == WARMUP:
            gc.collect()
            after_warmup = rss_bytes()
    gc.collect()
    end = rss_bytes()
    return {"runs": runs, "rss_after_warmup": after_warmup, "rss_end": end, "growth": end / after_warmup - 1}


if __name__ == "__main__":
    print(json.dumps(soak(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200)))
