"""VariReal: minimal edits of a real shot that change one attribute (background, colour or
texture) to a feasible or an infeasible value (seed paper 002, "Does feasibility matter?").

Two stages and the presets of the paper's study:

- prompt builder ``attributes``: per class, prompts that name one value of the attribute, each a
  ``Prompt(text, info={"attribute", "value", "feasible", "value_source"})``; the core records the
  ``info`` fields in ``metadata.jsonl`` for every image. Values come, in this order, from
  ``values_file`` (a JSON file, e.g. lists an LLM wrote offline as in the paper), from
  ``text_model`` (any transformers causal LM, asked per class and feasibility, greedy, cached in
  ``<run>/varireal-values.json``) and from the built-in lists. The built-in lists are
  class-agnostic (a dog under water is infeasible, a fish is not); the file and the model give
  class-aware values as the paper's LLM did.
- generator ``varireal``: image ``i`` of a class edits shot ``i % K`` (img2img's rule, the source
  recorded in the metadata). The object is masked (SAM prompted with the image centre, or a
  folder of supplied masks), the mask grown by ``dilate`` pixels, and Stable Diffusion inpaints
  the background (attribute ``background``: everything outside the grown object mask) or the
  object (``color``, ``texture``: the grown object mask) with the attribute prompt.

The code is split by job: ``varireal_text`` (the language model and its answers),
``varireal_prompts`` (the prompt builder), ``varireal_masks`` (the segmenter and the masks);
this module holds the generator, the registrations and the presets.

See docs/varireal.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddcore.api import ConfigError, DataError, Method, StageError, hookimpl, option

from .img2img import Img2Img
from .varireal_masks import DEFAULT_SEGMENTER, MASKS_DIR, SamSegmenter, dilate, relative_mask_name, square_mask
from .varireal_prompts import ATTRIBUTES, FEASIBILITIES, AttributePrompts, canonical_attribute
from .varireal_prompts import ALIASES, BUILTIN_VALUES, TEMPLATES, VALUES_CACHE, article  # noqa: F401
from .varireal_text import (ANSWER_FORMAT, MAX_VALUE_CHARS, MAX_VALUE_WORDS, QUESTIONS,  # noqa: F401
                            TextGenerator, load_text_generator, parse_values)

TINY = "tiny"

# Which part of the image an attribute's edit repaints.
EDIT_REGION = {"background": "background", "color": "object", "texture": "object"}


# --------------------------------------------------------------------------- the generator


def load_inpaint_pipeline(model: str, *, device: str, dtype=None):
    """A dedicated inpainting checkpoint (hub id or diffusers folder) as a
    ``StableDiffusionInpaintPipeline``; one-line :class:`ModelNotFoundError` when not reachable."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from ddcore.api import load_sd_pipeline

    return load_sd_pipeline(model, device=device, dtype=dtype or torch.float32,
                            pipeline_class=StableDiffusionInpaintPipeline, what="inpainting model",
                            use="--set generator.inpaint_model=DIR")


