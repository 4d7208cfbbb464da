"""Model loading: Stable Diffusion pipelines, open_clip CLIP models, tiny offline stand-ins."""

from .clip import (
    LoadedClip,
    PlainMultiheadAttention,
    load_clip,
    restore_fused_attention,
    save_open_clip_folder,
    use_plain_attention,
    uses_quick_gelu,
)
from .diffusion import DEFAULT_BASE_MODEL, load_sd_pipeline, model_identity
from .paths import dd_home, hub_offline
from .tiny import save_tiny_sd, tiny_clip, tiny_sd_pipeline

__all__ = [
    "DEFAULT_BASE_MODEL",
    "LoadedClip",
    "PlainMultiheadAttention",
    "dd_home",
    "hub_offline",
    "load_clip",
    "load_sd_pipeline",
    "model_identity",
    "restore_fused_attention",
    "save_open_clip_folder",
    "save_tiny_sd",
    "tiny_clip",
    "tiny_sd_pipeline",
    "use_plain_attention",
    "uses_quick_gelu",
]
