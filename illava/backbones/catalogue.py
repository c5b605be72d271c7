"""Checkpoints offered for download (Load LVLM's "download:" entries, ``python -m illava download``).

Each is a hub repo in transformers' own format that a backbone here loads natively. Download sizes are
the repos' ``*.safetensors`` files as the hub lists them (decimal GB; every one is stored in bf16);
the Qwen2.5-VL-7B size is its parameter count (8.29B) times 2 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 10**9
# Running a model needs its weights plus room for activations and the KV cache of a few images at the
# paper budget (about a tenth of the weights) and the CUDA context and kernels (about 1 GB).
ACTIVATION_SHARE = 0.1
RUNTIME_BYTES = 1 * GB


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint: its hub repo, its ``model_type`` and the bytes its weights take."""

    repo_id: str
    model_type: str
    download_bytes: int

    @property
    def folder(self) -> str:
        """The model folder's name: the repo's name without its owner."""
        return self.repo_id.rsplit("/", 1)[-1]

    @property
    def memory_bytes(self) -> int:
        """Memory to run it in bf16: the weights, plus ``ACTIVATION_SHARE`` of them, plus ``RUNTIME_BYTES``."""
        return int(self.download_bytes * (1 + ACTIVATION_SHARE)) + RUNTIME_BYTES


CATALOGUE: tuple[Checkpoint, ...] = (
    Checkpoint("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava_onevision", 1_790_000_000),
    Checkpoint("OpenGVLab/InternVL3-1B-hf", "internvl", 1_880_000_000),
    Checkpoint("Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl", 4_260_000_000),
    Checkpoint("Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl", 4_420_000_000),
    Checkpoint("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl", 7_510_000_000),
    Checkpoint("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", 16_580_000_000),
)
