"""The few shots: which K real images per class a run may use, and their identity.

The choice must be the same on every machine and Python version (a run is reproducible from
its seed), and it is saved so a run can be repeated with exactly the same images even when
the data folder's listing or the sampling code changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ddcore.data.images import load_rgb
from ddcore.data.splits import parse_rows, read_json
from ddcore.errors import DataError
from ddcore.store import atomic_write_text, file_sha256
from ddcore.records import Dataset, Sample
from ddcore.seeds import fewshot_seed


def sample_fewshot(dataset: Dataset, shots: int, seed: int) -> list[Sample]:
    """Pick ``shots`` training images per class, deterministically from ``seed``.

    Each class's images are sorted by path (relative to the data set root) before picking, so
    the listing order of ``dataset.train`` does not matter; the picks come from
    ``numpy.random.default_rng(fewshot_seed(seed, label))``, independent per class. Every chosen image is
    decoded so a corrupt shot fails now, with its file name, rather than mid-training.

    Returns:
        The shots ordered by (label, path).

    Raises:
        DataError: ``shots`` < 1, ``seed`` < 0, a class has fewer than ``shots`` images, or a
        chosen image cannot be read.
    """
    if shots < 1:
        raise DataError(f"--shots must be at least 1 (got {shots}); pass a positive number of shots")
    if seed < 0:
        # numpy's SeedSequence rejects negative entropy; say so in the user's terms.
        raise DataError(f"--seed must be >= 0 (got {seed}); pass a non-negative seed")

    by_label: dict[int, list[Sample]] = {label: [] for label in range(dataset.num_classes)}
    for sample in dataset.train:
        by_label.setdefault(sample.label, []).append(sample)

    chosen: list[Sample] = []
    for label in sorted(by_label):
        pool = sorted(by_label[label], key=lambda s: relative_path(s.path, dataset.root))
        if len(pool) < shots:
            name = dataset.classnames[label] if 0 <= label < dataset.num_classes else str(label)
            raise DataError(
                f"class '{name}' has {len(pool)} training images, fewer than --shots {shots}; "
                "lower --shots or add images"
            )
        rng = np.random.default_rng(fewshot_seed(seed, label))
        picks = np.sort(rng.choice(len(pool), size=shots, replace=False))
        chosen.extend(pool[int(i)] for i in picks)

    _decode_all(chosen)
    return chosen


def save_fewshot(path: Path, shots: list[Sample], dataset: Dataset, *, k: int, seed: int) -> None:
    """Write the shots as JSON, atomically (a reader never sees a half-written file).

    Format: ``{"dataset", "k", "seed", "classnames", "shots": [[relpath, label, classname]]}``
    with paths relative to ``dataset.root`` when the image lies under it, else absolute, so the
    file stays valid when the data set folder moves.
    """
    path = Path(path)
    head = {"dataset": dataset.name, "k": k, "seed": seed}
    rows = [[relative_path(s.path, dataset.root), s.label, s.classname] for s in shots]
    # Hand-laid JSON: one shot per line keeps the file readable and its diffs small.
    lines = ["{"]
    lines += [f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}," for key, value in head.items()]
    lines.append(f'  "classnames": {json.dumps(dataset.classnames, ensure_ascii=False)},')
    lines.append('  "shots": [')
    lines += [f"    {json.dumps(row, ensure_ascii=False)}," for row in rows]
    if rows:
        lines[-1] = lines[-1][:-1]  # no trailing comma after the last row
    lines += ["  ]", "}"]
    atomic_write_text(path, "\n".join(lines) + "\n")


def load_fewshot(path: Path, dataset: Dataset) -> list[Sample]:
    """Read shots saved by ``save_fewshot`` (or a bare row list, or a CoOp-like ``{"train": rows}``).

    Relative paths resolve against ``dataset.root`` (against the file's own folder when the data
    set has no root). Every shot is decoded.

    Raises:
        DataError: the file is missing or malformed, a shot's label or class name does not
        match the data set, or a shot's image is missing or unreadable.
    """
    path = Path(path).expanduser()
    data: Any = read_json(path, what="few-shot file")
    if isinstance(data, dict) and "shots" in data:
        rows = data["shots"]
    elif isinstance(data, dict) and "train" in data:
        rows = data["train"]
    elif isinstance(data, list):
        rows = data
    else:
        raise DataError(
            f"few-shot file {path} has no 'shots' list; expected the format save_fewshot writes"
        )

    base = dataset.root if dataset.root is not None else path.parent
    shots: list[Sample] = []
    for rel, label, classname in parse_rows(rows, f"few-shot file {path}"):
        if label >= dataset.num_classes or dataset.classnames[label] != classname:
            expected = (
                f"'{dataset.classnames[label]}'" if label < dataset.num_classes else "no such label"
            )
            raise DataError(
                f"shot {rel} in {path} has class '{classname}' (label {label}) but the data set "
                f"{dataset.name} has {expected}; use a few-shot file made for this data set"
            )
        image = Path(rel) if Path(rel).is_absolute() else base / rel
        if not image.is_file():
            raise DataError(
                f"shot image {image} listed in {path} does not exist; check --data or re-sample the shots"
            )
        shots.append(Sample(image, label, classname))

    _decode_all(shots)
    return shots


def fewshot_digest(shots: list[Sample], root: Path | None = None) -> str:
    """A hex sha256 identifying the shots: their paths, labels and file contents.

    Paths are taken relative to ``root`` where possible so the digest does not change when the
    data set folder moves; the bytes' hash makes a cache keyed on it notice a replaced image.
    The shots are sorted first, so the digest does not depend on their order.
    """
    entries = sorted((relative_path(s.path, root), s.label, s.path) for s in shots)
    digest = hashlib.sha256()
    for rel, label, image in entries:
        try:
            content = file_sha256(image)
        except OSError as exc:
            raise DataError(
                f"cannot read shot image {image}: {' '.join(str(exc).split())}; check the file"
            ) from None
        # JSON encoding keeps fields unambiguous whatever characters a path contains.
        digest.update(json.dumps([rel, label, content], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def relative_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` as a POSIX string when it lies under it, else absolute."""
    path = Path(path)
    if root is not None:
        root = Path(root)
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
        # One side may be relative or reach the folder through a symlink.
        resolved = path.resolve()
        if resolved.is_relative_to(root.resolve()):
            return resolved.relative_to(root.resolve()).as_posix()
    return path.absolute().as_posix()


def _decode_all(shots: list[Sample]) -> None:
    """Decode every shot (``load_rgb`` raises a DataError naming a bad file)."""
    for shot in shots:
        load_rgb(shot.path).close()


