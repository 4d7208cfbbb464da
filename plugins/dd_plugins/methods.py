"""Method presets that need only the built-in stages of the core."""

from __future__ import annotations

from ddcore.api import Method, hookimpl

from .fidelity import PROTOCOLS


@hookimpl
def register_methods(register):
    register("sd-txt2img", Method(
        adapter="none", prompt_builder="template", generator="txt2img", filter="none",
        train_on="real+synthetic", protocol=PROTOCOLS["sd-txt2img"],
        description="plain Stable Diffusion text-to-image with the class prompt, no adaptation",
    ))
    register("real-finetune", Method(
        generator=None, train_on="real", protocol=PROTOCOLS["real-finetune"],
        description="the classifier fine-tuned on the real shots only (the paper's Real-finetune)",
    ))
    register("zero-shot", Method(
        generator=None, train_on="none", protocol=PROTOCOLS["zero-shot"],
        description="CLIP zero-shot with the class-prompt head, no training",
    ))
