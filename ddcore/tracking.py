"""Experiment trackers (``--log-with tensorboard,wandb``), through accelerate's tracker classes.

accelerate already wraps TensorBoard, W&B, MLflow, Comet, Aim, ClearML, DVCLive, SwanLab and
Trackio behind one interface (``store_init_configuration``, ``log``, ``log_images``,
``finish``), the one diffusers' training scripts use; we drive those classes directly rather
than through an ``Accelerator``, so a plain single-process run needs no accelerate state. Only
the main process of a multi-process run logs. Files go to ``<run>/logs/<tracker files>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddcore.errors import ConfigError

LOGS_DIR = "logs"
# The package each tracker needs, for the advice when it is missing.
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


def tracker_names(text: str | None) -> list[str]:
    """``"tensorboard,wandb"`` as a list, each checked against the trackers accelerate knows."""
    names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
    if not names:
        return []
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise ConfigError(f"--log-with: unknown tracker '{unknown[0]}'; choose from {', '.join(sorted(LOGGER_TYPE_TO_CLASS))}")
    return list(dict.fromkeys(names))


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"a.b": value}`` with values trackers accept (bool, int, float, str)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = "" if value is None else value
        else:
            flat[name] = str(value)
    return flat


def check_trackers(names: list[str]) -> None:
    """A one-line ConfigError for the first tracker whose package is not installed."""
    if not names:
        return
    from accelerate.tracking import get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in available:
            package = PACKAGES.get(name, name)
            raise ConfigError(f"--log-with {name} needs the '{package}' package, which is not installed: "
                              f"pip install {package}")


class Trackers:
    """The run's trackers: ``start(config)``, then ``log`` / ``log_images``, then ``finish``."""

    def __init__(self, names: list[str], run_dir: Path, run_name: str) -> None:
        from accelerate import PartialState
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        check_trackers(names)
        PartialState()  # accelerate's logging, which the trackers use, needs its state to exist
        self.trackers = []
        for name in names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            kwargs = {"logging_dir": str(run_dir / LOGS_DIR)} if cls.requires_logging_directory else {}
            tracker = cls(run_name, **kwargs)
            tracker.main_process_only = False  # only the main process makes trackers at all
            if hasattr(tracker, "start"):  # accelerate >= 1.4 opens the writer here, older ones in __init__
                tracker.start()
            self.trackers.append(tracker)
        self.names = names

    def store_config(self, values: dict[str, Any]) -> None:
        flat = flat_config(values)
        for tracker in self.trackers:
            tracker.store_init_configuration(flat)

    def log(self, values: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def log_images(self, images: dict[str, list], step: int = 0) -> None:
        """``{"samples/<class>": [HxWx3 uint8 arrays]}``, for trackers that take images."""
        import numpy as np

        for tracker in self.trackers:
            if hasattr(tracker, "log_images"):
                if tracker.name == "tensorboard":  # SummaryWriter.add_images wants one NHWC array
                    tracker.log_images({k: np.stack(v) for k, v in images.items()}, step=step, dataformats="NHWC")
                else:
                    tracker.log_images(images, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
