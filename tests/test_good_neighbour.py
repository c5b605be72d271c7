"""Importing the library or the pack changes nothing process-wide: environment, torch's global state, logging."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, logging, os, sys
import torch

def state():
    root = logging.getLogger()
    return {
        "environ": dict(os.environ),
        "torch": [str(torch.get_default_dtype()), torch.get_num_threads(), torch.is_grad_enabled(),
                  torch.are_deterministic_algorithms_enabled(), torch.get_float32_matmul_precision()],
        "logging": [root.level, len(root.handlers), logging.getLogger("transformers").level],
    }

before = state()
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import illava
from nodes_harness import load_pack
load_pack()
after = state()
print(json.dumps({"before": before, "after": after}))
"""


def test_importing_the_library_and_the_pack_changes_nothing_process_wide():
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(ROOT), str(ROOT / "tests" / "nodes")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert done.returncode == 0, done.stderr
    states = json.loads(done.stdout.splitlines()[-1])
    before, after = states["before"], states["after"]
    assert after["environ"] == before["environ"]
    assert after["torch"] == before["torch"]
    assert after["logging"] == before["logging"]
