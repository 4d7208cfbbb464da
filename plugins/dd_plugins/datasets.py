"""Data sets: an image folder, a CoOp split file, and scikit-learn's digits (the demo)."""

from __future__ import annotations

from ddcore.api import DataError, DatasetSource, ensure_digits, hookimpl, load_image_folder, load_split_file


class ImageFolder(DatasetSource):
    """DATA/train/<class>/*, DATA/test/<class>/*, optional DATA/val/<class>/*."""

    def load(self, data, split):
        if data is None:
            raise DataError("--dataset imagefolder needs --data DIR (with train/ and test/ class folders)")
        if split is not None:
            raise DataError("--split is for CoOp split files; use --dataset coop-split (or leave --dataset out)")
        return load_image_folder(data)


class CoopSplit(DatasetSource):
    """A CoOp split file (--split FILE) with image paths relative to --data."""

    def load(self, data, split):
        if split is None or data is None:
            raise DataError("--dataset coop-split needs --data ROOT and --split FILE")
        return load_split_file(data, split)


class Digits(DatasetSource):
    """scikit-learn's handwritten digits, written out as an image folder (offline demo)."""

    def load(self, data, split):
        dataset = load_image_folder(ensure_digits(data), name="digits")
        dataset.domain = "digit "
        return dataset


@hookimpl
def register_datasets(register):
    register("imagefolder", ImageFolder, default="folder")
    register("coop-split", CoopSplit, default="split")
    register("digits", Digits, default="demo")
