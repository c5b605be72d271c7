"""Node outputs remembered by what actually changes them.

ComfyUI keys a node's cache on every widget upstream of it, so a stage-2 knob would re-run the vision
encoder, and an ignored knob (a custom layer under a preset, a temperature under greedy decoding) would
re-run everything after it. Encode and Generate look here first, keyed only on their real inputs.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Hashable

import numpy as np
import torch


class OutputMemo:
    """The ``size`` most recent results, by key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: Hashable, value: Any) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def content_key(value: Any) -> Hashable:
    """A key for a node input by its content: tensors and arrays by a digest of their bytes, other values
    by identity while the memo holds them (a ComfyUI VIDEO object stays the same object while cached)."""
    if isinstance(value, torch.Tensor):
        raw = value.detach().cpu().contiguous().flatten().view(torch.uint8).numpy()
        return ("tensor", tuple(value.shape), str(value.dtype), _digest(raw))
    if isinstance(value, np.ndarray):
        return ("array", value.shape, str(value.dtype), _digest(np.ascontiguousarray(value).view(np.uint8)))
    if value is None or isinstance(value, (str, int, float, bool)):
        return ("value", value)
    return ("object", id(value), _Pin(value))


def _digest(raw: np.ndarray) -> str:
    return hashlib.blake2b(raw.tobytes(), digest_size=16).hexdigest()


class _Pin:
    """Holds an object while a key names it by ``id`` (so the id is not reused), and compares equal to any pin."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Pin)

    def __hash__(self) -> int:
        return 0
