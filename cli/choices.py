"""Options with a fixed set of values: checked when parsed (a bad value is a usage error, exit
code 2, naming the accepted ones), listed in ``--help`` and completed by the shell.

The lists come from the core (``TRAIN_ON``, ``STAGES``, ``SPACES``, ``REAL_SETS``), so they cannot drift from
what the core accepts. A feature space and a device are open forms (``clip:SPEC``,
``cuda:1``): their known forms are completed, and the form, not the value, is checked.
"""

from __future__ import annotations

from typing import Callable

import typer
from click.shell_completion import CompletionItem

from ddcore.kinds import TRAIN_ON
from ddcore.pipeline import STAGES
from ddcore.quality_report import REAL_SETS, SPACES

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
QUALITY_SPACES = ("classifier", *SPACES)  # dd compare: also the first classifier's own CLIP


def _completer(values: tuple[str, ...]) -> Callable:
    def complete(ctx, param, incomplete: str) -> list[CompletionItem]:
        # A form's placeholder (clip:SPEC) completes to its prefix (clip:), which the user fills in.
        forms = [v.split(":")[0] + ":" if ":" in v and v.split(":")[1].isupper() else v for v in values]
        return [CompletionItem(v) for v in dict.fromkeys(forms) if v.startswith(incomplete)]

    return complete


def _exact(option: str, values: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}", param_hint=option)
        return value

    return parse


def _form(option: str, values: tuple[str, ...]) -> Callable[[str], str]:
    """Values like ``clip`` or ``clip:SPEC``: the part before ':' must be a known form, and a
    form written with a placeholder needs something after its ':' (a number for ``N``)."""
    open_forms = {v.split(":")[0]: v.split(":")[1] for v in values if ":" in v}
    closed = {v for v in values if ":" not in v}

    def parse(value: str) -> str:
        head, colon, rest = value.strip().partition(":")
        placeholder = open_forms.get(head)
        if not colon and head in closed:
            return value
        if colon and rest and placeholder is not None and (placeholder != "N" or rest.isdigit()):
            return value
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}", param_hint=option)

    return parse


def choice_option(default, *names: str, values: tuple[str, ...], help: str, forms: bool = False):
    """A ``typer.Option`` taking one of ``values`` (``forms``: or ``NAME:...`` for an open form)."""
    check = (_form if forms else _exact)(names[0], values)
    return typer.Option(default, *names, help=f"{help} One of: {', '.join(values)}.", metavar="TEXT",
                        parser=lambda v: v if v is None else check(v), shell_complete=_completer(values))


def train_on_option():
    return choice_option(None, "--train-on", values=TRAIN_ON,
                         help="Training data of the classifier (none: zero-shot). Default: the method's.")


def stop_after_option():
    return choice_option(None, "--stop-after", values=STAGES[:-1], help="Stop after this stage.")


def device_option(default, help: str):
    return choice_option(default, "--device", values=DEVICES, forms=True, help=help)


def features_option(default, *names: str, values: tuple[str, ...], help: str):
    return choice_option(default, *names, values=values, forms=True, help=help)
