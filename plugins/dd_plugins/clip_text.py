"""The class prompts of a CLIP text head, shared by the CLIP classifier and the CLIP filter."""

from __future__ import annotations

from ddcore.api import ConfigError

ENSEMBLE = "ensemble"

# How the class prompts of the head are written. "datadream": the official DataDream
# classifier's one template, "a {domain}photo of a {classname}" (classify/models/clip.py);
# "coop": CoOp's per-data-set template ("a centered satellite photo of {}."); "ensemble": every
# template the data set has (open_clip's 80 ImageNet ones when it has one). "single" is the
# name "coop" had before (kept for configs that use it).
TEMPLATE_SETS = ("datadream", "coop", "ensemble")
TEMPLATE_ALIASES = {"single": "coop"}


def check_templates(options, kind: str) -> None:
    if TEMPLATE_ALIASES.get(options.templates, options.templates) not in TEMPLATE_SETS:
        raise ConfigError(f"{kind}.templates must be one of {', '.join(TEMPLATE_SETS)}, not {options.templates!r}")


def class_templates(options, dataset) -> list[str]:
    """The prompt templates (``{}`` = class name): the ``template`` option, else per ``templates``
    (see ``TEMPLATE_SETS``)."""
    if options.template:
        return [options.template]
    which = TEMPLATE_ALIASES.get(options.templates, options.templates)
    if which == "datadream":
        return [f"a {dataset.domain}photo of a {{}}"]
    if which == ENSEMBLE:
        if len(dataset.templates) > 1:
            return list(dataset.templates)
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    return [dataset.templates[0] if dataset.templates else "a photo of a {}."]
