"""Does calibration's label-free measure rank configurations the way held-out accuracy does?

For every configuration in the accuracy harness's image report (each method at each budget, the
held-out accuracy measured on 200 test questions), this measures calibration's KL and answers kept on
the built-in calibration set (calibration-split scenes, disjoint from the test questions), and
writes the rank correlations to benchmarks/calibration-ranking.json.

    python -m illava eval --split image --json benchmarks/eval-image.json   # first, if stale
    python scripts/calibration_ranking.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import illava  # noqa: E402
from illava import MergeConfig  # noqa: E402
from illava.calibrate import _Search  # noqa: E402
from illava.lab.calibration_set import scene_inputs  # noqa: E402
from illava.lab.demo_model import demo_model_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def ranks(values: list[float]) -> np.ndarray:
    """Average ranks (ties share their mean rank), for Spearman's rho."""
    values = np.asarray(values, dtype=float)
    order = values.argsort(kind="stable")
    out = np.empty(len(values))
    out[order] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        out[tied] = out[tied].mean()
    return out


def spearman(a: list[float], b: list[float]) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main() -> int:
    report = json.loads((ROOT / "benchmarks" / "eval-image.json").read_text())
    lvlm = illava.load(demo_model_folder(), device="cpu", dtype="auto")
    images = [item for item in scene_inputs() if item.kind == "image"]
    search = _Search(lvlm, images, max_new_tokens=16, batch_size=8, check_interrupt=None, kl_tolerance=0.0)
    rows = []
    for row in report["results"]:
        if row["accuracy"] is None:
            continue
        config = MergeConfig.from_dict({k: v for k, v in row["config"].items() if k != "origin"})
        measured = search.measure(config)
        rows.append({"method": row["method"], "budget": row["budget"], "held_out_accuracy": row["accuracy"],
                     "kl": measured.kl, "answers_kept": measured.agreement})
    accuracy = [r["held_out_accuracy"] for r in rows]
    result = {
        "configurations": len(rows),
        "calibration_inputs": len(images),
        "spearman_accuracy_vs_negative_kl": spearman(accuracy, [-r["kl"] for r in rows]),
        "spearman_accuracy_vs_answers_kept": spearman(accuracy, [r["answers_kept"] for r in rows]),
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "calibration-ranking.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{len(rows)} configurations: Spearman rho, held-out accuracy vs -KL "
          f"{result['spearman_accuracy_vs_negative_kl']:.3f}, vs answers kept {result['spearman_accuracy_vs_answers_kept']:.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
