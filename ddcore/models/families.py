"""Families of diffusion models: what differs between SD 1.x/2.x, SDXL, SD 3/3.5 and FLUX.1.

A checkpoint's family is read from the pipeline class its ``model_index.json`` names
(``_class_name``), never guessed from its name or path. A :class:`Family` says what the
project's generators and adapters need to know about it: its pipeline classes per task, its
denoiser (a U-Net or a transformer), how a prompt becomes the pipeline's embedding arguments
and whether classifier-free guidance runs, and its default dtype on a GPU. Generators are
written once against it; a stage that works with some families only names them
(:func:`require_family`) and refuses the others in one line before any weight loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ddcore.errors import ConfigError


@dataclass(frozen=True)
class Family:
    name: str  # "sd", "sdxl", "sd3", "flux"
    title: str  # what users call it
    text_to_image: str  # diffusers pipeline classes per task
    image_to_image: str
    inpaint: str
    denoiser: str  # the pipeline's denoiser component: "unet" or "transformer"
    embeddings: tuple[str, ...]  # encode_prompt's results, in its order, as pipe() arguments
    negative_prompts: bool  # False: guidance is distilled into the model (FLUX), no negative branch
    gpu_dtype: str  # "fp16" or "bf16": what its checkpoints are made for
    text_encoders: tuple[str, ...]  # the CLIP encoders (components) a LoRA may adapt
    t5: str | None  # the T5 encoder's component: never trained, its embeddings cached
    flow_matching: bool  # trained by rectified flow (SD3, FLUX), not DDPM noise
    # The attention projections of the joint (text+image) transformer blocks besides
    # to_q/k/v/out: the text stream's, which a LoRA on an MMDiT / FLUX block adapts too.
    context_projections: tuple[str, ...] = ()
    # GPU memory (GiB) the family's pipeline needs in its dtype with every component resident
    # (weights and a 1024 px batch of one); below it, generation offloads by default.
    resident_gib: float = 12.0

    def lora_targets(self, base: list[str]) -> list[str]:
        """The denoiser's LoRA target modules: ``base`` (the U-Net's attention by default) and,
        on a transformer, the text stream's projections of its joint blocks."""
        return list(dict.fromkeys([*base, *self.context_projections]))

    def frozen_modules(self, pipe: Any) -> list[Any]:
        return [getattr(pipe, self.t5)] if self.t5 else []

    @property
    def pipeline_classes(self) -> tuple[str, ...]:
        return self.text_to_image, self.image_to_image, self.inpaint

    def pipeline_class(self, task: str):
        import diffusers

        return getattr(diffusers, {"text-to-image": self.text_to_image, "image-to-image": self.image_to_image, "inpaint": self.inpaint}[task])

    def init_arguments(self, loading: bool = False) -> dict[str, Any]:
        """What the project passes when it builds or loads one of the family's pipelines: no
        safety checker (SD: it blacks out images a classifier flags, which would poison a
        training set) and no invisible watermark (SDXL: it changes pixels; diffusers adds it
        whenever ``invisible_watermark`` happens to be installed)."""
        if self.name == "sd":
            return {"safety_checker": None, "requires_safety_checker": False} if loading else \
                {"requires_safety_checker": False}
        return {"add_watermarker": False} if self.name == "sdxl" else {}

    def guided(self, pipe: Any, guidance: float) -> bool:
        """Whether the pipeline runs a negative branch at this guidance scale, as it decides
        itself (a guidance-distilled U-Net, LCM's ``time_cond_proj_dim``, never does)."""
        if not self.negative_prompts:
            return False
        config = getattr(pipe, self.denoiser).config
        return guidance > 1 and getattr(config, "time_cond_proj_dim", None) is None

    def encode(self, pipe: Any, text: str, negative: str | None, guided: bool) -> dict[str, Any]:
        """One prompt's embedding arguments for ``pipe(...)`` (batch of one), in place of
        ``prompt`` / ``negative_prompt``; the tensors are what ``pipe(prompt=text)`` computes."""
        device = pipe._execution_device
        if self.name == "sd":
            out = pipe.encode_prompt(text, device, 1, guided, negative_prompt=negative)
        elif self.name == "sdxl":
            out = pipe.encode_prompt(prompt=text, device=device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=guided, negative_prompt=negative)
        elif self.name == "sd3":
            out = pipe.encode_prompt(prompt=text, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=guided, negative_prompt=negative)
        else:  # flux: (prompt_embeds, pooled_prompt_embeds, text_ids); text_ids are rebuilt by pipe()
            out = pipe.encode_prompt(prompt=text, prompt_2=None, device=device, num_images_per_prompt=1)
        found = dict(zip(self.embeddings, out))
        return {name: value for name, value in found.items() if value is not None and (guided or "negative" not in name)}


