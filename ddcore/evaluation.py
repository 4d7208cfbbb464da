"""Metrics on the test split: top-1, per-class accuracy, confusion matrix, predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ddcore.records import Dataset, Sample
from ddcore.store import atomic_write_json, atomic_write_text

METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"


def evaluate_scores(scores: np.ndarray, samples: list[Sample], classnames: list[str]) -> dict[str, Any]:
    scores = np.asarray(scores)
    if scores.shape != (len(samples), len(classnames)):
        raise ValueError(f"scores have shape {scores.shape}, expected {(len(samples), len(classnames))}")
    truth = np.array([s.label for s in samples], dtype=int)
    predicted = scores.argmax(axis=1)
    confusion = np.zeros((len(classnames), len(classnames)), dtype=int)
    np.add.at(confusion, (truth, predicted), 1)
    totals = confusion.sum(axis=1)
    per_class = {
        name: (float(confusion[c, c] / totals[c]) if totals[c] else None) for c, name in enumerate(classnames)
    }
    measured = [v for v in per_class.values() if v is not None]
    return {
        "top1": float((predicted == truth).mean()) if len(samples) else 0.0,
        "mean_per_class": float(np.mean(measured)) if measured else 0.0,
        "per_class": per_class,
        "num_test": len(samples),
        "confusion": confusion.tolist(),
    }


def write_evaluation(
    folder: Path,
    metrics: dict[str, Any],
    scores: np.ndarray | None,
    samples: list[Sample],
    dataset: Dataset,
    predictions_from: Path | None = None,
) -> None:
    """Write ``metrics.json`` and ``predictions.jsonl`` (copied from an earlier evaluation
    when ``predictions_from`` is given)."""
    folder.mkdir(parents=True, exist_ok=True)
    if predictions_from is not None:
        shutil.copyfile(predictions_from / PREDICTIONS, folder / f".{PREDICTIONS}.tmp")
        (folder / f".{PREDICTIONS}.tmp").replace(folder / PREDICTIONS)
    else:
        predicted = np.asarray(scores).argmax(axis=1)
        lines = []
        for sample, pred, row in zip(samples, predicted, np.asarray(scores)):
            file = str(sample.path.relative_to(dataset.root)) if dataset.root and sample.path.is_relative_to(dataset.root) else str(sample.path)
            lines.append(json.dumps({
                "file": file,
                "true": sample.classname,
                "predicted": dataset.classnames[int(pred)],
                "correct": bool(int(pred) == sample.label),
                "score": float(row[int(pred)]),
            }))
        atomic_write_text(folder / PREDICTIONS, "\n".join(lines) + "\n")
    atomic_write_json(folder / METRICS, metrics)
