"""The plugin author's contract: every hook a plugin can implement.

A plugin is a module (or object) with functions marked ``@hookimpl``, exposed through an entry
point in the ``ddcore`` group::

    [project.entry-points.ddcore]
    my-filter = "my_package.my_filter"

Registration hooks receive a ``register`` callback, in the style of ``llm``::

    @hookimpl
    def register_filters(register):
        register("sharpness", SharpnessFilter, description="drops blurry images")

``register(name, factory, description="", default=False)`` adds one named entry of that kind;
``default=True`` makes it the kind's default (the classifier a run uses when none is named, the
adapter a ``Method`` gets when it names none, ...), and for data sets ``default="demo"``,
``"folder"`` or ``"split"`` the loader used with no ``--data``, with ``--data`` alone, or with
``--split``. Two plugins claiming one default is an error naming both. ``factory`` is
a stage class (see ``ddcore.stages``) whose nested ``Options`` dataclass declares the settings
users can change with ``--set <kind>.<option>=VALUE``. Names are global per kind: two plugins
registering the same name is an error naming both.

Lifecycle hooks (``before_stage``, ``after_stage``, ``stage_failed``) run around every stage so
loggers (TensorBoard, W&B) can live in plugins. All hooks are called with keyword arguments; an
implementation may accept fewer arguments than its spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # imported for annotations only: keeps plugin loading light
    import typer

    from ddcore.stages import RunContext

PROJECT = "ddcore"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]

# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------


@hookspec
def register_adapters(register: Register) -> None:
    """Register adapters: stages that fit weights of the generator to the few-shot set.

    :param register: ``register(name, AdapterClass, description="")``; the class subclasses
        ``ddcore.stages.Adapter``.
    """


@hookspec
def register_prompt_builders(register: Register) -> None:
    """Register prompt builders: class names (+ real shots) -> prompts per class.

    :param register: ``register(name, PromptBuilderClass, description="")``.
    """


@hookspec
def register_generators(register: Register) -> None:
    """Register generators: prompts (+ source images, + adapter) -> images.

    :param register: ``register(name, GeneratorClass, description="")``.
    """


@hookspec
def register_filters(register: Register) -> None:
    """Register filters: decide which generated images are kept.

    :param register: ``register(name, FilterClass, description="")``.
    """


@hookspec
def register_classifiers(register: Register) -> None:
    """Register classifiers: train on real + synthetic images, then predict.

    :param register: ``register(name, ClassifierClass, description="")``.
    """


# --------------------------------------------------------------------------------------------
# Data sets and methods
# --------------------------------------------------------------------------------------------


@hookspec
def register_datasets(register: Register) -> None:
    """Register data set loaders, selected with ``--dataset NAME``.

    :param register: ``register(name, DatasetSourceClass, description="")``; the class
        subclasses ``ddcore.stages.DatasetSource``.
    """


@hookspec
def register_methods(register: Register) -> None:
    """Register methods: named presets of stage choices, selected with ``--method NAME``.

    :param register: ``register(name, method, description="")`` where ``method`` is a
        ``ddcore.stages.Method``.
    """


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


@hookspec
def register_commands(app: "typer.Typer") -> None:
    """Add subcommands to the ``dd`` command line.

    :param app: the Typer application; use ``@app.command()`` on it.
    """


# --------------------------------------------------------------------------------------------
# Lifecycle: called around every stage of a run, in the main process
# --------------------------------------------------------------------------------------------


@hookspec
def before_stage(stage: str, context: "RunContext") -> None:
    """Called before a stage runs (also when it is then found finished and reused).

    :param stage: one of ``"adapt"``, ``"generate"``, ``"train"``, ``"evaluate"``.
    :param context: the run's context (config, data set, shots, paths).
    """


@hookspec
def after_stage(stage: str, context: "RunContext", result: Any) -> None:
    """Called after a stage finished.

    :param result: what the stage produced: the adapter folder, the ``SyntheticSet``, the
        classifier folder, or the metrics dict; ``None`` where the stage had nothing to do.
    """


@hookspec
def stage_failed(stage: str, context: "RunContext", error: BaseException) -> None:
    """Called when a stage raised (Ctrl-C included) before the error propagates."""
