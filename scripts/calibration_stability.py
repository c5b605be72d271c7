"""Two disjoint calibration sets, one model: how far apart are the held-out accuracies of their profiles?

Calibrates the demo model on calibration-split scenes 0.. and 1000.. (never the harness's test
questions), then runs the accuracy harness's ``auto`` row with each profile on the same held-out
questions. Writes benchmarks/calibration-stability.json. (Determinism on the same inputs is a test:
tests/test_calibration.py.)

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

SETS = {"set A (scenes 0..)": 0, "set B (scenes 1000..)": 1000}
OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration-stability.json"


def main() -> int:
    lvlm = illava.load(demo_model_folder(), device="cpu", dtype="auto")
    report = {}
    for name, first in SETS.items():
        fitted = calibrate(lvlm, scene_inputs(first=first))
        model = dataclasses.replace(lvlm, profile=fitted.profile, profile_note=name)
        report[name] = {
            "calibration_seconds": round(fitted.seconds, 1),
            "profile": fitted.profile.to_dict()["entries"],
            "held_out": {
                kind: {row["budget"]: row["accuracy"] for row in run_harness(model, kind, methods=("auto",), log=lambda _: None)["results"]}
                for kind in ("image", "video", "multi")
            },
        }
        print(name, report[name]["held_out"], flush=True)
    OUT.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
