"""Shared fixtures. Tests are hermetic and offline:

- only the built-in plugins load (``DD_BUILTIN_PLUGINS_ONLY=1``), so installed third-party
  plugins never leak in; a test that wants one installs it itself;
- ``HF_HUB_OFFLINE=1``; every model is a tiny one built from a config;
- ``DD_HOME`` (datasets, tokenizer files) points into a temporary folder.

The variables are set in the environment, so ``dd`` subprocesses inherit them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddcore.config import resolve
from ddcore.progress import Reporter

_HOME = tempfile.mkdtemp(prefix="dd-test-home-")


def pytest_configure(config):
    os.environ["DD_BUILTIN_PLUGINS_ONLY"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["DD_HOME"] = _HOME
    os.environ["HF_HOME"] = os.path.join(_HOME, "hf")
    os.environ.pop("DD_DISABLE_PLUGINS", None)


def pytest_unconfigure(config):
    shutil.rmtree(_HOME, ignore_errors=True)


CLASSES = {"red_square": (220, 40, 40), "green_circle": (40, 200, 60), "blue_stripes": (40, 60, 220)}


def make_image(kind: str, colour, seed: int, size: int = 32) -> Image.Image:
    """A small image whose class is visible: a coloured shape on noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    if kind == "red_square":
        mask = (abs(yy - size / 2) < size / 4) & (abs(xx - size / 2) < size / 4)
    elif kind == "green_circle":
        mask = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
    else:
        mask = (xx // 4) % 2 == 0
    pixels[mask] = colour
    return Image.fromarray(pixels)


def write_image_folder(root: Path, train: int = 6, test: int = 4) -> Path:
    for split, count in (("train", train), ("test", test)):
        for c, (name, colour) in enumerate(CLASSES.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                make_image(name, colour, seed=c * 1000 + i + (500 if split == "test" else 0)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A 3-class image folder: 6 train and 4 test images per class."""
    return write_image_folder(tmp_path_factory.mktemp("data") / "shapes")


# Settings that make a full run take seconds with the tiny models.
FAST = [
    "--base-model", "tiny", "--classifier-model", "tiny", "--device", "cpu",
    "--shots", "2", "--images-per-class", "2", "--steps", "2", "--resolution", "32", "--batch-size", "4",
    "--set", "classifier.epochs=1", "--set", "classifier.batch_size=8", "--set", "classifier.warmup_steps=1",
]


def config_for(tiny_folder: Path, out: Path, *extra: str, **values):
    """A RunConfig from CLI-style FAST flags plus overrides."""
    options: dict = {}
    cli = {}
    args = list(FAST) + list(extra)
    i = 0
    while i < len(args):
        key, value = args[i].lstrip("-").replace("-", "_"), args[i + 1]
        if key == "set":
            kind, _, rest = value.partition(".")
            name, _, v = rest.partition("=")
            options.setdefault(kind, {})[name] = v
        else:
            cli[key] = int(value) if value.isdigit() else value
        i += 2
    cli.update(values)
    return resolve({}, {**cli, "data": str(tiny_folder), "out": str(out), "options": options})


# A DataDream adapter trained for a few steps only (for runs of the default method).
FAST_ADAPTER = ["--set", "adapter.max_steps=4", "--set", "adapter.batch_size=4", "--set", "adapter.warmup_steps=1"]


def dd(*args: str, env: dict | None = None, cwd: Path | None = None, script: str = "dd") -> subprocess.CompletedProcess:
    """Run the installed ``dd`` console script (or ``datadream``) in a subprocess: for what only a
    process shows (entry points, signals, a plugin on a new PYTHONPATH, --debug's traceback)."""
    exe = Path(sys.executable).parent / script
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          cwd=cwd, timeout=600)


def dd_here(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``dd`` in this process: the real ``main()`` (Typer parsing, error lines, exit codes),
    with stdout and stderr captured. A subprocess would import torch, diffusers and open_clip again
    (about 9 s on 2 cores) for every command. ``main()`` adds the plugins' commands to the Typer
    app and caches the plugins, so both are put back afterwards."""
    import io

    from dd_cli import app as cli

    commands, groups, plugins = list(cli.app.registered_commands), list(cli.app.registered_groups), cli._plugins
    widths = [(console, console._width) for console in (cli.console, cli.err_console)]
    stdout, stderr = io.StringIO(), io.StringIO()
    argv, here, environ = sys.argv, os.getcwd(), dict(os.environ)
    sys.argv = ["dd", *args]
    try:
        os.environ.update(env or {})
        if "COLUMNS" in (env or {}):  # rich reads COLUMNS when a Console is made: these were made at import
            for console, _ in widths:
                console.width = int(env["COLUMNS"])
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        for console, width in widths:
            console._width = width
        cli.app.registered_commands[:], cli.app.registered_groups[:], cli._plugins = commands, groups, plugins
    return subprocess.CompletedProcess(["dd", *args], code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture
def run_dd():
    """``dd`` in this process (see ``dd_here``); use ``dd`` itself where a process is the point."""
    return dd_here


@pytest.fixture
def dd_process():
    """``dd`` in a subprocess (see ``dd``)."""
    return dd


@dataclass
class RecordedBar:
    description: str
    total: int | None
    done: int = 0
    closed: bool = False


class RecordingReporter(Reporter):
    """A silent reporter that keeps what a stage reported: its bars (``bars``, with how far each
    was advanced) and messages. ``events`` lists "bar: <description>" as each bar opens; a test
    may append its own entries to check what happened before a bar opened. A bar opened while
    another is open fails the test."""

    def __init__(self) -> None:
        super().__init__(enabled=False)
        self.bars: list[RecordedBar] = []
        self.messages: list[str] = []
        self.events: list[str] = []

    def log(self, message: str) -> None:
        self.messages.append(message)

    @contextlib.contextmanager
    def task(self, description, total):
        # A terminal shows one live display at a time (rich refuses a second): bars never nest.
        assert all(bar.closed for bar in self.bars), f"'{description}' opened inside another bar"
        bar = RecordedBar(description, total)
        self.bars.append(bar)
        self.events.append(f"bar: {description}")

        def advance(n=1, **status):
            assert not bar.closed
            bar.done += n

        try:
            yield advance
        finally:
            bar.closed = True


@contextlib.contextmanager
def adapter_training_killed_after(steps: int):
    """Inside: the DataDream trainer's steps raise KeyboardInterrupt (Ctrl-C) after ``steps`` of
    them, as a run killed mid-training; the trainer is whole again after the block."""
    from dd_plugins import datadream_training

    loss = datadream_training.LoraTrainer._loss
    calls = {"n": 0}

    def killed(self, group, step):
        calls["n"] += 1
        if calls["n"] > steps:
            raise KeyboardInterrupt
        return loss(self, group, step)

    datadream_training.LoraTrainer._loss = killed
    try:
        yield
    finally:
        datadream_training.LoraTrainer._loss = loss

