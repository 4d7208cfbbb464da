"""Progress bars and messages, kept out of the stages' way.

Stages report through a ``Reporter``; the CLI gives it a rich console, library users get a
silent one unless they pass their own. On a terminal the bars are live; when stderr is a file
or a pipe (SLURM, CI, ``| tee``), each bar becomes a line every ``interval`` seconds and a last
one when it ends, so a job log shows how far a stage got. Training loops pass their loss and
learning rate along (``advance(1, loss=..., lr=...)``); the bar shows them, and
:meth:`Reporter.metrics` sends them on to the run's trackers (TensorBoard, W&B, ...).
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from datetime import timedelta
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

INTERVAL_ENV = "DD_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between the lines of a bar when stderr is not a terminal

Advance = Callable[..., None]
"""``advance(n=1, **status)``: ``n`` more done; ``status`` (``loss=0.12, lr=1e-4``) shown beside the bar."""


def format_status(status: dict[str, Any]) -> str:
    """``loss 0.1234  lr 1.00e-04``: floats with four significant digits, a learning rate in
    exponent form (it spans decades)."""
    parts = []
    for name, value in status.items():
        if isinstance(value, float):
            value = f"{value:.2e}" if name == "lr" else f"{value:.4g}"
        parts.append(f"{name} {value}")
    return "  ".join(parts)


class Reporter:
    def __init__(self, console: Console | None = None, *, enabled: bool = True,
                 interval: float | None = None) -> None:
        self.console = console or Console(stderr=True, quiet=not enabled)
        self.enabled = enabled
        if interval is None:
            interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL))
        self.interval = interval
        self.trackers = None  # a ddcore.tracking.Trackers while a run logs to TensorBoard, W&B, ...
        self.metrics_prefix = ""  # before every tracker name: a search trial's are its own curves

    def log(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)

    def metrics(self, values: dict[str, float], step: int) -> None:
        """Scalars of one step (``{"adapter/loss": 0.1}``) for the run's trackers, if any."""
        if self.trackers is not None:
            self.trackers.log({self.metrics_prefix + k: v for k, v in values.items()}, step)

    def prefixed(self, prefix: str) -> "Reporter":
        """A reporter whose tracker names start with ``prefix`` (``search/lr=0.001/``); the
        bars, messages and trackers are this one's."""
        scoped = copy.copy(self)
        scoped.metrics_prefix = self.metrics_prefix + prefix
        return scoped

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Advance]:
        """A progress bar; yields ``advance(n=1, **status)``."""
        if not self.enabled:
            yield lambda n=1, **status: None
        elif self.console.is_terminal:
            with self._live(description, total) as advance:
                yield advance
        else:
            lines = _Lines(self, description, total)
            try:
                yield lines.advance
            finally:
                if lines.shown != (lines.done, lines.status):  # the last state, unless just shown
                    lines.emit()

    @contextlib.contextmanager
    def _live(self, description: str, total: int | None) -> Iterator[Advance]:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, status="")

            def advance(n: int = 1, **status: Any) -> None:
                if status:
                    progress.update(task_id, advance=n, status=format_status(status))
                else:
                    progress.advance(task_id, n)

            yield advance


class _Lines:
    """A bar as periodic lines: ``training adapter: 120/400 (30%)  0:01:02, eta 0:02:25  loss 0.1234``."""

    def __init__(self, reporter: Reporter, description: str, total: int | None) -> None:
        self.reporter, self.description, self.total = reporter, description, total
        self.done, self.status = 0, ""
        self.shown: tuple[int, str] | None = None  # what the last line said
        self.started = self.last = time.monotonic()
        # The rate counts from the first advance: a resumed loop's first advance is the work
        # done before, in no time.
        self.rate_from: tuple[int, float] | None = None

    def advance(self, n: int = 1, **status: Any) -> None:
        self.done += n
        if self.rate_from is None:
            self.rate_from = (self.done, time.monotonic())
        if status:
            self.status = format_status(status)
        if time.monotonic() - self.last >= self.reporter.interval:
            self.emit()

    def emit(self) -> None:
        now = time.monotonic()
        self.last = now
        elapsed = now - self.started
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        if self.total:
            count += f" ({100 * self.done / self.total:.0f}%)"
        line = f"{self.description}: {count}  {timedelta(seconds=round(elapsed))}"
        if self.total and self.rate_from and self.done < self.total and self.done > self.rate_from[0]:
            per_item = (now - self.rate_from[1]) / (self.done - self.rate_from[0])
            line += f", eta {timedelta(seconds=round(per_item * (self.total - self.done)))}"
        if self.status:
            line += f"  {self.status}"
        self.reporter.log(line)
        self.shown = (self.done, self.status)


SILENT = Reporter(enabled=False)
