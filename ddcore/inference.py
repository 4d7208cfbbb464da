"""Using a trained classifier outside its run: ``dd predict`` and ``dd export``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ddcore.config import RunConfig
from ddcore.data import is_image_file
from ddcore.errors import DataError, StageError
from ddcore.plugins import Plugins
from ddcore.progress import SILENT, Reporter
from ddcore.records import Dataset, Sample
from ddcore.stages import Classifier, Method
from ddcore.store import StageDir, read_json
from ddcore.training.info import read_info


@dataclass
class LoadedClassifier:
    classifier: Classifier
    context: Any  # a RunContext whose data set holds the classifier's classes
    folder: Path


def classifier_folder(path: Path) -> Path:
    """The classifier stage folder of a run folder, or ``path`` itself if it is one."""
    path = path.expanduser()
    if (path / StageDir.MARKER).is_file() and (path / "classifier.json").is_file():
        return path
    run_file = path / "run.json"
    if run_file.is_file():
        record = read_json(run_file)
        key = record.get("keys", {}).get("classifier")
        store = Path(record.get("config", {}).get("store") or path)
        if key and StageDir(store, "classifier", key).is_complete():
            return store / "classifier" / key
        raise StageError(f"the run in {path} has no trained classifier yet; run `dd train {path}` first")
    raise StageError(f"{path} is neither a run folder (run.json) nor a classifier folder (classifier.json)")


def open_classifier(path: Path, plugins: Plugins | None = None, device: str = "auto",
                    reporter: Reporter = SILENT) -> LoadedClassifier:
    """Load the trained classifier of a run folder or classifier folder, ready to predict."""
    from ddcore.pipeline import RunContext, resolve_device

    plugins = plugins or Plugins()
    folder = classifier_folder(path)
    info = read_info(folder)
    spec = (StageDir(folder.parent.parent, "classifier", folder.name).info() or {}).get("spec") or {}
    name = spec.get("name") or info.get("classifier")
    if not name:
        raise StageError(f"{folder} does not say which classifier plugin made it")
    classifier = plugins.create("classifier", name, spec.get("options"))
    dataset = Dataset(name=folder.name, classnames=list(info["classnames"]), train=[], test=[])
    device = resolve_device(device)
    context = RunContext(config=RunConfig(device=device), dataset=dataset, shots=[], method=Method(generator=None),
                         device=device, out=folder, reporter=reporter)
    classifier.load(context, folder)
    return LoadedClassifier(classifier, context, folder)


def image_samples(folder: Path, dataset: Dataset) -> list[Sample]:
    """Every image under ``folder`` (recursively, sorted). An image inside a sub-folder named as
    a class (or its folder name) gets that class as its true label; others are unlabelled (-1)."""
    folder = folder.expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of images")
    classnames = dataset.classnames
    labels = {name: i for i, name in enumerate(dataset.class_dirs)} | {name: i for i, name in enumerate(classnames)}
    samples = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p)):
        label = labels.get(path.parent.name, -1) if path.parent != folder else -1
        samples.append(Sample(path, label, classnames[label] if label >= 0 else ""))
    if not samples:
        raise DataError(f"{folder} holds no images (looked for .png, .jpg, ... recursively)")
    return samples


def predict_folder(loaded: LoadedClassifier, images: Path) -> tuple[list[Sample], np.ndarray]:
    samples = image_samples(images, loaded.context.dataset)
    return samples, loaded.classifier.predict(loaded.context, samples)


def export_classifier(loaded: LoadedClassifier, dest: Path) -> Path:
    if dest.exists() and any(dest.iterdir()):
        raise StageError(f"{dest} exists and is not empty; choose a new folder to export into")
    return loaded.classifier.export(loaded.context, loaded.folder, dest)
