"""The ComfyUI nodes of iLLaVA: thin wrappers that turn node inputs into library calls."""

from ..illava.lab.demo_model import shipped_models_root
from . import comfy_compat, routes
from .calibrate import Calibrate
from .caption import Caption
from .caption_folder import CaptionFolder
from .config import MergeConfigNode
from .encode import EncodeImage
from .encode_video import EncodeVideo
from .examples import ExampleImage, ExampleVideo
from .generate import Generate
from .load import LoadLVLM
from .preview import PreviewTokens

comfy_compat.register_model_folders()
# Listed after the user's own folders, so the shipped demo model appears in Load LVLM out of the box.
comfy_compat.add_model_root("LLM", str(shipped_models_root()))
routes.register()

NODE_CLASS_MAPPINGS = {
    "iLLaVA_LoadLVLM": LoadLVLM,
    "iLLaVA_MergeConfig": MergeConfigNode,
    "iLLaVA_EncodeImage": EncodeImage,
    "iLLaVA_EncodeVideo": EncodeVideo,
    "iLLaVA_Generate": Generate,
    "iLLaVA_PreviewTokens": PreviewTokens,
    "iLLaVA_Calibrate": Calibrate,
    "iLLaVA_Caption": Caption,
    "iLLaVA_CaptionFolder": CaptionFolder,
    "iLLaVA_ExampleImage": ExampleImage,
    "iLLaVA_ExampleVideo": ExampleVideo,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "iLLaVA_LoadLVLM": "Load LVLM (iLLaVA)",
    "iLLaVA_MergeConfig": "iLLaVA Merge Config",
    "iLLaVA_EncodeImage": "Encode Image (iLLaVA)",
    "iLLaVA_EncodeVideo": "Encode Video (iLLaVA)",
    "iLLaVA_Generate": "Generate (iLLaVA)",
    "iLLaVA_PreviewTokens": "Preview Retained Tokens (iLLaVA)",
    "iLLaVA_Calibrate": "iLLaVA Calibrate",
    "iLLaVA_Caption": "iLLaVA Caption",
    "iLLaVA_CaptionFolder": "iLLaVA Caption Folder",
    "iLLaVA_ExampleImage": "iLLaVA Example Image",
    "iLLaVA_ExampleVideo": "iLLaVA Example Video",
}
