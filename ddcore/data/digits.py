"""A tiny offline data set: scikit-learn's bundled handwritten digits as an image folder.

It needs no download, so tests, demos and smoke runs work on a machine with no network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ddcore.errors import DataError

CLASS_DIRS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)
"""Class folder names, by digit."""

TRAIN_FRACTION_PERCENT = 60
"""Per class, this percentage of the images (first by the data set's order) is train."""

SIZE = 32
"""Side of the written images; the 8x8 originals are upscaled with NEAREST."""

_MARKER = ".complete"


def default_root() -> Path:
    """``$DD_HOME/datasets/digits``; DD_HOME defaults to ``$XDG_CACHE_HOME/datadream`` or
    ``~/.cache/datadream``."""
    home = os.environ.get("DD_HOME")
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        home = str(Path(cache) / "datadream")
    return Path(home).expanduser() / "datasets" / "digits"


def ensure_digits(root: Path | None = None) -> Path:
    """Write the digits image folder at ``root`` (default ``default_root()``) unless it exists.

    Layout ``root/{train,test}/<zero..nine>/<index>.png``: 32x32 8-bit greyscale, dark digits
    on white. Idempotent: a finished folder holds ``.complete`` and is left untouched. Safe to
    interrupt: the files are written to a sibling temp folder that is renamed into place.

    Returns:
        ``root``.
    """
    root = Path(root).expanduser() if root is not None else default_root()
    if (root / _MARKER).is_file():
        return root

    # Imported here: scikit-learn is slow to import and only this function needs it.
    from sklearn.datasets import load_digits

    digits = load_digits()
    # A sibling of root (same file system, so the rename is atomic); the pid keeps two
    # processes building at once from writing into the same folder.
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(tmp, digits.images, digits.target)
        (tmp / _MARKER).write_text("sklearn.datasets.load_digits\n", encoding="utf-8")
        _move_into_place(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after a rename; leftovers after a failure
    return root


def _write(folder: Path, images: np.ndarray, target: np.ndarray) -> None:
    """Write every image into ``folder/{train,test}/<class>/<index>.png``."""
    for digit, class_dir in enumerate(CLASS_DIRS):
        indices = np.flatnonzero(target == digit)  # in the data set's own order
        n_train = len(indices) * TRAIN_FRACTION_PERCENT // 100  # integer maths: same everywhere
        for position, index in enumerate(indices):
            split = "train" if position < n_train else "test"
            out = folder / split / class_dir
            out.mkdir(parents=True, exist_ok=True)
            _to_image(images[index]).save(out / f"{int(index):04d}.png")


def _to_image(values: np.ndarray) -> Image.Image:
    """An 8x8 array of 0..16 as a 32x32 ``L`` image, inverted so ink is dark on white."""
    grey = 255 - np.rint(np.asarray(values, dtype=np.float64) * (255.0 / 16.0))
    small = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    return small.resize((SIZE, SIZE), Image.Resampling.NEAREST)


def _move_into_place(tmp: Path, root: Path) -> None:
    """Rename ``tmp`` to ``root``; another process finishing first is fine."""
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, root)  # replaces an empty root folder; fails on a non-empty one
    except OSError:
        if (root / _MARKER).is_file():
            return  # a concurrent call finished first; its copy is identical
        raise DataError(
            f"folder {root} exists but is not a complete digits data set; remove it or pick another folder"
        ) from None
