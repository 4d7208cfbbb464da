"""The records passed between stages.

These are plain data: the dataset and its few shots, generation items and the synthetic set,
trained-classifier handles. Plugins receive and return them; they are the plugin author's
vocabulary together with the stage interfaces in ``ddcore.stages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One labelled real image."""

    path: Path
    label: int
    classname: str


@dataclass
class Dataset:
    """A classification data set with its splits.

    ``class_dirs`` are file-system-safe folder names, one per class, used for synthetic
    images (``synthetic/<class_dir>/<index>.png``). ``domain`` is the word the reference code
    puts before "photo" in prompts (e.g. "satellite "), ``templates`` the zero-shot prompt
    templates with one ``{}`` for the class name.
    """

    name: str
    classnames: list[str]
    train: list[Sample]
    test: list[Sample]
    val: list[Sample] = field(default_factory=list)
    root: Path | None = None
    class_dirs: list[str] = field(default_factory=list)
    domain: str = ""
    templates: list[str] = field(default_factory=lambda: ["a photo of a {}."])

    def __post_init__(self) -> None:
        if not self.class_dirs:
            self.class_dirs = [safe_dirname(c) for c in self.classnames]

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


def safe_dirname(name: str) -> str:
    """A folder name for a class name: path separators and odd characters replaced."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in name).strip()
    return cleaned.replace(" ", "_") or "_"


@dataclass(frozen=True)
class Prompt:
    """A prompt for one synthetic image, optionally tied to a real source image (img2img).

    ``info`` holds fields the prompt builder wants recorded with every image made from this
    prompt (e.g. VariReal's ``attribute``, ``value``, ``feasible``); they become columns of
    ``metadata.jsonl``. Values must be JSON-serialisable."""

    text: str
    source: Path | None = None
    info: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class GenItem:
    """One synthetic image to make: class, index within the class, its own seed, its prompt."""

    label: int
    classname: str
    class_dir: str
    index: int
    seed: int
    prompt: Prompt

    @property
    def file_name(self) -> str:
        """Path of the image relative to the synthetic set's root."""
        return f"{self.class_dir}/{self.index:05d}.png"


@dataclass
class SyntheticSet:
    """A folder of generated images with its ``metadata.jsonl`` (one JSON object per image)."""

    root: Path
    items: list[dict]

    def samples(self, dataset: Dataset) -> list[Sample]:
        return [
            Sample(self.root / row["file_name"], int(row["label"]), dataset.classnames[int(row["label"])])
            for row in self.items
        ]
