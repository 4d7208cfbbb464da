"""The report's figures as PNG bytes (matplotlib, Agg backend): the Table 1 accuracy bars, the
per-class Fréchet distances, the scaling curves, the training curves; ``figure_png`` is the one figure-to-PNG step
(also used by the confusion matrix of ``ddcore.evaluation``).

The rows and the Table 1 grouping come from ``ddcore.report``; this module imports nothing from
``ddcore``. matplotlib is imported on first use.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from typing import Any

STUDY_LABELS = {"images_per_class": "synthetic images per class", "shots": "real shots per class"}


def _number(value: Any) -> float | None:
    """A finite float, or None for a missing or NaN value."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (layout tightened, 100 dpi); closes it."""
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _colours(n: int) -> list:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def accuracy_png(rows: list[dict], groups: list[tuple[str, list[dict]]], setting_labels: dict[str, str]) -> bytes:
    """Top-1 per method (x) and classifier (bar), one panel per Table 1 group, error bars =
    std over seeds. ``groups`` are the rows by Table 1 group (``ddcore.report.grouped_rows``),
    ``setting_labels`` name the training data of a method that appears with two settings."""
    import numpy as np

    plt = _pyplot()
    classifiers = _unique(str(r.get("classifier", "")) for r in rows)
    colours = _colours(len(classifiers))
    widths = [max(3.0, 1.0 + 0.45 * len(classifiers) * len(_unique(_bar_label(r, m, setting_labels) for r in m)))
              for _, m in groups]
    fig, axes = plt.subplots(1, len(groups), figsize=(min(22.0, sum(widths) + 1.5), 4.6), squeeze=False,
                             gridspec_kw={"width_ratios": widths}, sharey=True)
    for ax, (group, members) in zip(axes[0], groups):
        labels = _unique(_bar_label(r, members, setting_labels) for r in members)
        width = 0.8 / max(1, len(classifiers))
        x = np.arange(len(labels))
        for c, classifier in enumerate(classifiers):
            means, stds = [], []
            for label in labels:
                row = next((r for r in members if _bar_label(r, members, setting_labels) == label
                            and str(r.get("classifier", "")) == classifier), None)
                mean = _number(row.get("top1_mean")) if row else None
                std = _number(row.get("top1_std")) if row else None
                means.append(np.nan if mean is None else 100 * mean)
                stds.append(0.0 if std is None else 100 * std)
            offset = (c - (len(classifiers) - 1) / 2) * width
            bars = ax.bar(x + offset, means, width, yerr=stds, capsize=3, color=colours[c],
                          label=classifier, error_kw={"elinewidth": 1})
            for bar, mean, std in zip(bars, means, stds):
                if not np.isnan(mean):
                    ax.annotate(f"{mean:.1f}", (bar.get_x() + bar.get_width() / 2, mean + std), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, labels, rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center",
                      fontsize=8)
        ax.set_title(group)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("top-1 accuracy (%), mean ± std over seeds")
    if len(classifiers) > 1 or classifiers != [""]:
        axes[0][-1].legend(title="classifier", fontsize=8, title_fontsize=8, loc="lower right")
    return figure_png(fig)


def _bar_label(row: dict, members: list[dict], setting_labels: dict[str, str]) -> str:
    """The method; with its training data when the method appears with two settings in a group."""
    method = str(row.get("method", ""))
    settings = {str(r.get("setting")) for r in members if str(r.get("method", "")) == method}
    if len(settings) > 1:
        return f"{method} ({setting_labels.get(str(row.get('setting')), row.get('setting'))})"
    return method


def quality_classes(quality: dict[str, dict[str, dict]]) -> list[str]:
    return _unique(c for per_class in quality.values() for c in per_class if c != "all")


