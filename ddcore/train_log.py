"""``train_log.jsonl``: one line per optimizer step of a training stage.

Every training loop (the adapters', the classifier's) writes one in its stage folder::

    {"step": 12, "loss": 0.1034, "lr": 9.8e-05, "grad_norm": 0.41, "seconds": 0.52, "images_per_s": 15.4}

A stage that trains several things (cls mode: one LoRA per class, perhaps on several
processes at once) writes one file per part, ``train_log/<part>.jsonl``, its lines carrying
``"part"``. ``step`` counts finished optimizer steps, 1 to the total. A resumed loop
starts at its checkpoint's step: the lines after it belong to steps that are trained again, so
they are dropped when the log is opened, and the file never holds a step twice or skips one.
The same values go to the progress bar and to the run's trackers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ddcore.store import atomic_write_text

LOG_FILE = "train_log.jsonl"
PARTS_DIR = "train_log"  # one <part>.jsonl per part


def log_path(folder: Path, part: str | None = None) -> Path:
    return Path(folder) / (f"{PARTS_DIR}/{part}.jsonl" if part is not None else LOG_FILE)


def train_logs(folder: Path) -> dict[str | None, list[dict[str, Any]]]:
    """Every log in a stage folder: ``{None: entries}`` for a single loop, ``{part: entries}``
    per part, parts in name order."""
    logs: dict[str | None, list[dict[str, Any]]] = {}
    if log_path(folder).is_file():
        logs[None] = read_train_log(log_path(folder))
    for path in sorted((Path(folder) / PARTS_DIR).glob("*.jsonl")):
        logs[path.stem] = read_train_log(path)
    return logs


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a log (a line cut short by a kill is skipped)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "step" in entry:
            entries.append(entry)
    return entries


class TrainLog:
    """The log of one loop: ``with TrainLog(folder, start=..., stage="adapter") as log: log.step(...)``.

    ``stage`` prefixes the trackers' names (``adapter/loss``, or ``adapter/<part>/loss``).
    ``enabled=False`` (the other processes of a multi-process run) writes and sends nothing.
    """

    def __init__(self, folder: Path, *, start: int, stage: str, part: str | None = None, reporter=None,
                 enabled: bool = True) -> None:
        self.path = log_path(folder, part)
        self.part, self.reporter, self.enabled = part, reporter, enabled
        self.prefix = f"{stage}/{part}" if part is not None else stage
        self._file = None
        self._clock = time.perf_counter()
        if enabled:
            self._drop_after(start)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def _drop_after(self, start: int) -> None:
        """Keep the lines up to step ``start``; rewrite the file only if that drops any."""
        if not self.path.is_file():
            return
        text = self.path.read_text()
        kept = [e for e in read_train_log(self.path) if e["step"] <= start]
        rewritten = "".join(json.dumps(e) + "\n" for e in kept)
        if rewritten != text:
            atomic_write_text(self.path, rewritten)

    def step(self, step: int, *, loss: float, lr: float, grad_norm: float | None = None,
             images: int | None = None) -> dict[str, float]:
        """Record finished step ``step``; the time since the previous call is its duration.
        Returns the status to show beside the bar (loss, lr)."""
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        entry: dict[str, Any] = {"step": step}
        if self.part is not None:
            entry["part"] = self.part
        entry.update(loss=loss, lr=lr)
        if grad_norm is not None:
            entry["grad_norm"] = grad_norm
        entry["seconds"] = round(seconds, 6)
        if images is not None and seconds > 0:
            entry["images_per_s"] = round(images / seconds, 3)
        if self._file is not None:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()  # a killed job keeps every finished step's line
            if hasattr(self.reporter, "metrics"):  # a reporter of the library user's may have none
                self.reporter.metrics({f"{self.prefix}/{k}": v for k, v in entry.items()
                                       if k in ("loss", "lr", "grad_norm", "images_per_s")}, step)
        return {"loss": loss, "lr": lr}

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "TrainLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
