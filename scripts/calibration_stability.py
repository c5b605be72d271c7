"""Two disjoint calibration sets, one model: how far apart are the held-out accuracies of their profiles?

Set A is the shipped profile's (calibration-split scenes 0.., the built-in set): its held-out
accuracy is the ``auto`` rows of the committed harness reports. This fits set B (scenes 1000..,
disjoint from A and from the harness's test questions), runs the harness's ``auto`` row with it on
the same held-out questions, and writes both side by side to benchmarks/calibration-stability.json.

    python scripts/calibration_stability.py
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import illava  # noqa: E402
from illava.calibrate import calibrate  # noqa: E402
from illava.lab.calibration_set import scene_inputs  # noqa: E402
from illava.lab.demo_model import demo_model_folder  # noqa: E402
from illava.lab.harness import run_harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SET_B_FIRST = 1000
REPORTS = {"image": "eval-image.json", "video": "eval-video.json", "multi": "eval-multi.json"}


def committed_auto(kind: str) -> dict[float, float]:
    report = json.loads((ROOT / "benchmarks" / REPORTS[kind]).read_text())
    return {row["budget"]: row["accuracy"] for row in report["results"] if row["method"] == "auto"}


def main() -> int:
    lvlm = illava.load(demo_model_folder(), device="cpu", dtype="auto")
    fitted = calibrate(lvlm, scene_inputs(first=SET_B_FIRST))
    model = dataclasses.replace(lvlm, profile=fitted.profile, profile_note="set B")
    report = {"set A": {"inputs": "calibration scenes 0.. (the shipped profile)", "held_out": {}},
              "set B": {"inputs": f"calibration scenes {SET_B_FIRST}..", "calibration_seconds": round(fitted.seconds, 1),
                        "profile": fitted.profile.to_dict()["entries"], "held_out": {}}}
    for kind in REPORTS:
        rows = run_harness(model, kind, methods=("auto",), log=lambda _: None)["results"]
        report["set B"]["held_out"][kind] = {row["budget"]: row["accuracy"] for row in rows}
        report["set A"]["held_out"][kind] = committed_auto(kind)
        print(kind, "A", report["set A"]["held_out"][kind], "B", report["set B"]["held_out"][kind], flush=True)
    gaps = [abs(report["set A"]["held_out"][k][b] - report["set B"]["held_out"][k][b])
            for k in REPORTS for b in report["set B"]["held_out"][k]]
    report["largest_gap_points"] = round(100 * max(gaps), 1)
    (ROOT / "benchmarks" / "calibration-stability.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"largest gap: {report['largest_gap_points']} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
