"""Image-folder data sets: ``root/{train,test[,val]}/<class>/<image>``.

This is the layout a user can make by hand, so every problem with it is reported as a
one-line ``DataError`` naming the folder and the fix.
"""

from __future__ import annotations

from pathlib import Path

from ddcore.data.images import IMAGE_EXTENSIONS, is_image_file
from ddcore.errors import DataError
from ddcore.records import Dataset, Sample

_LAYOUT = "expected <root>/train/<class>/<images> and <root>/test/<class>/<images>"


def load_image_folder(root: Path, name: str | None = None) -> Dataset:
    """Load an image-folder data set.

    Class names are the sorted ``train`` sub-folder names (labels are their indices); in
    ``classnames`` underscores become spaces so prompts read naturally, while ``class_dirs``
    keeps the folder names. Files are listed in sorted order so every machine sees the same
    order; hidden files and non-image extensions are ignored.

    Args:
        root: the data set folder.
        name: the data set's name; defaults to the folder's name.

    Raises:
        DataError: a folder is missing, empty, or the splits' classes differ.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; check --data points at the dataset root")

    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"no 'train' folder in {root}; {_LAYOUT}")
    dirs = _class_folders(train_dir)
    if not dirs:
        raise DataError(f"no class folders in {train_dir}; {_LAYOUT}")
    classnames = [d.replace("_", " ") for d in dirs]

    train = _samples(train_dir, dirs, classnames)

    test_dir = root / "test"
    if not test_dir.is_dir():
        raise DataError(f"no 'test' folder in {root}; {_LAYOUT}")
    _check_same_classes(test_dir, dirs)
    test = _samples(test_dir, dirs, classnames)

    val: list[Sample] = []
    val_dir = root / "val"
    if val_dir.is_dir():  # optional split
        _check_same_classes(val_dir, dirs)
        val = _samples(val_dir, dirs, classnames)

    return Dataset(
        name=name or root.resolve().name,
        classnames=classnames,
        train=train,
        test=test,
        val=val,
        root=root,
        class_dirs=list(dirs),
    )


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``split_dir``."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    """Sorted image files directly inside ``class_dir`` (hidden and non-image files skipped)."""
    return sorted(
        (p for p in class_dir.iterdir() if p.is_file() and is_image_file(p)), key=lambda p: p.name
    )


def _samples(split_dir: Path, dirs: list[str], classnames: list[str]) -> list[Sample]:
    """All samples of one split, by label then file name; an empty class is an error."""
    samples: list[Sample] = []
    for label, folder in enumerate(dirs):
        files = _image_files(split_dir / folder)
        if not files:
            raise DataError(
                f"class '{folder}' has no images in {split_dir / folder} "
                f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the class"
            )
        samples.extend(Sample(path, label, classnames[label]) for path in files)
    return samples


def _check_same_classes(split_dir: Path, train_dirs: list[str]) -> None:
    """Raise if ``split_dir``'s class folders differ from train's, naming both differences."""
    found = set(_class_folders(split_dir))
    expected = set(train_dirs)
    if found == expected:
        return
    parts = []
    if missing := sorted(expected - found):
        parts.append(f"missing in {split_dir.name}: {', '.join(missing)}")
    if extra := sorted(found - expected):
        parts.append(f"missing in train: {', '.join(extra)}")
    raise DataError(
        f"class folders of {split_dir} differ from {split_dir.parent / 'train'} ({'; '.join(parts)}); "
        "use the same class folders in every split"
    )
