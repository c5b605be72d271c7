"""Loading a Hugging Face model folder into an ``LVLM`` handle, safely and offline."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .backbones import Backbone, backbone_for, supported_model_types, transformers_shortfall
from .profiles import MergeProfile, find_profile
from .quantization import quantization_config

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")
# The dtype choices the CLI and the nodes offer: auto, then the short names of DTYPES.
DTYPE_CHOICES = ("auto", "bf16", "fp16", "fp32")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; the message says what to fix."""


@dataclass(frozen=True)
class LVLM:
    """A loaded vision-language model: the transformers model, its processor and its backbone adapter."""

    model: torch.nn.Module
    processor: Any
    backbone: Backbone
    path: Path
    device: torch.device
    dtype: torch.dtype
    profile: MergeProfile | None = None
    profile_note: str = "no merge profile for this model"
    quantization: str = "none"

    @property
    def model_id(self) -> str:
        return f"{self.path}|{self.dtype}|{self.device}|{self.quantization}"

    @property
    def weights_bytes(self) -> int:
        """Memory the weights take, quantized ones at their stored size."""
        return self.model.get_memory_footprint()

    @property
    def pad_token_id(self) -> int:
        tokenizer = self.processor.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def eos_token_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        if self.processor.tokenizer.eos_token_id is not None:
            ids.add(self.processor.tokenizer.eos_token_id)
        return ids


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available: use 'cpu' or 'auto'")
    return torch.device(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer read next measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_cached_memory(device: torch.device) -> None:
    """Hand the GPU memory the caching allocator holds unused back to the device (after a failed batch)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes bfloat16 itself (Ampere and later, compute capability 8+): older cards (T4,
    V100) emulate it several times slower and without the fused attention kernels, which
    ``torch.cuda.is_bf16_supported()`` counts as support."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(sorted(DTYPES))}; got {dtype!r}")
    return DTYPES[dtype]


def check_model_folder(path: str | Path, allow_pickle: bool = False) -> dict:
    """Validate a model folder before transformers sees it; returns its config.json as a dict."""
    folder = Path(path)
    if not folder.exists():
        raise ModelFolderError(f"model folder {str(folder)!r} does not exist: check the path")
    if not folder.is_dir():
        raise ModelFolderError(f"{str(folder)!r} is a file; point to the folder holding config.json and *.safetensors")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{str(folder)!r} has no config.json: it is not a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"{str(config_file)!r} is not valid JSON ({error}); re-download or repair it") from None
    model_type = config.get("model_type")
    if model_type not in supported_model_types():
        raise ModelFolderError(
            f"{str(folder)!r} holds a {model_type!r} model; iLLaVA supports {', '.join(supported_model_types())}"
        )
    shortfall = transformers_shortfall(model_type)
    if shortfall is not None:
        raise ModelFolderError(f"{str(folder)!r} holds a {model_type!r} model: {shortfall}")
    safetensors = list(folder.glob("*.safetensors"))
    pickles = list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth"))
    if not safetensors and pickles and not allow_pickle:
        raise ModelFolderError(
            f"{str(folder)!r} has only pickle weights ({pickles[0].name}); pickle files can run code when loaded. "
            "Convert them to .safetensors, or allow pickle loading explicitly if you trust the source"
        )
    if not safetensors and not pickles:
        raise ModelFolderError(f"{str(folder)!r} has no weights: expected model*.safetensors files next to config.json")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            raise ModelFolderError(f"{str(folder)!r} is missing weight shards {missing}: the download is incomplete")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(
            f"{str(folder)!r} has no tokenizer files ({' or '.join(TOKENIZER_FILES)}): copy them from the original model"
        )
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise ModelFolderError(
            f"{str(folder)!r} has no image processor config ({' or '.join(PROCESSOR_FILES)}): copy it from the original model"
        )
    return config


def load(
    path: str | Path,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    profile_stores: Sequence[str | Path] = (),
    quantization: str = "none",
    weights_device: str | torch.device | None = None,
) -> LVLM:
    """Load a supported model folder with transformers' own classes, from local files only.

    ``quantization`` ("none", "8-bit", "4-bit") stores the weights in bitsandbytes' 8-bit or NF4 4-bit
    form; 8-bit with dtype auto computes in fp16, as its matmuls do anyway. ``weights_device`` is where the weights are put (default: ``device``, where inputs go): a
    memory manager that moves them to ``device`` itself, as ComfyUI's does, loads them to its offload device.
    The model's merge profile (``auto``'s settings) is looked up in ``profile_stores``, then in the
    per-user store, then in the folder (``profiles.find_profile``); ``profile_note`` says what was found.
    """
    folder = Path(path)
    check_model_folder(folder, allow_pickle)
    if attn_implementation not in ATTENTIONS:
        raise ValueError(f"attn_implementation must be one of {ATTENTIONS}, got {attn_implementation!r}")
    torch_device = resolve_device(device)
    # LLM.int8 multiplies in fp16 whatever the model's dtype (casting, and logging a warning, every call).
    torch_dtype = torch.float16 if quantization == "8-bit" and dtype == "auto" else resolve_dtype(dtype, torch_device)
    if attn_implementation == "flash_attention_2" and torch_dtype == torch.float32:
        raise ValueError("flash attention runs only in fp16 or bf16: choose dtype bf16 or fp16, or attention sdpa")
    placed = resolve_device(weights_device) if weights_device is not None else torch_device
    quantized = quantization_config(quantization, torch_dtype)
    settings = dict(
        dtype=torch_dtype, attn_implementation=attn_implementation, trust_remote_code=trust_remote_code,
        use_safetensors=not allow_pickle,
        # Each weight is read straight to where it lives: no whole copy in host RAM first, no second move.
        # bitsandbytes quantizes them as they are placed.
        device_map={"": placed},
        **({"quantization_config": quantized} if quantized is not None else {}),
    )
    model, processor = _from_pretrained(folder, settings)
    profile, note = find_profile(folder, profile_stores)
    return LVLM(
        model=model,
        processor=processor,
        backbone=backbone_for(model),
        path=folder,
        device=torch_device,
        dtype=torch_dtype,
        profile=profile,
        profile_note=note,
        quantization=quantization,
    )


def _from_pretrained(folder: Path, settings: dict):
    """transformers' own model (in eval mode) and processor from local files; any failure inside transformers
    becomes one ModelFolderError naming the folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, **settings)
        processor = AutoProcessor.from_pretrained(
            folder, local_files_only=True, trust_remote_code=settings["trust_remote_code"]
        )
    except Exception as error:  # noqa: BLE001 - any failure inside transformers becomes one clear message
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFolderError(f"could not load the model in {str(folder)!r}: {first}") from error
    return model.eval(), processor
