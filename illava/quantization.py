"""8-bit and 4-bit weights through transformers' bitsandbytes integration, on CUDA and on the CPU.

bitsandbytes (``BITSANDBYTES_FLOOR``) runs both on CUDA and, through its CPU backend, on the CPU, so one library
serves every device; its 4-bit is NF4 with double quantization, computing in the model's dtype.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any

import torch
from packaging.version import Version

QUANTIZATIONS = ("none", "8-bit", "4-bit")
# 0.48.0: the CPU backend, and 8-bit weights that keep their scales across .to() after a forward
# (bitsandbytes #1769), which ComfyUI's moves between the offload device and the GPU rely on.
BITSANDBYTES_FLOOR = "0.48.0"


def check_quantization(quantization: str) -> None:
    """Raise ValueError when ``quantization`` is unknown or its packages are missing, saying what to install."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "none":
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(
            f"{quantization} loading needs bitsandbytes: pip install 'bitsandbytes>={BITSANDBYTES_FLOOR}' "
            "(or choose quantization none)"
        )
    installed = importlib.metadata.version("bitsandbytes")
    if Version(installed) < Version(BITSANDBYTES_FLOOR):
        raise ValueError(
            f"{quantization} loading needs bitsandbytes {BITSANDBYTES_FLOOR} or later, not {installed}: earlier "
            "releases have no CPU backend, and their 8-bit weights lose their scales when moved between the GPU "
            f"and the offload device: pip install -U 'bitsandbytes>={BITSANDBYTES_FLOOR}' (or choose quantization none)"
        )


def quantization_config(quantization: str, dtype: torch.dtype) -> Any | None:
    """transformers' ``BitsAndBytesConfig`` for ``quantization``, computing in ``dtype``; None for none."""
    check_quantization(quantization)
    if quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "8-bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )
