"""The kinds of plugin entry, in one table: how each is registered and spelled to users.

``--set KIND.OPTION``, the TOML tables, the registration hooks, the plugin checks and the
``dd plugins`` table are all derived from ``KINDS``; each stage kind's base class (in
``ddcore.stages``) names its kind. Nothing here imports the rest of the core.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    name: str
    hook: str  # the registration hook (ddcore.hookspecs)
    flag: str  # the CLI flag choosing one (also how errors and tables name the kind)
    settable: bool = True  # has options a user sets with --set KIND.OPTION / a [KIND] table
    # The defaults a plugin may register for the kind (``register(..., default=ROLE)``): the
    # core asks for them by role and names no plugin itself.
    roles: tuple[str, ...] = ("default",)

    @property
    def label(self) -> str:
        return self.flag.lstrip("-")


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("adapter", "register_adapters", "--adapter"),
    Kind("prompt_builder", "register_prompt_builders", "--prompt-builder"),
    Kind("generator", "register_generators", "--generator"),
    Kind("filter", "register_filters", "--filter"),
    Kind("classifier", "register_classifiers", "--classifier"),
    # demo: no --data and no --split (the offline demo); folder: --data alone; split: --split.
    Kind("dataset", "register_datasets", "--dataset", roles=("demo", "folder", "split")),
    Kind("method", "register_methods", "--method", settable=False),
)}

# The stages of a run, in order; a method preset chooses one plugin of each.
STAGE_KINDS = ("adapter", "prompt_builder", "generator", "filter", "classifier")
# The kinds whose options ``--set`` reaches.
SETTABLE_KINDS = tuple(name for name, kind in KINDS.items() if kind.settable)
ALL_KINDS = tuple(KINDS)

DEFAULT = "default"  # the role of a kind's default (``register(..., default=True)``)

# Which data a classifier trains on; "none" is zero-shot.
TRAIN_ON = ("real+synthetic", "synthetic", "real", "none")

# Run settings a method preset may choose (the generation protocol of its paper); explicit
# flags, TOML values and the demo profile still override them.
METHOD_SETTINGS = ("steps", "guidance")
