"""Merge profiles: the merge settings calibration fitted to one model, found when the model loads.

A profile is a small JSON file: the model's identity, per kind of input (image, video) and per
budget (a share of the work on the picture, ``budget``) the configuration calibration chose with its
measured fidelity and work, a description of the calibration inputs and the library version. It lives in the model folder
(``illava_profile.json``, as the demo model ships it) or in a per-user store named by the model's
identity, which wins over the folder's. A profile is never applied to another model: its identity
must match.

``resolve.auto_config`` turns a budget into a configuration from the profile. A profile of format 1
counted budgets in visual tokens after the last merge; it is refused, with a note to calibrate again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .budget import check_budget
from .config import MergeConfig

PROFILE_NAME = "illava_profile.json"
FORMAT = 2
KINDS = ("image", "video")
# Bytes of each weight file's data read into the identity: enough to tell a fine-tune from its base.
SAMPLE_BYTES = 1 << 16


class ProfileError(ValueError):
    """A profile that cannot be used; the message says which file and why."""


class OutdatedProfile(ValueError):
    """A profile of format 1, whose budgets counted visual tokens after the last merge, not work."""


@dataclass(frozen=True)
class ProfileEntry:
    """The configuration calibration chose for one kind of input at one budget, and what it measured.

    budget: the share of the work on visual tokens it was chosen for; work: the share measured on the
    calibration inputs; kl: mean KL divergence of the next-token distributions from the unmerged
    model's along its own answers; agreement: the share of inputs whose answer every step keeps;
    token_fraction: the visual tokens left after the last merge, for reference.
    """

    budget: float
    config: MergeConfig
    kl: float
    agreement: float
    work: float
    token_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "config": self.config.to_dict(),
            "kl": self.kl,
            "agreement": self.agreement,
            "work": self.work,
            "token_fraction": self.token_fraction,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProfileEntry":
        return cls(
            budget=check_budget(data["budget"]),
            config=MergeConfig.from_dict(data["config"]),
            kl=float(data["kl"]),
            agreement=float(data["agreement"]),
            work=float(data["work"]),
            token_fraction=float(data["token_fraction"]),
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
        if data.get("format") == 1:
            raise OutdatedProfile("format 1")
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
    except OutdatedProfile:
        raise ProfileError(
            f"the merge profile {str(path)!r} counts its budgets in visual tokens, as versions before budgets of "
            f"work did, so its settings would buy little speed: calibrate again"
        ) from None
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
