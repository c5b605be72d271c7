"""200 consecutive runs with varying inputs and configs: resident memory stays flat after warm-up."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_hundred_runs_grow_resident_memory_by_under_five_percent(model_dirs):
    done = subprocess.run(
        [sys.executable, "-m", "illava.lab.soak", model_dirs["qwen2_5_vl"], "200"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runs"] == 200
    assert result["growth"] < 0.05, f"resident memory grew {100 * result['growth']:.1f}% after warm-up: {result}"
