"""Merge profiles: the merge settings calibration fitted to one model, found when the model loads.

A profile is a small JSON file: the model's identity, per kind of input (image, video) and per
token budget the configuration calibration chose with its measured fidelity and cost, a
description of the calibration inputs and the library version. It lives in the model folder
(``illava_profile.json``, as the demo model ships it) or in a per-user store named by the model's
identity, which wins over the folder's. A profile is never applied to another model: its identity
must match.

``auto_config`` turns a budget into a configuration: the profile's, or without one the paper
preset at that budget, saying which it used.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from .config import MergeConfig, preset

PROFILE_NAME = "illava_profile.json"
FORMAT = 1
KINDS = ("image", "video")
# Bytes of each weight file's data read into the identity: enough to tell a fine-tune from its base.
SAMPLE_BYTES = 1 << 16


class ProfileError(ValueError):
    """A profile that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class ProfileEntry:
    """The configuration calibration chose for one kind of input at one budget, and what it measured.

    budget: the fraction of visual tokens meant to reach the later LLM layers; token_fraction: the
    fraction measured on the calibration inputs; kl: mean KL divergence of the next-token
    distributions from the unmerged model's along its own answers; agreement: the share of inputs
    whose answer every step keeps; cost: estimated ViT + prefill FLOPs relative to merging off.
    """

    budget: float
    config: MergeConfig
    kl: float
    agreement: float
    token_fraction: float
    cost: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "config": self.config.to_dict(),
            "kl": self.kl,
            "agreement": self.agreement,
            "token_fraction": self.token_fraction,
            "cost": self.cost,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProfileEntry":
        return cls(
            budget=check_budget(data["budget"]),
            config=MergeConfig.from_dict(data["config"]),
            kl=float(data["kl"]),
            agreement=float(data["agreement"]),
            token_fraction=float(data["token_fraction"]),
            cost=float(data["cost"]),
        )


@dataclass(frozen=True)
class MergeProfile:
    """A model's fitted merge settings: per kind, entries in decreasing budget."""

    identity: str
    entries: dict[str, tuple[ProfileEntry, ...]]
    calibration: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "identity": self.identity,
            "library_version": self.version,
            "calibration": self.calibration,
            "entries": {kind: [entry.to_dict() for entry in entries] for kind, entries in self.entries.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MergeProfile":
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r} is not {FORMAT}")
        entries = {}
        for kind, rows in data["entries"].items():
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r}")
            entries[kind] = tuple(sorted((ProfileEntry.from_dict(row) for row in rows), key=lambda e: -e.budget))
        return cls(str(data["identity"]), entries, dict(data.get("calibration", {})), str(data.get("library_version", "")))

    def entry(self, kind: str, budget: float) -> ProfileEntry | None:
        """The entry for ``kind`` whose budget is nearest ``budget`` (in ratio); None without entries of that kind."""
        entries = self.entries.get(kind, ())
        if not entries:
            return None
        return min(entries, key=lambda e: abs(math.log(e.budget / budget)))


