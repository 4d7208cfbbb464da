"""CoOp split files: ``{"train": [[relpath, label, classname], ...], "val": [...], "test": [...]}``.

The standard few-shot benchmarks (the CoOp/DataDream data sets) ship their splits this way,
with image paths relative to the data set's image folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ddcore.errors import DataError
from ddcore.records import Dataset, Sample, safe_dirname

Row = tuple[str, int, str]
"""One parsed row: (relative path, label, class name)."""


def load_split_file(root: Path, split_file: Path, name: str | None = None) -> Dataset:
    """Load a data set described by a CoOp split file.

    Class names are ordered by label; train labels must be 0..N-1 without gaps, and val/test
    may only use labels that train has. ``class_dirs`` are made file-system safe and distinct.

    Args:
        root: folder the split file's paths are relative to.
        split_file: the JSON split file.
        name: the data set's name; defaults to the root folder's name.

    Raises:
        DataError: the file is missing or malformed, images are missing, or labels disagree.
    """
    root = Path(root).expanduser()
    split_file = Path(split_file).expanduser()
    data = read_json(split_file, what="split file")
    if not isinstance(data, dict):
        raise DataError(
            f"split file {split_file} is not a JSON object; expected "
            '{"train": [[path, label, classname], ...], "test": [...]}'
        )
    for key in ("train", "test"):
        if key not in data:
            raise DataError(f"split file {split_file} has no '{key}' key; add the {key} rows")

    splits: dict[str, list[Row]] = {
        key: parse_rows(data[key], f"'{key}' of {split_file}")
        for key in ("train", "val", "test")
        if key in data
    }
    classnames = _classnames(splits, split_file)
    _check_files(root, splits, split_file)

    def samples(key: str) -> list[Sample]:
        return [Sample(root / rel, label, classnames[label]) for rel, label, _ in splits.get(key, [])]

    return Dataset(
        name=name or root.resolve().name,
        classnames=classnames,
        train=samples("train"),
        test=samples("test"),
        val=samples("val"),
        root=root,
        class_dirs=unique_dirnames(classnames),
    )


def read_json(path: Path, *, what: str) -> Any:
    """Parse a JSON file, turning a missing file or bad JSON into a one-line ``DataError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what} {path}: {' '.join(str(exc).split())}; check the file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); fix or regenerate it"
        ) from None


def parse_rows(rows: Any, where: str) -> list[Row]:
    """Validate ``[[relpath, label, classname], ...]`` rows; ``where`` names them in errors."""
    if not isinstance(rows, list):
        raise DataError(f"{where} is not a list of [path, label, classname] rows; fix the file")
    parsed: list[Row] = []
    for index, row in enumerate(rows):
        ok = (
            isinstance(row, (list, tuple))
            and len(row) == 3
            and isinstance(row[0], str)
            and row[0] != ""
            # bool is an int subclass; true/false as a label is a mistake, not label 1/0
            and isinstance(row[1], int)
            and not isinstance(row[1], bool)
            and row[1] >= 0
            and isinstance(row[2], str)
        )
        if not ok:
            shown = json.dumps(row, ensure_ascii=False)
            if len(shown) > 120:
                shown = shown[:117] + "..."
            raise DataError(
                f"row {index} of {where} is malformed ({shown}); "
                "expected [relative path, label >= 0, class name]"
            )
        parsed.append((row[0], row[1], row[2]))
    return parsed


def unique_dirnames(classnames: list[str]) -> list[str]:
    """File-system-safe folder names, one per class, distinct even on case-insensitive disks.

    Names that collide after ``safe_dirname`` (e.g. "a/b" and "a:b", or "Cat" and "cat" on
    macOS) get ``_<label>`` appended, so two classes never share a synthetic-image folder.
    """
    base = [safe_dirname(c) for c in classnames]
    counts: dict[str, int] = {}
    for b in base:
        counts[b.casefold()] = counts.get(b.casefold(), 0) + 1
    dirs = [f"{b}_{label}" if counts[b.casefold()] > 1 else b for label, b in enumerate(base)]
    # A suffixed name can still meet a class literally named like it ("a_1"); extend until unique.
    taken: set[str] = set()
    for label, d in enumerate(dirs):
        while d.casefold() in taken:
            d = f"{d}_{label}"
        taken.add(d.casefold())
        dirs[label] = d
    return dirs


def _classnames(splits: dict[str, list[Row]], split_file: Path) -> list[str]:
    """Class names by label, checking labels are contiguous and names are consistent."""
    names: dict[int, str] = {}
    for key, rows in splits.items():
        for rel, label, classname in rows:
            known = names.setdefault(label, classname)
            if known != classname:
                raise DataError(
                    f"label {label} has two class names in {split_file} ('{known}' and '{classname}', "
                    f"second in '{key}' at {rel}); give each label one class name"
                )
    train_labels = {label for _, label, _ in splits["train"]}
    if not train_labels:
        raise DataError(f"split file {split_file} has no train rows; add the train rows")
    n = max(train_labels) + 1
    if gaps := sorted(set(range(n)) - train_labels):
        raise DataError(
            f"train labels in {split_file} are not 0..{n - 1} without gaps (missing {_short(gaps)}); "
            "renumber the labels"
        )
    for key in ("val", "test"):
        if extra := sorted({label for _, label, _ in splits.get(key, [])} - train_labels):
            raise DataError(
                f"{key} labels {_short(extra)} in {split_file} are not in train; "
                "every class needs training images"
            )
    return [names[label] for label in range(n)]


def _check_files(root: Path, splits: dict[str, list[Row]], split_file: Path) -> None:
    """Raise if any image named in the split is not on disk (count and first three)."""
    missing = [rel for rows in splits.values() for rel, _, _ in rows if not (root / rel).is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} image(s) named in {split_file} are missing under {root} "
            f"(first: {', '.join(missing[:3])}); check --data points at the dataset root"
        )


def _short(values: list[int]) -> str:
    """A list of labels for a message, cut after ten."""
    shown = ", ".join(str(v) for v in values[:10])
    return shown + (f" and {len(values) - 10} more" if len(values) > 10 else "")
