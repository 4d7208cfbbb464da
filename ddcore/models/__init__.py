"""Model loading: Stable Diffusion pipelines, open_clip CLIP models, tiny offline stand-ins."""

from .clip import (
    LoadedClip,
    load_clip,
    save_open_clip_folder,
    uses_quick_gelu,
)
from .diffusion import (DEFAULT_BASE_MODEL, denoising_target, load_sd_pipeline, model_identity, swap_scheduler,
                        torch_dtype, training_dtype)
from .paths import dd_home, hub_offline
from .tiny import save_tiny_sd, tiny_clip, tiny_sd_pipeline

__all__ = [
    "DEFAULT_BASE_MODEL",
    "LoadedClip",
    "dd_home",
    "denoising_target",
    "hub_offline",
    "load_clip",
    "load_sd_pipeline",
    "model_identity",
    "save_open_clip_folder",
    "save_tiny_sd",
    "swap_scheduler",
    "tiny_clip",
    "tiny_sd_pipeline",
    "torch_dtype",
    "training_dtype",
    "uses_quick_gelu",
]
