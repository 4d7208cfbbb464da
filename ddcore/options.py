"""Stage options: declaring them (with a description and a demo value), parsing and validating.

A stage's ``Options`` is a dataclass; each field is one ``--set <kind>.<field>=VALUE``. Declare
a field with ``option()`` to give it a one-line description (shown by ``dd plugins NAME`` and
listed by the unknown-option error) and, optionally, the value the offline demo uses::

    @dataclass
    class Options:
        lr: float = option(1e-4, "AdamW learning rate", demo=1e-3)

A plain ``lr: float = 1e-4`` still works; it just has no description. This module is the
bottom of the core: it imports nothing of ``ddcore`` but the errors.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import MISSING, dataclass
from typing import Any

from ddcore.errors import ConfigError

HELP = "help"  # field metadata keys
DEMO = "demo"
UNKEYED = "unkeyed"
KEYED_IF_SET = "keyed-if-set"


def option(default: Any = MISSING, help: str = "", *, demo: Any = MISSING,
           default_factory: Any = MISSING, keyed: bool | str = True) -> Any:
    """A dataclass field with a description and, where the offline demo (tiny random models
    on 32-pixel digits) needs another value than the paper's, its ``demo`` value.

    ``keyed=False``: the option changes how fast the stage runs, not what it makes (a
    compiled denoiser, the writer threads), so it is left out of the stage's key and
    changing it reuses the finished output. ``keyed="if-set"``: in the key only when it
    differs from its default, so adding such an option later keeps every finished stage's
    key (the off-by-default shortcuts that change the images use it)."""
    if keyed not in (True, False, "if-set"):
        raise ValueError(f"option(keyed=...) must be True, False or 'if-set', not {keyed!r}")
    metadata = {HELP: help}
    if demo is not MISSING:
        metadata[DEMO] = demo
    if not keyed:
        metadata[UNKEYED] = True
    elif keyed == "if-set":
        metadata[KEYED_IF_SET] = True
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(frozen=True)
class OptionInfo:
    """One option as ``dd plugins NAME`` shows it."""

    name: str
    type: str
    default: Any
    help: str
    demo: Any = MISSING
    keyed: bool = True  # False: a speed option, left out of the stage key


def option_infos(options_cls: type) -> list[OptionInfo]:
    """Every option of a stage's ``Options``, in declaration order."""
    hints = typing.get_type_hints(options_cls)
    infos = []
    for f in dataclasses.fields(options_cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else MISSING)
        infos.append(OptionInfo(f.name, _type_name(hints.get(f.name, Any)), default,
                                f.metadata.get(HELP, ""), f.metadata.get(DEMO, MISSING), not f.metadata.get(UNKEYED)))
    return infos


def demo_values(options_cls: type) -> dict[str, Any]:
    """The options a stage sets for the offline demo (``option(..., demo=...)``)."""
    return {f.name: f.metadata[DEMO] for f in dataclasses.fields(options_cls) if DEMO in f.metadata}


def keyed_options(options: Any) -> dict[str, Any]:
    """A stage's options as its key sees them: every option but the ``keyed=False`` ones and
    the ``keyed="if-set"`` ones at their default."""
    values = dataclasses.asdict(options)
    return {f.name: values[f.name] for f in dataclasses.fields(options)
            if not f.metadata.get(UNKEYED) and not (f.metadata.get(KEYED_IF_SET) and values[f.name] == f.default)}


def option_names(options_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(options_cls)}


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (``3``, ``0.5``, ``true``, ``[1, 2]``), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def build_options(options_cls: type, raw: dict[str, Any], owner: str, kind: str) -> Any:
    """Validate and convert ``raw`` into ``options_cls``; unknown keys are errors that list the
    stage's options with their descriptions."""
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        valid = "; ".join(f"{kind}.{i.name}" + (f" ({i.help})" if i.help else "")
                          for i in option_infos(options_cls)) or "none"
        raise ConfigError(f"unknown option {kind}.{unknown[0]} for {owner}; its options: {valid}")
    hints = typing.get_type_hints(options_cls)
    values = {key: _coerce(value, hints.get(key, Any), f"{kind}.{key}") for key, value in raw.items()}
    return options_cls(**values)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, _UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    if isinstance(value, str) and annotation is not str:
        value = parse_value(value)
    allowed = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, _UnionType) else (annotation,)
    if value is None and type(None) in allowed:
        return None
    for target in allowed:
        if target is Any:
            return value
        if target is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if target is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if target is bool and isinstance(value, bool):
            return value
        if target is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        origin = typing.get_origin(target) or target
        if isinstance(origin, type) and origin not in (int, float, bool, str) and isinstance(value, origin):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"{key} must be {names}, not {value!r}")


_UnionType = type(int | None)