class VariRealGenerator(Img2Img):
    """Inpaints the background or the object of a real shot with the attribute prompt."""

    families = ("sd",)  # SD 1.x/2.x inpainting

    pretrained_options = ("segmenter",)
    # The shots the planned images start from (plan_prompts); none when setup runs without it,
    # and then each shot is masked when its first image is rendered.
    _planned_sources: tuple = ()

    @dataclass
    class Options(Img2Img.Options):
        strength: float = option(1.0, "how much noise the edited region starts from, in (0, 1]; 1: it is repainted "
                                      "from pure noise")
        source_fit: str = option("crop", "how a shot and its mask become square: crop (a padded border would be "
                                         "background to fill) or pad")
        mask: str = option("sam", "sam (segment the object at the image centre) or folder (supplied masks, mask_dir)")
        segmenter: str = option(DEFAULT_SEGMENTER, 'a transformers SAM hub id or folder, or tiny', demo='tiny')
        mask_dir: str = option("", "for mask=folder: <mask_dir>/<shot path relative to the data root>.png, white = "
                                   "object")
        dilate: int = option(4, "pixels the object mask grows by before use (at --resolution)")
        region: str = option("auto", "what the edit repaints: auto (from the prompt's attribute), background or object")
        inpaint_model: str = option("", "a dedicated inpainting checkpoint (hub id or folder); empty: the base model's "
                                        "modules")
        paste_back: bool = option(False, "copy the source's pixels back outside the edited region after decoding")

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.mask not in ("sam", "folder"):
                raise ConfigError(f"generator.mask must be sam or folder, not {self.mask!r}")
            if self.mask == "folder" and not self.mask_dir:
                raise ConfigError("generator.mask=folder needs generator.mask_dir=DIR (one PNG per shot, white = "
                                  "object)")
            if self.dilate < 0:
                raise ConfigError(f"generator.dilate must be 0 or more pixels, not {self.dilate}")
            if self.region not in ("auto", "background", "object"):
                raise ConfigError(f"generator.region must be auto, background or object, not {self.region!r}")

    def setup(self, context, adapter_dir):
        o = self.options
        if o.mask == "folder" and not Path(o.mask_dir).expanduser().is_dir():
            raise DataError(f"generator.mask_dir {Path(o.mask_dir).expanduser()} is not a folder")
        super().setup(context, adapter_dir)  # img2img's checks, the base pipeline, the adapter
        self._masks: dict[Path, Any] = {}
        self.segmenter = SamSegmenter(o.segmenter, context.device) if o.mask == "sam" else None
        if self.segmenter is not None:
            self._segment(self._planned_sources)

    def plan_prompts(self, context, prompts):
        """img2img's prompts; the shots the planned images start from are noted, for setup to
        segment them."""
        prompts = super().plan_prompts(context, prompts)
        count = context.config.images_per_class  # image i takes prompt i % len: the first count are used
        self._planned_sources = tuple(prompt.source for planned in prompts.values() for prompt in planned[:count]
                                      if prompt.source is not None)
        return prompts

    def fingerprint(self, context):
        """The supplied masks of the run's shots: editing one makes a new set."""
        from ddcore.api import file_sha256

        if self.options.mask != "folder":
            return None
        folder = Path(self.options.mask_dir).expanduser()
        files = {str(name): file_sha256(folder / name) if (folder / name).is_file() else None
                 for name in sorted({relative_mask_name(s.path, context.dataset.root) for s in context.shots})}
        return {"masks": files}

    def load_base(self, context):
        """A dedicated inpainting checkpoint replaces the base model (adapters load into it)."""
        if not self.options.inpaint_model:
            return super().load_base(context)
        from ddcore.api import torch_dtype

        return load_inpaint_pipeline(self.options.inpaint_model, device=context.device,
                                     dtype=torch_dtype(self.options.dtype, context.device))

    def image_pipeline(self):
        from diffusers import StableDiffusionInpaintPipeline

        if isinstance(self.base, StableDiffusionInpaintPipeline):
            return self.base
        # The base (4-channel) UNet: diffusers keeps the source outside the edited region by
        # putting the source latents, noised to the current step, back there after every step.
        return StableDiffusionInpaintPipeline(**self.base.components, requires_safety_checker=False)

    # -- masks ------------------------------------------------------------------------------

    def _segment(self, sources) -> None:
        """SAM's masks of ``sources``, under a bar of their own, during setup: left to the first
        image of each shot, they would run inside the generation's bar and skew its rate."""
        paths = [p for p in dict.fromkeys(self.resolve(Path(s)) for s in sources) if p not in self._masks]
        if not paths:
            return
        with self.context.reporter.task("masking shots with SAM", len(paths)) as advance:
            for path in paths:
                self.object_mask(path)
                advance(1)

    def object_mask(self, source: Path):
        """The object mask of a shot at --resolution (bool array), computed once per shot and
        saved as ``<run>/varireal-masks/<shot path relative to the data root>.png``."""
        from PIL import Image

        from ddcore.api import atomic_save_image

        path = self.resolve(Path(source))
        if path in self._masks:
            return self._masks[path]
        name = relative_mask_name(path, self.context.dataset.root)
        if self.options.mask == "folder":
            file = Path(self.options.mask_dir).expanduser() / name
            if not file.is_file():
                raise DataError(f"generator.mask=folder: no mask for shot {path}; expected {file} (white = object)")
            from ddcore.api import load_rgb

            mask = square_mask(load_rgb(file), self.context.config.resolution, self.options.source_fit)
        else:
            mask = self.segmenter.object_mask(self._source_image(path))
        self._masks[path] = mask
        if not 0.01 <= mask.mean() <= 0.99:  # a segmenter that missed the object: the edit is (nearly) empty
            self.context.reporter.log(
                f"[yellow]the object mask of shot {path} covers {100 * mask.mean():.0f}% of the image[/]; the "
                f"edit will change {'nothing' if mask.mean() > 0.99 else 'almost everything'} there. Check "
                f"{Path(self.context.out) / MASKS_DIR / name} or supply masks (generator.mask=folder)")
        atomic_save_image(Path(self.context.out) / MASKS_DIR / name, Image.fromarray(mask.astype("uint8") * 255))
        return mask

    def region(self, item) -> str:
        """``background`` or ``object``: what the edit of ``item`` repaints."""
        if self.options.region != "auto":
            return self.options.region
        attribute = item.prompt.info.get("attribute")
        if attribute is None:
            raise StageError("generator 'varireal' needs prompts that name their attribute (prompt builder "
                             "'attributes'), or set generator.region=background or generator.region=object")
        return EDIT_REGION[canonical_attribute(attribute)]

    def edit_mask(self, item):
        """Bool array, True where the edit repaints: outside the grown object mask (background)
        or inside it (object)."""
        grown = dilate(self.object_mask(self.source(item)), self.options.dilate)
        return ~grown if self.region(item) == "background" else grown

    # -- rendering --------------------------------------------------------------------------

    def generate(self, items):
        import numpy as np
        import torch
        from PIL import Image

        resolution = self.context.config.resolution
        sources = [self._source_image(self.source(item)) for item in items]
        edits = [self.edit_mask(item) for item in items]
        masks = [Image.fromarray(e.astype(np.uint8) * 255) for e in edits]
        with torch.inference_mode():
            images = self.pipe(**self.call_arguments(items), image=sources, mask_image=masks,
                               strength=self.options.strength, height=resolution, width=resolution).images
        if self.options.paste_back:
            images = [Image.fromarray(np.where(e[..., None], np.asarray(img.convert("RGB")), np.asarray(src)))
                      for img, src, e in zip(images, sources, edits)]
        return images

    def metadata(self):
        o = self.options
        return {
            **super().metadata(),
            "mask": o.mask,
            "segmenter": self.segmenter.identity if self.segmenter is not None else None,
            "mask_prompt": "image centre point, highest predicted IoU" if o.mask == "sam" else None,
            "mask_dir": str(Path(o.mask_dir).expanduser().resolve()) if o.mask == "folder" else None,
            "edit_region_rule": ("auto: background -> outside the object, color/texture -> the object"
                                 if o.region == "auto" else o.region),
            "dilate": o.dilate,
            "inpaint_model": self.base_identity if o.inpaint_model else "base model (latent blending)",
            "paste_back": o.paste_back,
        }

    def item_metadata(self, item):
        edit = self.edit_mask(item)
        return {"edit_region": self.region(item), "edited_fraction": round(float(edit.mean()), 4)}


@hookimpl
def register_prompt_builders(register):
    register("attributes", AttributePrompts)


@hookimpl
def register_generators(register):
    register("varireal", VariRealGenerator)


@hookimpl
def register_methods(register):
    common = dict(adapter="none", prompt_builder="attributes", generator="varireal", filter="none",
                  train_on="real+synthetic")
    from .fidelity import PROTOCOLS

    register("varireal", Method(
        **common, protocol=PROTOCOLS["varireal"],
        description="VariReal (seed paper 002): inpaint the background of a real shot (SAM object mask) with a "
                    "feasible background; --set prompt_builder.attribute=color|texture, feasibility=infeasible|mixed",
    ))
    for attribute in ATTRIBUTES:
        for feasibility in FEASIBILITIES:
            what = "background" if attribute == "background" else f"object's {attribute}"
            register(f"varireal-{attribute}-{feasibility}", Method(
                **common,
                options={"prompt_builder.attribute": attribute, "prompt_builder.feasibility": feasibility},
                description=f"VariReal study: the {what} of a real shot inpainted with {feasibility} values",
            ))


__all__ = ["AttributePrompts", "SamSegmenter", "TextGenerator", "VariRealGenerator", "load_text_generator",
           "parse_values"]
