"""Generator ``txt2img``: the base model's diffusers text-to-image pipeline (any family: SD,
SDXL, SD3, FLUX; ddcore/models/families.py), one seed per image.

Every image gets its own ``torch.Generator`` seeded with the item's seed, created on the CPU,
so an image does not depend on its batch, and a CPU and a GPU draw the same initial noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddcore.api import Generator, hookimpl, option

from .prompt_embeddings import PromptEmbeddings


class Txt2Img(Generator):
    """Text-to-image with the prompt builder's prompts."""

    @dataclass
    class Options:
        negative_prompt: str = option("", "the negative prompt of every image (guidance steers away from it); "
                                          "empty: none")
        scheduler: str = option("", "a diffusers scheduler class name (e.g. DDIMScheduler); empty keeps the "
                                    "checkpoint's")
        dtype: str = option("auto", "pipeline dtype: auto (on a GPU the family's: fp16 for SD and SDXL, bf16 for SD3 "
                                    "and FLUX; fp32 on the CPU), fp32, fp16 or bf16")
        # Speed only: the images stay the same (up to numerical noise), so no key includes them.
        channels_last: str = option("auto", "channels-last U-Net and VAE: auto (on a GPU), on or off", keyed=False)
        fuse_qkv: str = option("auto", "fused q/k/v projections: auto (on a GPU without a LoRA adapter), on or off",
                               keyed=False)
        compile: str = option("off", "torch.compile the denoiser: on or off (the first batch pays the compile)",
                              keyed=False)
        offload: str = option("auto", "model CPU offload, components on the GPU only while they run (less memory, "
                                      "slower): auto (on when the GPU has less memory than the family needs "
                                      "resident, e.g. FLUX on 24 GB), on or off", keyed=False)
        vae_tiling: bool = option(False, "decode in tiles: less memory at large sizes; pixels may differ where tiles "
                                         "meet", keyed="if-set")
        # Shortcuts that change the images: off by default (the paper's protocol), in the key when set.
        step_cache: int = option(0, "DeepCache-style step caching: the U-Net's deep path runs on one step of "
                                    "every N, the shallow branch on the others (0: off); changes the images",
                                 keyed="if-set")
        token_merging: float = option(0.0, "ToMe: merge this fraction of the tokens in the finest self-attention "
                                           "layers (0: off, tomesd's default is 0.5); changes the images",
                                      keyed="if-set")

        def __post_init__(self) -> None:  # bad values fail when the run is configured, before any model loads
            from ddcore.api import ConfigError, resolve_switch

            if self.step_cache < 0:
                raise ConfigError(f"generator.step_cache must be 0 (off) or an interval of at least 2 steps, "
                                  f"not {self.step_cache}")
            if not 0 <= self.token_merging < 1:
                raise ConfigError(f"generator.token_merging (ToMe's ratio) must be in [0, 1), not {self.token_merging}")
            if self.step_cache > 1 and resolve_switch("generator.compile", self.compile, False):
                raise ConfigError("generator.step_cache cannot be combined with generator.compile=on (the cached "
                                  "steps run another path of the U-Net); set one of them off")

    def load_base(self, context):
        """The pipeline adapters load into and select on: the base model's text-to-image one. A
        subclass may load another, or render with a pipeline built on its modules (``pipe``)."""
        from ddcore.api import load_pipeline

        return load_pipeline(context.config.base_model, device=context.device, dtype=self.options.dtype)

    def setup(self, context, adapter_dir):
        from ddcore.api import resolve_switch, save_memory, speed_up, swap_scheduler

        self.context = context
        self.base = self.pipe = self.load_base(context)
        note = swap_scheduler(self.base, self.options.scheduler)
        if note:
            context.reporter.log(note)
        self.base_identity = self.base.dd_model_id
        self.adapter = context.adapter if adapter_dir is not None else None
        if self.adapter is not None:  # before the speed-ups: a compiled U-Net must see its LoRA layers
            self.adapter.load_into(context, self.base, adapter_dir)
        self.prompt_embeddings = PromptEmbeddings()
        if self.adapter is not None and resolve_switch("generator.compile", self.options.compile, False):
            self.adapter.prepare_compile(self.base)  # per-class weights then swap without recompiling
        self.take_shortcuts()  # before speed_up: the step cache replaces the forward that compile wraps
        self.speedups = speed_up(self.base, device=context.device, has_lora=self.adapter is not None,
                                 channels_last=self.options.channels_last, fuse_qkv=self.options.fuse_qkv,
                                 compile=self.options.compile)
        self.merge_tokens()  # after speed_up: fusing q/k/v resets the attention processors
        self.speedups.update(save_memory(self.base, device=context.device, offload=self.options.offload,
                                         vae_tiling=self.options.vae_tiling))
        levers = [name for name, on in self.speedups.items() if on is True]
        if levers:
            context.reporter.log(f"generator speed-ups: {', '.join(levers)} (attention: {self.speedups['attention']})")

    def take_shortcuts(self) -> None:
        """The family checks of the options that need a U-Net or a negative branch, and the step cache."""
        from ddcore.api import ConfigError, apply_step_cache

        family = self.base.dd_family
        if self.options.negative_prompt and not family.negative_prompts:
            raise ConfigError(f"generator.negative_prompt: {family.title} has no negative branch (its guidance is "
                              "distilled into the model); leave it empty")
        used = [name for name in ("step_cache", "token_merging") if getattr(self.options, name)]
        if used and family.denoiser != "unet":
            raise ConfigError(f"generator.{used[0]} works on U-Net models (SD 1.x/2.x, SDXL), not on this "
                              f"{family.title} transformer; leave it at 0")
        self.step_cache = None
        if self.options.step_cache:
            self.step_cache, _ = apply_step_cache(self.base.unet, self.options.step_cache)

    def merge_tokens(self) -> None:
        from ddcore.api import apply_token_merging

        if self.options.token_merging:
            apply_token_merging(getattr(self.base.unet, "_orig_mod", self.base.unet), self.options.token_merging)

    def call_arguments(self, items) -> dict:
        """The pipeline arguments every image-making call shares: the prompts' embeddings (each
        distinct prompt encoded once), one CPU generator per image, steps, guidance. Switches
        a per-class adapter to the batch's class first (it may change the text encoder)."""
        import torch

        config = self.context.config
        selection = None
        if self.adapter is not None:
            self.adapter.select(self.base, items[0].label)
            selection = items[0].label
        return {
            **self.prompt_embeddings.arguments(self.pipe, [item.prompt.text for item in items],
                                               negative=self.options.negative_prompt, guidance=config.guidance,
                                               selection=selection),
            "num_inference_steps": config.steps,
            "guidance_scale": config.guidance,
            "generator": [torch.Generator(device="cpu").manual_seed(item.seed) for item in items],
            "output_type": "pil",
        }

    def generate(self, items):
        import torch

        resolution = self.context.config.resolution
        with torch.inference_mode():
            return self.pipe(**self.call_arguments(items), height=resolution, width=resolution).images

    def metadata(self):
        config = self.context.config
        return {
            "steps": config.steps,
            "guidance": config.guidance,
            "scheduler": type(self.pipe.scheduler).__name__,
            "resolution": config.resolution,
            "base_model": self.base_identity,
            "family": self.base.dd_family.name,
            "negative_prompt": self.options.negative_prompt,
            "step_cache": self.options.step_cache,
            "token_merging": self.options.token_merging,
            "vae_tiling": self.options.vae_tiling,
        }


@hookimpl
def register_generators(register):
    register("txt2img", Txt2Img, default=True)
