"""``python -m illava.lab.device_check``: what only a GPU shows, on tiny models of every family.

- ``offload``: 8-bit and 4-bit weights loaded to the offload device (the CPU), moved to the GPU, asked a
  question, moved back and asked again, as ComfyUI's memory management moves them: the answers must
  match and the GPU memory must return to where it started.
- ``syncs``: one encode and one generate per family with both stages on, under
  ``torch.cuda.set_sync_debug_mode("warn")``: every host synchronisation, by source line and count (a
  count that grows with the layers is a sync inside a layer loop).
- ``roundtrip``: tokens kept on the CPU between runs (as the nodes keep them) answer exactly as tokens
  that never left the GPU.

On a CPU the same steps run (there is nothing to offload to and no syncs to count), so the script that
calls this is known to work before a GPU ever runs it.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import warnings
from pathlib import Path

import torch

from .. import GenerationOptions, MergeConfig, encode, generate, load
from ..testing.models import build_model_folder

FAMILIES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "llava_onevision", "internvl", "minicpmv")
BOTH_STAGES = MergeConfig(stage1_layers=(1,), stage1_keep=0.5, stage2_layers=(2,), stage2_keep=0.5)
OPTIONS = GenerationOptions(max_new_tokens=4)
PROMPT = "What is in the picture?"


def _image():
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(224, 280, 3, generator=generator) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _answer(lvlm, config: MergeConfig = BOTH_STAGES):
    visuals = encode(lvlm, [_image()], config)
    return visuals, generate(lvlm, visuals, PROMPT, config, OPTIONS, return_logits=True)


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def offload(folder: Path, device: torch.device) -> list[str]:
    """The quantized offload cycle, for 8-bit and 4-bit: one line each."""
    lines = []
    for quantization in ("8-bit", "4-bit"):
        lvlm = load(folder, device=device, quantization=quantization, weights_device="cpu")
        start = _allocated(device)
        lvlm.model.to(device)
        first = _answer(lvlm)[1]
        lvlm.model.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        back = _allocated(device) - start
        lvlm.model.to(device)
        second = _answer(lvlm)[1]
        same = first.ids == second.ids and all(torch.equal(a, b) for a, b in zip(first.logits, second.logits))
        lines.append(f"{quantization}: answers equal after the cycle: {same}; GPU memory after offload: {back} B above start")
        del lvlm
    return lines


def syncs(folders: dict[str, Path], device: torch.device) -> list[str]:
    """Every host sync of one encode + generate per family, by source line, most frequent first."""
    if device.type != "cuda":
        return ["no CUDA device: nothing to count"]
    lines = []
    for family, folder in folders.items():
        lvlm = load(folder, device=device, dtype="bf16")
        _answer(lvlm)  # first-call costs
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _answer(lvlm)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        places = collections.Counter(
            f"{'/'.join(Path(w.filename).parts[-3:])}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
        )
        lines.append(f"{family}: {sum(places.values())} syncs")
        lines += [f"  {count:4d}  {place}" for place, count in places.most_common()]
    return lines


def roundtrip(folders: dict[str, Path], device: torch.device) -> list[str]:
    """Per family: do tokens that waited on the CPU answer bit for bit as tokens that stayed on the device?"""
    lines = []
    for family, folder in folders.items():
        lvlm = load(folder, device=device)
        visuals, direct = _answer(lvlm)
        waited = generate(lvlm, visuals.to(torch.device("cpu")), PROMPT, BOTH_STAGES, OPTIONS, return_logits=True)
        same = direct.ids == waited.ids and all(torch.equal(a, b) for a, b in zip(direct.logits, waited.logits))
        lines.append(f"{family}: equal after waiting on the CPU: {same}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("offload", "syncs", "roundtrip"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as root:
        families = ("qwen2_5_vl",) if args.check == "offload" else FAMILIES
        folders = {arch: build_model_folder(Path(root) / arch, arch=arch, initializer_range=0.1) for arch in families}
        if args.check == "offload":
            lines = offload(folders["qwen2_5_vl"], device)
        elif args.check == "syncs":
            lines = syncs(folders, device)
        else:
            lines = roundtrip(folders, device)
    print("\n".join(lines))
    return 0 if all("False" not in line for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