def fd_png(quality: dict[str, dict[str, dict]]) -> bytes:
    """Figure 4 of the paper: per class a group of bars, one per method (Fréchet distance of
    the method's synthetic images to the real ones; lower is closer). Missing values say n/a."""
    import numpy as np

    plt = _pyplot()
    methods = list(quality)
    classes = quality_classes(quality)
    colours = _colours(len(methods))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(min(24.0, max(6.0, 0.35 * len(methods) * len(classes) + 2.5)), 4.6))
    x = np.arange(len(classes))
    values = [[_number((quality[m].get(c) or {}).get("fd")) for c in classes] for m in methods]
    top = max([v for vs in values for v in vs if v is not None], default=1.0)
    for i, method in enumerate(methods):
        offset = (i - (len(methods) - 1) / 2) * width
        heights = [np.nan if v is None else v for v in values[i]]
        ax.bar(x + offset, heights, width, color=colours[i], label=method)
        for xi, v in zip(x, values[i]):
            if v is None:
                ax.text(xi + offset, top * 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                        color="0.35")
    ax.set_xticks(x, classes, rotation=45 if len(classes) > 6 else 0, ha="right" if len(classes) > 6 else "center",
                  fontsize=8)
    ax.set_ylabel("Fréchet distance to the real images (lower is closer)")
    ax.set_title("per-class Fréchet distance")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(title="method", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure_png(fig)


def scaling_png(study: str, rows: list[dict]) -> bytes:
    """Top-1 against the study's x (images per class or shots), a line per method and
    classifier, error bars = std over seeds."""
    plt = _pyplot()
    lines = _unique(f"{r.get('method', '')} · {r.get('classifier', '')}" for r in rows)
    colours = _colours(len(lines))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs_all: set[float] = set()
    for colour, line in zip(colours, lines):
        points = sorted((r for r in rows if f"{r.get('method', '')} · {r.get('classifier', '')}" == line),
                        key=lambda r: float(r.get("x", 0)))
        points = [r for r in points if _number(r.get("top1_mean")) is not None]
        xs = [float(r["x"]) for r in points]
        xs_all.update(xs)
        ax.errorbar(xs, [100 * _number(r["top1_mean"]) for r in points],
                    yerr=[100 * (_number(r.get("top1_std")) or 0.0) for r in points],
                    marker="o", capsize=3, color=colour, label=line)
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(sorted(xs_all), [f"{x:g}" for x in sorted(xs_all)])
    ax.minorticks_off()
    ax.set_xlabel(STUDY_LABELS.get(study, study))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"scaling: {STUDY_LABELS.get(study, study)}")
    ax.grid(alpha=0.3)
    ax.legend(title="method · classifier", fontsize=8, title_fontsize=8)
    return figure_png(fig)


def _per_step(logs: dict, field: str) -> tuple[list[int], list[float]]:
    """One curve from a stage's logs: the field per step, averaged over the parts (cls mode's
    one adapter per class) where there are several."""
    sums: dict[int, list[float]] = {}
    for entries in logs.values():
        for entry in entries:
            value = _number(entry.get(field))
            if value is not None:
                sums.setdefault(int(entry["step"]), []).append(value)
    steps = sorted(sums)
    return steps, [sum(sums[s]) / len(sums[s]) for s in steps]


def _smoothed(values: list[float], weight: float = 0.8) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out, last, norm = [], 0.0, 0.0
    for value in values:
        last = weight * last + (1 - weight) * value
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


TRAINING_STAGES = {"adapter": "adapter (diffusion) training", "classifier": "classifier training"}


def training_png(training: dict[str, dict[str, dict]]) -> bytes:
    """Loss (top row) and learning rate (bottom row) per step, a column per trained stage kind
    (``{"adapter": {label: logs}, "classifier": {...}}``, logs as ``ddcore.train_log.train_logs``
    returns them), a line per label; the loss smoothed, the raw values faint behind it when
    few lines are drawn."""
    plt = _pyplot()
    kinds = [k for k in training if training[k]]
    fig, axes = plt.subplots(2, len(kinds), figsize=(5.5 * len(kinds), 6), squeeze=False, sharex="col")
    for column, kind in enumerate(kinds):
        labels = list(training[kind])
        colours = _colours(len(labels))
        loss_ax, lr_ax = axes[0][column], axes[1][column]
        for label, colour in zip(labels, colours):
            logs = training[kind][label]
            steps, losses = _per_step(logs, "loss")
            if not steps:
                continue
            if len(labels) <= 4:
                loss_ax.plot(steps, losses, color=colour, alpha=0.25, linewidth=0.8)
            parts = len(logs) if len(logs) > 1 else 0
            loss_ax.plot(steps, _smoothed(losses), color=colour, linewidth=1.6,
                         label=f"{label} (mean of {parts} parts)" if parts else label)
            lr_ax.plot(*_per_step(logs, "lr"), color=colour, linewidth=1.2)
        loss_ax.set_title(TRAINING_STAGES.get(kind, kind))
        loss_ax.set_ylabel("loss (smoothed)")
        lr_ax.set_ylabel("learning rate")
        lr_ax.set_xlabel("step")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        for ax in (loss_ax, lr_ax):
            ax.grid(alpha=0.3)
        if len(labels) <= 12:
            loss_ax.legend(fontsize=7, loc="upper right")
    return figure_png(fig)
