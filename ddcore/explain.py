"""What a run resolves to, set against the protocol its method and stages declare.

``Run.resolved()`` gives every setting a run uses; a protocol row (``ddcore.stages.Setting``)
names one of them by key. ``dd run --explain`` prints both; tests/test_fidelity.py checks that
each row's value is the one the preset resolves to.

Keys: a run setting (``steps``, ``images_per_class``), a stage kind for the plugin chosen
(``filter`` -> ``"none"``), ``KIND.OPTION`` for a stage option, or ``KIND.NAME`` for a value the
stage derives (``Stage.describe``, e.g. ``adapter.group_steps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ddcore.stages import STAGE_KINDS, Setting

MISSING = object()


@dataclass(frozen=True)
class Case:
    """What a protocol value may depend on."""

    dataset: str
    shots: int
    classes: int


def lookup(resolved: dict[str, Any], key: str) -> Any:
    """The value ``key`` names in ``resolved`` (``MISSING`` when there is none)."""
    settings, stages = resolved["settings"], resolved["stages"]
    kind, dot, name = key.partition(".")
    if not dot:
        if key in settings:
            return settings[key]
        if key in STAGE_KINDS:
            return stages[key]["name"] if key in stages else None
        return MISSING
    stage = stages.get(kind)
    if stage is None:
        return MISSING
    if name in stage["options"]:
        return stage["options"][name]
    return stage["derived"].get(name, MISSING)


@dataclass
class ProtocolRow:
    """One protocol row as this run resolved it."""

    setting: Setting
    value: Any  # what the run resolved (MISSING: the run has no such value)
    expected: Any  # what the protocol says the preset resolves to

    @property
    def differs(self) -> bool:
        """The run changed this setting away from the protocol (a flag, a file, --set)."""
        return self.value is not MISSING and self.value != self.expected


def protocol_rows(method, stages: dict[str, Any], resolved: dict[str, Any]) -> list[ProtocolRow]:
    """The method's protocol rows, then those of each chosen stage, resolved for this run."""
    settings = resolved["settings"]
    case = Case(settings["dataset"], settings["shots"], settings["classes"])
    protocols = [method.protocol] + [type(stage).protocol for stage in stages.values()]
    rows, seen = [], set()
    for setting in (setting for protocol in protocols for setting in protocol):
        if setting.key in seen:
            continue  # the method's row wins over a stage's for the same key
        seen.add(setting.key)
        rows.append(ProtocolRow(setting, lookup(resolved, setting.key), setting.expected(case)))
    return rows
