"""The demo's timings: speedups paired by round, and a note when the machine is too busy for them."""

from __future__ import annotations

import pytest

from illava.lab.timing import busy_note, paired_speedups, spread

STEADY = {"off": [1.0, 1.02, 0.98, 1.01, 0.99], "fast": [0.5, 0.51, 0.49, 0.5, 0.5]}


def test_pairing_by_round_cancels_a_slowdown_of_whole_rounds():
    # The machine slowed ten times from the middle of round 3 on, after "off" ran in it and before "fast"
    # did: a ratio of medians would read 0.2x.
    times = {"off": [1.0, 1.0, 1.0, 10.0, 10.0], "fast": [0.5, 0.5, 5.0, 5.0, 5.0]}
    assert paired_speedups(times, "off") == {"off": 1.0, "fast": 2.0}
    assert paired_speedups(STEADY, "off")["fast"] == pytest.approx(2.0, rel=0.05)


def test_spread_is_the_middle_half_over_the_median():
    assert spread([1.0]) == 0.0
    assert spread([1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
    assert spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0 / 3.0)


def test_busy_note_only_when_repeats_vary_or_the_load_exceeds_the_cpus():
    assert busy_note(STEADY, load=0.5, cpus=2) is None
    loaded = busy_note(STEADY, load=3.5, cpus=2)
    assert loaded is not None and "busy" in loaded and "load average 3.5 on 2 CPUs" in loaded
    noisy = busy_note({**STEADY, "fast": [0.5, 2.0, 0.4, 1.5, 0.5]}, load=0.5, cpus=2)
    assert noisy is not None and "rough" in noisy
