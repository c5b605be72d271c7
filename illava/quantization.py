"""8-bit and 4-bit weights through transformers' bitsandbytes integration, on CUDA and on the CPU.

bitsandbytes (>= 0.48) runs both on CUDA and, through its CPU backend, on the CPU, so one library
serves every device; its 4-bit is NF4 with double quantization, computing in the model's dtype.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

QUANTIZATIONS = ("none", "8-bit", "4-bit")


def check_quantization(quantization: str) -> None:
    """Raise ValueError when ``quantization`` is unknown or its packages are missing, saying what to install."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    if quantization == "none":
        return
    missing = [name for name in ("bitsandbytes", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(
            f"{quantization} loading needs {' and '.join(missing)}: pip install 'bitsandbytes>=0.48' accelerate "
            "(or choose quantization none)"
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
