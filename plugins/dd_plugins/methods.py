"""Method presets that need only the built-in stages of the core."""

from __future__ import annotations

from ddcore.hookspecs import hookimpl
from ddcore.stages import Method


@hookimpl
def register_methods(register):
    register("sd-txt2img", Method(
        adapter="none", prompt_builder="template", generator="txt2img", filter="none",
        train_on="real+synthetic",
        description="plain Stable Diffusion text-to-image with the class prompt, no adaptation",
    ))
    register("real-finetune", Method(
        generator=None, train_on="real",
        description="the classifier fine-tuned on the real shots only (the paper's Real-finetune)",
    ))
    register("zero-shot", Method(
        generator=None, train_on="none",
        description="CLIP zero-shot with the class-prompt head, no training",
    ))
