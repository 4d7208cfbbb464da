"""Hyperparameter search for the classifier, selected on validation images, never the test split.

The paper's grid is learning rate x weight decay x Mixup/CutMix (``PAPER_GRID``). Validation
images come from, in order of preference: the data set's val split; the real shots when the
classifier trains on synthetic images only; train-split images that are not among the few
shots; or, when none of these exists, shots held out of the real training
images for the search only (the final classifier then trains on every shot with the chosen
setting). The synthetic images are never used for validation.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ddcore.errors import ConfigError
from ddcore.evaluation import evaluate_scores
from ddcore.options import parse_value
from ddcore.seeds import validation_seed
from ddcore.records import Dataset, Sample
from ddcore.stages import Classifier, TrainingData
from ddcore.store import StageDir, atomic_write_json, digest

PAPER_GRID: dict[str, list[Any]] = {"lr": [1e-4, 1e-5, 1e-6, 1e-7], "weight_decay": [5e-4, 1e-4], "mix": [False, True]}
VAL_PER_CLASS = 20  # train-split images per class taken for validation


def parse_grid(text: str) -> dict[str, list[Any]]:
    """``"lr=1e-4,1e-5 mix=false,true"`` -> ``{"lr": [1e-4, 1e-5], "mix": [False, True]}``."""
    grid: dict[str, list[Any]] = {}
    for part in text.replace(";", " ").split():
        key, sep, values = part.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--search-grid expects OPTION=V1,V2 ... (e.g. lr=1e-4,1e-5 mix=false,true), got {part!r}")
        grid[key.strip()] = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
    if not grid:
        raise ConfigError("--search-grid is empty")
    return grid


def check_grid(grid: dict[str, list[Any]], options: set[str], classifier: str) -> dict[str, list[Any]]:
    unknown = [k for k in grid if k not in options]
    if unknown:
        raise ConfigError(f"search grid option(s) {', '.join(unknown)} are not options of classifier "
                          f"'{classifier}'; it has: {', '.join(sorted(options))}")
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


@dataclass
class Validation:
    samples: list[Sample]
    search_data: TrainingData  # what each trial trains on
    source: str  # where the validation images came from, for the record
    final_equals_trial: bool  # the final classifier trains on exactly what the trials trained on


def validation_split(dataset: Dataset, shots: list[Sample], data: TrainingData, seed: int) -> Validation:
    if dataset.val:
        return Validation(list(dataset.val), data, f"the data set's val split ({len(dataset.val)} images)", True)
    if not data.real and shots:
        return Validation(list(shots), data, f"the {len(shots)} real shots (not trained on)", True)
    shot_paths = {s.path for s in shots}
    rng = np.random.default_rng(validation_seed(seed))
    pool: dict[int, list[Sample]] = {}
    for sample in dataset.train:
        if sample.path not in shot_paths:
            pool.setdefault(sample.label, []).append(sample)
    if len(pool) == dataset.num_classes:
        picked = [s for label in sorted(pool) for s in _pick(pool[label], VAL_PER_CLASS, rng)]
        return Validation(picked, data, f"{len(picked)} train-split images that are not shots", True)
    by_class: dict[int, list[Sample]] = {}
    for shot in data.real:
        by_class.setdefault(shot.label, []).append(shot)
    if len(by_class) < dataset.num_classes or min(len(v) for v in by_class.values()) < 2:
        raise ConfigError(
            "--search needs validation images: the data has no val split, no train images beyond the shots, "
            "and too few real shots per class to hold any out; give a split file with a val part, or more shots")
    held, kept = [], []
    for label in sorted(by_class):
        chosen = _pick(by_class[label], max(1, len(by_class[label]) // 4), rng)
        held += chosen
        kept += [s for s in by_class[label] if s not in chosen]
    search_data = TrainingData(real=kept, synthetic=data.synthetic, real_weight=data.real_weight)
    return Validation(held, search_data, f"{len(held)} shots held out of training during the search", False)


def _pick(samples: list[Sample], n: int, rng: np.random.Generator) -> list[Sample]:
    order = sorted(samples, key=lambda s: str(s.path))
    return [order[i] for i in sorted(rng.choice(len(order), size=min(n, len(order)), replace=False))]


def setting_name(point: dict[str, Any]) -> str:
    """``lr=0.0001,mix=False``: a grid point as a readable name (the trials' tracker names)."""
    return ",".join(f"{key}={value}" for key, value in point.items())


def search_settings(make_classifier: Callable[[dict[str, Any]], Classifier], context, grid: dict[str, list[Any]],
                    validation: Validation, root: Path, record_file: Path) -> dict[str, Any]:
    """Train one classifier per grid point on the search data, score it on the validation
    images (never the test split) and return the best setting, the trial table, and the best
    trial's folder. Each trial is a resumable stage folder ``root/<digest of the setting>``."""
    reporter, classnames = context.reporter, context.dataset.classnames
    points = grid_points(grid)
    reporter.log(f"searching {len(points)} settings, validated on {validation.source}")
    trials = []
    for point in points:
        trial = StageDir(root.parent, root.name, digest(point))
        if not trial.is_complete():
            trial.mark_started(setting=point)
            reporter.log(f"search trial {point} -> {trial.path}")
            # The trial's curves under their own tracker names, not over the final classifier's.
            trial_context = dataclasses.replace(context, reporter=reporter.prefixed(f"search/{setting_name(point)}/"))
            make_classifier(point).fit(trial_context, validation.search_data, trial.path)
            classifier = make_classifier(point)
            classifier.load(context, trial.path)
            measured = evaluate_scores(classifier.predict(context, validation.samples), validation.samples, classnames)
            trial.mark_complete(setting=point, val_top1=measured["top1"], val_mean_per_class=measured["mean_per_class"])
        info = trial.info()
        trials.append({"setting": point, "val_top1": info["val_top1"], "val_mean_per_class": info["val_mean_per_class"],
                       "folder": trial.path})
    best = max(trials, key=lambda t: t["val_top1"])  # the first of equals, in the grid's order
    record = {"grid": grid, "validation": validation.source, "setting": best["setting"], "val_top1": best["val_top1"],
              "final_equals_trial": validation.final_equals_trial,
              "trials": [{k: v for k, v in t.items() if k != "folder"} for t in trials]}
    atomic_write_json(record_file, record)
    reporter.log(f"chose {best['setting']} (validation top-1 {100 * best['val_top1']:.2f}%)")
    return {**record, "folder": best["folder"]}