SD = Family(name="sd", title="Stable Diffusion 1.x/2.x", text_to_image="StableDiffusionPipeline",
            image_to_image="StableDiffusionImg2ImgPipeline", inpaint="StableDiffusionInpaintPipeline", denoiser="unet",
            embeddings=("prompt_embeds", "negative_prompt_embeds"), negative_prompts=True, gpu_dtype="fp16",
            text_encoders=("text_encoder",), t5=None, flow_matching=False, resident_gib=6.0)
SDXL = Family(name="sdxl", title="SDXL", text_to_image="StableDiffusionXLPipeline",
              image_to_image="StableDiffusionXLImg2ImgPipeline", inpaint="StableDiffusionXLInpaintPipeline",
              denoiser="unet", embeddings=("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                           "negative_pooled_prompt_embeds"),
              negative_prompts=True, gpu_dtype="fp16", text_encoders=("text_encoder", "text_encoder_2"), t5=None,
              flow_matching=False, resident_gib=14.0)
SD3 = Family(name="sd3", title="Stable Diffusion 3/3.5", text_to_image="StableDiffusion3Pipeline",
             image_to_image="StableDiffusion3Img2ImgPipeline", inpaint="StableDiffusion3InpaintPipeline",
             denoiser="transformer", embeddings=("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                                                 "negative_pooled_prompt_embeds"),
             negative_prompts=True, gpu_dtype="bf16", text_encoders=("text_encoder", "text_encoder_2"),
             t5="text_encoder_3", flow_matching=True,
             context_projections=("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"), resident_gib=32.0)
FLUX = Family(name="flux", title="FLUX.1", text_to_image="FluxPipeline", image_to_image="FluxImg2ImgPipeline",
              inpaint="FluxInpaintPipeline", denoiser="transformer", embeddings=("prompt_embeds", "pooled_prompt_embeds"),
              negative_prompts=False, gpu_dtype="bf16", text_encoders=("text_encoder",), t5="text_encoder_2",
              flow_matching=True, context_projections=("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"),
              resident_gib=36.0)

FAMILIES: dict[str, Family] = {f.name: f for f in (SD, SDXL, SD3, FLUX)}
ALL = tuple(FAMILIES)
SD_ONLY = ("sd",)
# The offline tiny models of each family (ddcore/models/tiny.py), by --base-model name.
TINY_MODELS = {"tiny": "sd", "tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux"}


def family_of(model_index: dict[str, Any]) -> str | None:
    """The family of a pipeline's ``model_index.json`` (``None``: a pipeline class we do not know)."""
    name = model_index.get("_class_name")
    return next((family.name for family in FAMILIES.values() if name in family.pipeline_classes), None)


def family_of_pipeline(pipe: Any) -> Family:
    """The family of a loaded pipeline (by its class)."""
    name = type(pipe).__name__
    found = next((family for family in FAMILIES.values() if name in family.pipeline_classes), None)
    if found is None:
        raise ConfigError(f"a {name} is not a pipeline of a family this project knows ({titles(ALL)})")
    return found


def titles(names: tuple[str, ...]) -> str:
    return ", ".join(FAMILIES[name].title for name in names)


def require_family(model_index: dict[str, Any], source: str, supported: tuple[str, ...] = ALL,
                   who: str = "--base-model") -> Family:
    """``model_index``'s family, or a one-line :class:`ConfigError` naming the families
    ``who`` (a stage, or the option) works with."""
    family = family_of(model_index)
    if family in supported:
        return FAMILIES[family]
    name = model_index.get("_class_name", "no _class_name")
    kind = f"the {FAMILIES[family].title} family" if family else "a pipeline class this project does not know"
    raise ConfigError(f"'{source}' is a checkpoint of {kind} ({name} in its model_index.json); {who} works with "
                      f"{titles(supported)} checkpoints")
