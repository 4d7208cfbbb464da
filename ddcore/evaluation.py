"""Metrics on the test split: top-1, per-class accuracy, confusion matrix, predictions.

An evaluation folder holds ``metrics.json``, ``predictions.jsonl`` (one line per test image),
``per_class.csv`` and ``confusion.png``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ddcore.plots import figure_png
from ddcore.records import Dataset, Sample
from ddcore.store import atomic_write_bytes, atomic_write_json, atomic_write_text

METRICS = "metrics.json"
PREDICTIONS = "predictions.jsonl"
PER_CLASS = "per_class.csv"
CONFUSION = "confusion.png"
REPORT_FILES = (PREDICTIONS, PER_CLASS, CONFUSION)


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
    """Write the evaluation files into ``folder`` (copied from an earlier evaluation folder
    when ``predictions_from`` is given)."""
    folder.mkdir(parents=True, exist_ok=True)
    if predictions_from is not None:
        for name in REPORT_FILES:
            if (predictions_from / name).is_file():
                shutil.copyfile(predictions_from / name, folder / f".{name}.tmp")
                (folder / f".{name}.tmp").replace(folder / name)
    else:
        atomic_write_text(folder / PREDICTIONS, prediction_lines(scores, samples, dataset.classnames, dataset.root))
        atomic_write_text(folder / PER_CLASS, per_class_csv(metrics, dataset.classnames))
        atomic_write_bytes(folder / CONFUSION, confusion_png(np.asarray(metrics["confusion"]), dataset.classnames))
    atomic_write_json(folder / METRICS, metrics)


def prediction_lines(scores: np.ndarray, samples: list[Sample], classnames: list[str], root: Path | None,
                     top_k: int = 1) -> str:
    """JSON lines: file, true class (when known), predicted class, its softmax probability, top-k."""
    scores = np.asarray(scores, dtype=np.float64)
    probs = softmax(scores)
    lines = []
    for sample, row, p in zip(samples, scores, probs):
        pred = int(row.argmax())
        file = str(sample.path.relative_to(root)) if root and sample.path.is_relative_to(root) else str(sample.path)
        line: dict[str, Any] = {"file": file}
        if sample.label >= 0:
            line.update(true=sample.classname, correct=pred == sample.label)
        line.update(predicted=classnames[pred], probability=round(float(p[pred]), 6), score=float(row[pred]))
        if top_k > 1:
            order = np.argsort(-row)[:top_k]
            line["top"] = [[classnames[int(i)], round(float(p[i]), 6)] for i in order]
        lines.append(json.dumps(line))
    return "\n".join(lines) + "\n"


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of class scores (logits), computed stably in float64."""
    scores = np.asarray(scores, dtype=np.float64)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def per_class_csv(metrics: dict[str, Any], classnames: list[str]) -> str:
    confusion = np.asarray(metrics["confusion"])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class", "test_images", "correct", "accuracy", "most_confused_with"])
    for c, name in enumerate(classnames):
        row = confusion[c].copy()
        total, correct = int(row.sum()), int(row[c])
        row[c] = -1
        confused = classnames[int(row.argmax())] if total > correct else ""
        accuracy = metrics["per_class"][name]
        writer.writerow([name, total, correct, "" if accuracy is None else f"{accuracy:.4f}", confused])
    return buffer.getvalue()


def confusion_png(confusion: np.ndarray, classnames: list[str]) -> bytes:
    """A row-normalised confusion matrix (true class per row), labelled up to 40 classes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    n = len(classnames)
    totals = confusion.sum(axis=1, keepdims=True)
    rates = np.divide(confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0)
    side = min(14.0, max(4.0, 0.3 * n + 2))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= 40:
        ax.set_xticks(range(n), classnames, rotation=90, fontsize=8)
        ax.set_yticks(range(n), classnames, fontsize=8)
        if n <= 15:
            for i in range(n):
                for j in range(n):
                    if confusion[i, j]:
                        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({int(confusion.sum())} test images)")
    return figure_png(fig)
