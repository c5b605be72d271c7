"""Timings readable on a shared machine: medians of interleaved repeats, speedups paired by round, and a note
when the machine was too busy for them to mean much."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import torch

# Repeats whose middle half spans more than this share of their median were disturbed by other work.
NOISY_SPREAD = 0.25


def spread(samples: list[float]) -> float:
    """The interquartile range of ``samples`` over their median (0 for fewer than two)."""
    if len(samples) < 2:
        return 0.0
    low, _, high = statistics.quantiles(samples, n=4, method="inclusive")
    return (high - low) / statistics.median(samples)


def paired_speedups(times: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """Per name, the median over rounds of ``baseline``'s time over its own in the same round.

    Pairing by round cancels a slowdown that hits one round as a whole, which a ratio of medians does not.
    """
    return {
        name: statistics.median(base / own for base, own in zip(times[baseline], samples))
        for name, samples in times.items()
    }


def busy_note(times: dict[str, list[float]], load: float | None = None, cpus: int | None = None) -> str | None:
    """A line saying the timings are rough, when the repeats of any name varied widely or the load average
    exceeds the CPU count; None when they look steady. ``load`` and ``cpus`` default to this machine's."""
    load = os.getloadavg()[0] if load is None else load
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    worst = max(spread(samples) for samples in times.values())
    if worst <= NOISY_SPREAD and load <= cpus:
        return None
    return (
        f"note: the machine is busy (load average {load:.1f} on {cpus} CPUs; repeats varied by up to {worst:.0%} "
        "of their median): the times and speedups are rough; rerun on an idle machine to compare them"
    )


def device_name(device: torch.device) -> str:
    """What ran the timings: the GPU's name, or the CPU's model name (from /proc/cpuinfo on Linux), since one
    CPU computes bfloat16 natively and another emulates it several times slower."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
