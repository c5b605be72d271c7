"""Which score stands in for FasterVLM's [CLS] attention in an encoder without a [CLS] token?

FasterVLM ranks the encoder's output tokens by the [CLS] token's attention at the layer the projector
reads. Qwen's ViT and SigLIP have no [CLS] token. This compares, at FasterVLM's placement (the encoder
output) on the demo model, the stand-in the library ships (the attention every token receives, as
VisionZip's dominant tokens are chosen) with a summary query standing where a [CLS] token would (the
mean of the segment's queries: the query of its mean normed token) and with random drop, by
calibration's label-free measure on calibration-split scenes (disjoint from the test questions), and
writes benchmarks/fastervlm-standin.json.

    python scripts/fastervlm_standin.py
"""

from __future__ import annotations

import json
import platform
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import illava  # noqa: E402
from illava.backbones.qwen import qwen2_vl  # noqa: E402
from illava.calibrate import _Search  # noqa: E402
from illava.lab.calibration_set import scene_inputs  # noqa: E402
from illava.lab.demo_model import demo_model_folder  # noqa: E402
from illava.lab.timing import device_name  # noqa: E402
from illava.resolve import fitted, placed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# FasterVLM's placement cannot spend less than 0.60 on the demo model (its encoder runs every token).
BUDGETS = (0.9, 0.8, 0.7, 0.65)


def summary_query_attention(q, k, scale, cls_row=None):
    """The attention the mean of a segment's queries pays each key, averaged over heads."""
    logits = torch.matmul(q.float().mean(dim=-2, keepdim=True) * scale, k.float().transpose(-2, -1))
    return logits.softmax(dim=-1).mean(dim=-3)[..., 0, :]


@contextmanager
def scored_by_a_summary_query():
    """FasterVLM's rows ranked by a summary query's attention instead of the attention each token receives."""
    with mock.patch.object(qwen2_vl, "encoder_scorer", lambda name, chunk: summary_query_attention):
        yield


def measure(lvlm, inputs, kind: str, rules: dict) -> list[dict]:
    rows = []
    for rule, (method, patch) in rules.items():
        search = _Search(lvlm, inputs, max_new_tokens=16, batch_size=8, check_interrupt=None, kl_tolerance=0.0)
        for budget in BUDGETS:
            config = fitted(placed("fastervlm", lvlm.backbone, kind).with_(method=method), budget, lvlm, kind).config
            with patch():
                measured = search.measure(config)
            rows.append({"kind": kind, "score": rule, "budget": budget, "kl": round(measured.kl, 4),
                         "answers_kept": round(measured.agreement, 4), "work": round(measured.work, 4),
                         "token_fraction": round(measured.token_fraction, 4)})
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    lvlm = illava.load(demo_model_folder(), device="cpu", dtype="auto")
    no_patch = contextmanager(lambda: (yield))
    rules = {
        "attention received (shipped)": ("fastervlm", no_patch),
        "summary query (mean of the queries)": ("fastervlm", scored_by_a_summary_query),
        "random": ("random", no_patch),
    }
    rows = []
    for kind, inputs in (("image", scene_inputs(images=40, pairs=0, videos=0)),
                         ("video", scene_inputs(images=0, pairs=0, videos=8))):
        rows += measure(lvlm, inputs, kind, rules)
    out = {"model": "illava-scenes-qwen2.5-vl (demo)", "inputs": "calibration split: 40 images, 8 videos",
           "cpu": device_name(lvlm.device), "machine": platform.machine(), "dtype": str(lvlm.dtype), "rows": rows}
    (ROOT / "benchmarks" / "fastervlm-standin.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
