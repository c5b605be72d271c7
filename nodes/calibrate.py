"""iLLaVA Calibrate: fits the loaded model's merge settings on the user's own images or video (no labels)."""

from __future__ import annotations

from typing import Any

import torch

from ..illava.budget import STANDARD_BUDGETS
from ..illava.calibrate import CalibrationInput, calibrate, parse_budgets
from ..illava.media import to_pil_images
from ..illava.profiles import store_path, write_profile
from ..illava.viz import front_chart
from . import comfy_compat
from .encode import check_image_batch
from .handle import LVLMHandle
from .preview import to_image_batch


class Calibrate:
    """Measures many merge settings against the unmerged model on your inputs and saves the best per budget."""

    CATEGORY = "iLLaVA"
    FUNCTION = "calibrate"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("table", "chart")
    OUTPUT_TOOLTIPS = (
        "The chosen settings per budget: their work, tokens kept and fidelity (KL, answers kept).",
        "Every measured setting, its work against answers kept; the chosen ones ringed.",
    )
    DESCRIPTION = (
        "Label-free: the unmerged model answers each input, and every candidate is scored by how closely it "
        "reproduces those answers. The profile is saved for this model in ComfyUI's user folder, and Merge "
        "Config's auto uses it from then on. 16-32 varied images of the kind you caption are plenty."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "lvlm": ("ILLAVA_LVLM", {"tooltip": "From Load LVLM: the model to calibrate."}),
                "prompt": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "Describe this image.", "tooltip": "What to ask of every input: the kind of prompt you will use."}),
                "budgets": ("STRING", {"default": ", ".join(str(b) for b in STANDARD_BUDGETS), "tooltip": "Shares of the work on the picture to fit settings for (0.33 = a third)."}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "A batch of your own images; each is one calibration input."}),
                "video": ("VIDEO", {"tooltip": "A video of the kind you will ask about (fits the video settings)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, budgets: str) -> bool | str:
        try:
            parse_budgets(budgets)
        except ValueError as error:
            return str(error)
        return True

    def calibrate(
        self, lvlm: LVLMHandle, prompt: str, budgets: str, images: torch.Tensor | None = None, video: Any = None
    ) -> dict:
        if not prompt.strip():
            raise ValueError("Write a prompt in iLLaVA Calibrate: what you will ask of such inputs")
        inputs = []
        if images is not None:
            check_image_batch(images)
            inputs += [CalibrationInput(f"image {i + 1}", prompt, (image,)) for i, image in enumerate(to_pil_images(images))]
        if video is not None:
            inputs.append(CalibrationInput("video", prompt, video=video))
        if not inputs:
            raise ValueError("Connect images (a batch of 16-32 of your own) or a video to iLLaVA Calibrate")
        bar = comfy_compat.progress_bar(1)
        model = lvlm.acquire()
        try:
            report = calibrate(
                model,
                inputs,
                parse_budgets(budgets),
                progress=lambda done, total, _: bar.update_absolute(done, total),
                check_interrupt=comfy_compat.check_interrupt,
                description=f"{len(inputs)} inputs from iLLaVA Calibrate, prompt {prompt.strip()[:80]!r}",
            )
        finally:
            lvlm.finish()
        path = write_profile(report.profile, store_path(report.profile.identity, comfy_compat.profile_store()))
        lvlm.shared.use_profile(report.profile, f"merge profile {path}")
        table = f"{report.table()}\n\ncalibrated in {report.seconds:.0f} s; saved to {path}"
        measured = [row for rows in report.measured.values() for row in rows]
        chosen = [entry for entries in report.profile.entries.values() for entry in entries]
        chart = front_chart(measured, chosen)
        ui = {"text": [table], "images": comfy_compat.save_preview_images([chart])}
        return {"ui": ui, "result": (table, to_image_batch([chart]))}
