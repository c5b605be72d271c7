"""The GPU check script in its reduced CPU mode: it runs every step and writes what a GPU run would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_in_cpu_mode_and_writes_its_results(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--cpu", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
        timeout=900, env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "PYTHON": sys.executable},
    )
    assert done.returncode == 0, (done.stdout, done.stderr, *(p.read_text() for p in out.glob("*.txt")))
    assert (out / "summary.txt").read_text().splitlines() == [
        "offload: exit 0", "roundtrip: exit 0", "contracts fp32: exit 0", "bench 3b: exit 0"
    ]
    assert (out / "offload.txt").read_text().count("answers equal after the cycle: True") == 2
    assert (out / "roundtrip.txt").read_text().count("equal after waiting on the CPU: True") == 6
    assert "torch" in (out / "device.txt").read_text()
    assert " passed" in (out / "contracts-fp32.txt").read_text()
    rows = json.loads((out / "bench-3b.json").read_text())["rows"]
    assert [(row["preset"], row["budget"]) for row in rows] == [(None, None), ("off", None), ("auto", 0.33)]
    assert rows[-1]["work"] <= 0.35 and rows[-1]["predicted_speedup"] > 1.0
