"""Load LVLM: a supported model folder from models/LLM or models/VLM, or a catalogue checkpoint downloaded
there when the user picks it (never otherwise)."""

from __future__ import annotations

import importlib.util
import logging

import torch

from ..illava import LVLM, ModelFolderError
from ..illava.backbones import family_names, supported_model_types
from ..illava.loading import ATTENTIONS, DTYPE_CHOICES
from ..illava.quantization import QUANTIZATIONS, check_quantization
from . import comfy_compat
from .handle import LVLMHandle, shared_model
from .model_folders import check_model_choice, fetch_model, model_choices, resolve_model

log = logging.getLogger("illava")


def devices() -> list[str]:
    """auto, cpu and cuda, plus each GPU by number when there are several."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["auto", "cuda", "cpu"] + ([f"cuda:{i}" for i in range(count)] if count > 1 else [])



class LoadLVLM:
    """Loads a vision-language model folder into an ILLAVA_LVLM handle shared by the other nodes."""

    CATEGORY = "iLLaVA"
    FUNCTION = "load"
    RETURN_TYPES = ("ILLAVA_LVLM",)
    RETURN_NAMES = ("lvlm",)
    OUTPUT_TOOLTIPS = ("The loaded model, for Encode Image and Generate.",)
    DESCRIPTION = (
        "Loads a Hugging Face model folder (config.json + *.safetensors + processor files) from models/LLM or "
        "models/VLM with transformers' own classes. Nothing is downloaded unless you pick a 'download:' entry "
        "(a checkpoint of the catalogue, saved to models/LLM once). Supported model types: "
        f"{', '.join(supported_model_types())} ({', '.join(family_names())}; InternVL in transformers format). "
        "The bundled illava-scenes-qwen2.5-vl is a small demo model "
        "for the example workflows."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        models = model_choices()
        return {
            "required": {
                "model": (models, {"tooltip": "A model folder under models/LLM or models/VLM (or extra_model_paths.yaml's LLM / VLM). A 'download:' entry downloads that checkpoint into models/LLM when the workflow runs (size, then memory needed in bf16); once there, its folder is listed instead."}),
                "device": (devices(), {"default": "auto", "tooltip": "auto: ComfyUI's device (the GPU unless --cpu). cuda:N picks one of several GPUs."}),
                "dtype": (list(DTYPE_CHOICES), {"default": "auto", "tooltip": "auto: bf16 on GPUs that support it, else fp16; fp32 on CPU."}),
                "attention": (list(ATTENTIONS), {"default": "sdpa", "tooltip": "flash_attention_2 needs the flash-attn package and a CUDA GPU; otherwise sdpa is used with a warning."}),
                "keep_loaded": ("BOOLEAN", {"default": True, "tooltip": "Off: move the weights off the GPU after each Generate (slower, frees VRAM for other models)."}),
                "trust_remote_code": ("BOOLEAN", {"default": False, "tooltip": "Lets the model folder run its own Python code while loading. Only turn on for folders from a source you trust; the supported models do not need it."}),
            },
            # Optional, so that saved workflows and API prompts from before it still load.
            "optional": {
                "quantization": (list(QUANTIZATIONS), {"default": "none", "tooltip": "8-bit or 4-bit (NF4) weights through bitsandbytes, on the GPU or the CPU: about half or a quarter of the memory, slightly different answers. Needs the bitsandbytes and accelerate packages."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, model: str, **_: object) -> str:
        try:
            folder = resolve_model(model)
        except ModelFolderError:
            return ""
        files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.name.endswith(".safetensors"))
        return ";".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in files)

    @classmethod
    def VALIDATE_INPUTS(cls, model: str) -> bool | str:
        # Only the model: ComfyUI reports a message once for every input this takes.
        try:
            check_model_choice(model)
        except ModelFolderError as error:
            return str(error)
        return True

    def load(
        self, model: str, device: str, dtype: str, attention: str, keep_loaded: bool, trust_remote_code: bool,
        quantization: str = "none",
    ) -> dict:
        folder = fetch_model(model)
        device = _device(device)
        try:
            check_quantization(quantization)
        except ValueError as error:
            raise ValueError(f"Load LVLM: {error}") from None
        try:
            shared = shared_model(folder, device, dtype, _attention(attention, device), trust_remote_code, quantization)
        except ModelFolderError as error:
            raise ModelFolderError(f"Fix or replace the model folder {model!r}: {error}") from error
        return {"ui": {"text": [model_summary(shared.lvlm)]}, "result": (LVLMHandle(shared=shared, keep_loaded=keep_loaded),)}


def model_summary(lvlm: LVLM) -> str:
    """E.g. 'qwen2_5_vl, ViT 32 / LLM 36 layers | weights 2.1 GB (4-bit, torch.bfloat16) for cuda:0'."""
    backbone = lvlm.backbone
    weights = f"{lvlm.weights_bytes / 1e9:.2f} GB" if lvlm.weights_bytes >= 1e8 else f"{lvlm.weights_bytes / 1e6:.1f} MB"
    form = lvlm.quantization if lvlm.quantization != "none" else str(lvlm.dtype).removeprefix("torch.")
    return (
        f"{lvlm.model.config.model_type}, ViT {backbone.vit_depth} / LLM {backbone.llm_depth} layers | "
        f"weights {weights} ({form}) for {lvlm.device}\n{lvlm.profile_note}"
    )


def _device(choice: str) -> str:
    if choice == "auto":
        comfy_device = comfy_compat.default_device()
        return str(comfy_device) if comfy_device is not None else "auto"
    return choice


def _attention(choice: str, device: str) -> str:
    if choice != "flash_attention_2":
        return choice
    if importlib.util.find_spec("flash_attn") is None:
        log.warning("iLLaVA: flash_attention_2 was chosen but the flash-attn package is not installed; using sdpa")
        return "sdpa"
    if device == "cpu":
        log.warning("iLLaVA: flash_attention_2 needs a CUDA GPU; using sdpa on the CPU")
        return "sdpa"
    return choice


