"""The ILLAVA_LVLM value: a loaded model shared between Load nodes without keeping it alive."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..illava import LVLM, load
from ..illava.profiles import MergeProfile
from . import comfy_compat
from .memo import OutputMemo


ENCODES_REMEMBERED = 2
ANSWERS_REMEMBERED = 16


@dataclass(eq=False)
class SharedModel:
    """One loaded model, its ComfyUI memory-management patcher (None outside ComfyUI), and the latest
    encodings and answers made with it (``memo``), which go with the model when it is unloaded."""

    lvlm: LVLM
    patcher: Any
    encodes: OutputMemo = field(default_factory=lambda: OutputMemo(ENCODES_REMEMBERED))
    answers: OutputMemo = field(default_factory=lambda: OutputMemo(ANSWERS_REMEMBERED))

    def use_profile(self, profile: MergeProfile, note: str) -> None:
        """Use a profile calibration just fitted, for every node sharing this model."""
        self.lvlm = replace(self.lvlm, profile=profile, profile_note=note)


@dataclass(frozen=True, eq=False)
class LVLMHandle:
    """What Load LVLM outputs: the shared model plus this node's keep_loaded choice."""

    shared: SharedModel
    keep_loaded: bool

    def acquire(self) -> LVLM:
        """The model, with its weights on the compute device (ComfyUI may have offloaded them)."""
        comfy_compat.load_to_device(self.shared.patcher)
        return self.shared.lvlm

    def finish(self) -> None:
        """Give the compute device back after a run when keep_loaded is off."""
        if not self.keep_loaded:
            comfy_compat.release(self.shared.patcher)


# Weak values: the model lives exactly as long as some node output (ComfyUI's cache) holds a handle.
_shared: "weakref.WeakValueDictionary[tuple, SharedModel]" = weakref.WeakValueDictionary()


def shared_model(
    path: Path, device: str, dtype: str, attention: str, trust_remote_code: bool, quantization: str = "none"
) -> SharedModel:
    """Load the model, or reuse the one another node already loaded with the same settings.

    Inside ComfyUI the weights load to its offload device, and its memory management moves them to
    ``device`` when a node needs them, after freeing room for them.
    """
    key = (str(path), dtype, device, attention, quantization)
    found = _shared.get(key)
    if found is not None:
        return found
    stores = [store] if (store := comfy_compat.profile_store()) else []
    lvlm = load(
        path, device=device, dtype=dtype, attn_implementation=attention, trust_remote_code=trust_remote_code,
        profile_stores=stores, quantization=quantization, weights_device=comfy_compat.offload_device(),
    )
    patcher = comfy_compat.manage_model(lvlm.model, lvlm.device, lvlm.weights_bytes)
    shared = SharedModel(lvlm=lvlm, patcher=patcher)
    _shared[key] = shared
    return shared