def check_budget(budget: Any) -> float:
    """``budget`` as a float, or a ValueError saying it must be a fraction of the visual tokens in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or not 0.0 < budget <= 1.0:
        raise ValueError(
            f"the budget must be in (0, 1] (the fraction of visual tokens that reach the later LLM layers, "
            f"e.g. 0.33), got {budget!r}"
        )
    return float(budget)


def model_identity(folder: str | Path) -> str:
    """A hash of the model's config, its weight files' headers and a sample of their data.

    Cheap for any size: it reads the config, each safetensors header and 64 KiB from the middle of
    each file, so a copy of the model has the same identity and a fine-tune of it another.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    config = json.loads((folder / "config.json").read_text())
    digest.update(json.dumps(config, sort_keys=True).encode())
    for weights in sorted(folder.glob("*.safetensors")):
        with weights.open("rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            digest.update(weights.name.encode())
            digest.update(handle.read(header_length))
            size = weights.stat().st_size
            handle.seek(max(8 + header_length, size // 2 - SAMPLE_BYTES // 2))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()[:32]


def user_profile_dir() -> Path:
    """The per-user profile store: ``$ILLAVA_PROFILE_DIR``, else ``~/.cache/illava/profiles``.

    Inside ComfyUI the pack uses ComfyUI's user directory instead (``user/illava/profiles``).
    """
    configured = os.environ.get("ILLAVA_PROFILE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "illava" / "profiles"


def read_profile(path: str | Path, identity: str | None = None) -> MergeProfile:
    """The profile in ``path``; a ProfileError if it is unreadable, malformed or (given ``identity``)
    belongs to another model."""
    path = Path(path)
    try:
        profile = MergeProfile.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ProfileError(f"the merge profile {str(path)!r} is unreadable or malformed ({error}): calibrate again") from None
    if identity is not None and profile.identity != identity:
        raise ProfileError(
            f"the merge profile {str(path)!r} was fitted to another model (identity {profile.identity}, this "
            f"model's is {identity}): it is not used; calibrate this model"
        )
    return profile


def write_profile(profile: MergeProfile, path: str | Path) -> Path:
    """Write ``profile`` atomically: a reader sees the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(profile.to_dict(), indent=1) + "\n")
    os.replace(partial, path)
    return path


def store_path(identity: str, store: str | Path | None = None) -> Path:
    """Where a model's profile goes in a profile store (the per-user one by default)."""
    return Path(store or user_profile_dir()) / f"{identity}.json"


def find_profile(folder: str | Path, stores: Sequence[str | Path] = ()) -> tuple[MergeProfile | None, str]:
    """The user's own profile of the model (the first store that has one), else the one its folder ships;
    with a note saying which file, or why none.

    The user's own comes first: calibrating a model that ships a profile must take effect. A profile
    of another model, or a corrupt one, is skipped (and named in the note), never applied.
    """
    folder = Path(folder)
    identity = model_identity(folder)
    candidates = [store_path(identity, store) for store in (*stores, user_profile_dir())] + [folder / PROFILE_NAME]
    problems = []
    shipped = folder / PROFILE_NAME
    for path in dict.fromkeys(candidates):
        if not path.is_file():
            continue
        # Short, since the nodes show it: the folder's profile by its role, a stored one by its file.
        where = "merge profile shipped with the model" if path == shipped else f"merge profile {path.name} in {path.parent}"
        try:
            return read_profile(path, identity), where
        except ProfileError as error:
            problems.append(str(error))
    return None, "; ".join(problems) or "no merge profile for this model"


def auto_config(lvlm, budget: float, kind: str = "image") -> MergeConfig:
    """The configuration ``auto`` uses for ``kind`` at ``budget`` in a loaded model (``LVLM``): its profile's
    entry nearest the budget with the keep ratios moved to the budget, or without a profile the paper
    preset for ``kind`` at that budget.

    The result's ``origin`` says which, so the stats and the nodes can show it.
    """
    budget = check_budget(budget)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    profile, note, backbone = lvlm.profile, lvlm.profile_note, lvlm.backbone
    entry = profile.entry(kind, budget) if profile is not None else None
    if entry is not None:
        config = at_budget(entry.config, budget)
        origin = f"auto: {kind} profile entry for {entry.budget:.0%} (calibrated; {note}), at {budget:.0%}"
    else:
        name = f"paper-{kind}"
        config = at_budget(preset(name, backbone.vit_depth, backbone.llm_depth, backbone.stage2_choices), budget)
        origin = f"auto: {note}, so the {name} preset at {budget:.0%} (not fitted to this model; calibrate it)"
    return replace(config, origin=origin)


def at_budget(config: MergeConfig, budget: float) -> MergeConfig:
    """``config`` with its keep ratios scaled so that together they keep ``budget``, split between the stages
    as before (in log ratio); a config without stages gains nothing."""
    keeps = {}
    if config.stage1_active:
        keeps["stage1_keep"] = config.stage1_keep
    if config.stage2_active:
        keeps["stage2_keep"] = config.stage2_keep
    if not keeps:
        return config
    total = math.log(math.prod(keeps.values()))
    if total == 0.0:
        share = {name: 1.0 / len(keeps) for name in keeps}
    else:
        share = {name: math.log(keep) / total for name, keep in keeps.items()}
    return replace(config, **{name: min(1.0, budget ** share[name]) for name in keeps})
