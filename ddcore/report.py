"""The comparison report: one static HTML page (Table 1, plots, sample grids) plus the table
as ``table.md`` and ``table.csv``.

A report folder holds ``index.html``, ``table.md``, ``table.csv``, the plots as PNG files and
thumbnails of the sample images under ``images/``. Every link is relative, so the folder can be
moved, zipped or served as it is; the page needs no JavaScript and nothing from the network.
"""

from __future__ import annotations

import csv
import html
import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ddcore import plots
# fd_png, scaling_png, quality_classes, STUDY_LABELS: also imported from here (ddcore.quality_report: fd_png)
from ddcore.plots import (STUDY_LABELS, TRAINING_STAGES, _number, _per_step, _unique, fd_png,  # noqa: F401
                          quality_classes, scaling_png, training_png)
from ddcore.store import atomic_write_bytes

INDEX = "index.html"
TABLE_MD = "table.md"
TABLE_CSV = "table.csv"
ACCURACY_PNG = "accuracy.png"
FD_PNG = "frechet_distance.png"
TRAINING_PNG = "training.png"
IMAGES = "images"
THUMBNAIL = 128  # longest side of a grid thumbnail, in pixels

# Table 1 of the paper: zero-shot and synthetic-only rows first, then the ones with real data.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("synthetic only", ("none", "synthetic")),
    ("real + synthetic", ("real", "real+synthetic")),
)
SETTING_LABELS = {"none": "zero-shot", "synthetic": "synthetic", "real": "real", "real+synthetic": "real + synthetic"}
METRICS = (("top1", "top-1 (%)"), ("mean_per_class", "mean per-class (%)"))
QUALITY_EXTRA = ("precision", "recall", "density", "coverage")


# ---------------------------------------------------------------------------------------------
# The table, shared by the HTML, the markdown and the CSV
# ---------------------------------------------------------------------------------------------

def percent(mean: Any, std: Any = None) -> str:
    """``"71.2 ± 0.4"`` from fractions (0..1); ``"71.2"`` without a std; ``"–"`` when missing."""
    m, s = _number(mean), _number(std)
    if m is None:
        return "–"
    return f"{100 * m:.1f}" if s is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def group_of(setting: str) -> str:
    for label, settings in GROUPS:
        if setting in settings:
            return label
    return setting  # an unknown setting gets a group of its own, after the known ones


def grouped_rows(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """The rows by Table 1 group, in the paper's order; within a group, zero-shot before
    synthetic and real before real+synthetic, otherwise in the order given."""
    order = {s: i for _, settings in GROUPS for i, s in enumerate(settings)}
    groups: dict[str, list[dict]] = {label: [] for label, _ in GROUPS}
    for row in rows:
        groups.setdefault(group_of(str(row.get("setting", ""))), []).append(row)
    return [(label, sorted(members, key=lambda r: order.get(str(r.get("setting", "")), len(order))))
            for label, members in groups.items() if members]


def best_in_group(members: list[dict], metric: str) -> set[int]:
    """Indices (into ``members``) of the best value of ``metric`` as displayed (1 decimal), so
    rows that print the same number are bold together."""
    shown = [_number(r.get(f"{metric}_mean")) for r in members]
    rounded = [round(100 * v, 1) if v is not None else None for v in shown]
    present = [v for v in rounded if v is not None]
    if not present:
        return set()
    top = max(present)
    return {i for i, v in enumerate(rounded) if v == top}


def _seed_values(row: dict) -> str:
    values = [_number(v) for v in row.get("top1") or []]
    return ", ".join("–" if v is None else f"{100 * v:.1f}" for v in values)


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def base_model_label(model: str) -> str:
    """A base model as tables show it: a local folder by its last component (``/models/sd15/``
    -> ``sd15``), a tiny model or a hub id as given."""
    from ddcore.models.loading import looks_like_path

    spec = model.strip()
    path = Path(spec).expanduser()
    if looks_like_path(spec) or path.is_dir():
        return path.resolve().name or spec
    return spec


def _faceted(rows: list[dict]) -> bool:
    """Rows of a matrix over several base models carry ``base_model`` (None: a run that makes
    no synthetic images, the same for every base model)."""
    return any("base_model" in row for row in rows)


def table_markdown(rows: list[dict]) -> str:
    """GitHub markdown of Table 1: group, method (and, over several base models, the base
    model: "-" where a run does not depend on it), classifier, mean ± std in percent (best per
    group in bold), the per-seed top-1 and the classes a filter left short."""
    faceted = _faceted(rows)
    header = ["setting", "method", *(["base model"] if faceted else []), "classifier", "training data",
              *(label for _, label in METRICS), "per-seed top-1 (%)", "seeds", "warnings"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * (4 if faceted else 3) + "---|" + "---:|" * len(METRICS) + "---|---|---|"]
    for group, members in grouped_rows(rows):
        best = {metric: best_in_group(members, metric) for metric, _ in METRICS}
        for i, row in enumerate(members):
            base = [base_model_label(row["base_model"]) if row.get("base_model") else "-"] if faceted else []
            cells = [group, str(row.get("method", "")), *base, str(row.get("classifier", "")),
                     SETTING_LABELS.get(str(row.get("setting")), str(row.get("setting", "")))]
            for metric, _ in METRICS:
                text = percent(row.get(f"{metric}_mean"), row.get(f"{metric}_std"))
                cells.append(f"**{text}**" if i in best[metric] else text)
            cells.append(_seed_values(row))
            cells.append(",".join(str(s) for s in row.get("seeds") or []))
            short = list(row.get("short_classes") or [])
            cells.append(f"⚠ short: {', '.join(map(str, short))}" if short else "")
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("group", "setting", "method", "classifier", "top1_mean", "top1_std", "mean_per_class_mean",
               "mean_per_class_std", "seeds", "top1", "short_classes")


def table_csv(rows: list[dict]) -> str:
    """The table as CSV with the raw fractions (0..1); lists joined by spaces (seeds, per-seed
    top-1) or semicolons (short classes). Over several base models a ``base_model`` column
    follows the method (the base model as given; empty where a run does not depend on it)."""
    faceted = _faceted(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = list(CSV_COLUMNS)
    if faceted:
        columns.insert(3, "base_model")
    writer.writerow(columns)
    for group, members in grouped_rows(rows):
        for row in members:
            values = {key: _number(row.get(key)) for key in CSV_COLUMNS[4:8]}
            writer.writerow([
                group, row.get("setting", ""), row.get("method", ""),
                *([row.get("base_model") or ""] if faceted else []), row.get("classifier", ""),
                *("" if v is None else repr(v) for v in values.values()),
                " ".join(str(s) for s in row.get("seeds") or []),
                " ".join("" if _number(v) is None else repr(float(v)) for v in row.get("top1") or []),
                ";".join(str(c) for c in row.get("short_classes") or []),
            ])
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# Plots: ddcore.plots draws them (PNG bytes); the Table 1 groups and labels come from here
# ---------------------------------------------------------------------------------------------

def accuracy_png(rows: list[dict]) -> bytes:
    """Top-1 per method (x) and classifier (bar), one panel per Table 1 group, error bars =
    std over seeds."""
    return plots.accuracy_png(rows, grouped_rows(rows), SETTING_LABELS)


# ---------------------------------------------------------------------------------------------
# Thumbnails
# ---------------------------------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:40] or "x"


def thumbnail_jpeg(source: Path, size: int = THUMBNAIL) -> tuple[bytes, int, int]:
    """A JPEG thumbnail (longest side ``size``), its width and height."""
    from PIL import Image, ImageOps

    with Image.open(source) as image:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P"):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        image = image.convert("RGB")
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue(), image.width, image.height


class _Thumbnails:
    """Writes thumbnails into a staging folder (renamed to ``images/`` at the end), once per
    source file; remembers the sources it could not read."""

    def __init__(self, staging: Path, size: int) -> None:
        self.staging, self.size = staging, size
        self.done: dict[Path, tuple[str, int, int]] = {}
        self.failed: list[str] = []

    def add(self, source: Path, folder: str, index: int) -> tuple[str, int, int] | None:
        source = Path(source)
        if source in self.done:
            return self.done[source]
        try:
            data, width, height = thumbnail_jpeg(source, self.size)
        except Exception as exc:  # noqa: BLE001 - a bad sample image must not lose the whole report
            self.failed.append(f"{source}: {type(exc).__name__}: {exc}")
            return None
        relative = f"{folder}/{index:03d}.jpg"
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)  # the whole folder is renamed into place, so no per-file rename
        self.done[source] = (f"{IMAGES}/{relative}", width, height)
        return self.done[source]


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

CSS = """
:root { --fg: #1d2433; --muted: #5b6475; --line: #dde1e8; --accent: #2f5fb3; --bg: #ffffff;
        --soft: #f5f7fa; --warn: #9a5b00; --warnbg: #fff4e0; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.5;
       font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 0 24px 48px; }
header { background: var(--soft); border-bottom: 1px solid var(--line); }
header .inner { max-width: 1280px; margin: 0 auto; padding: 20px 24px 12px; }
h1 { margin: 0 0 6px; font-size: 26px; font-weight: 650; }
h2 { margin: 36px 0 12px; font-size: 20px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { margin: 20px 0 8px; font-size: 16px; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; font-size: 14px; }
nav a:hover { text-decoration: underline; }
a { color: var(--accent); }
.notes { margin: 16px 0 0; padding: 10px 16px; background: var(--soft); border-left: 4px solid var(--accent);
         font-size: 14px; }
.notes ul { margin: 0; padding-left: 18px; }
.caption { color: var(--muted); font-size: 13px; margin: 6px 0 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 5px 12px; text-align: left; border-bottom: 1px solid var(--line); white-space: nowrap; }
thead th { border-bottom: 2px solid var(--fg); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.group th { background: var(--soft); font-style: italic; font-weight: 600; color: var(--muted);
              border-top: 2px solid var(--line); }
td.best { font-weight: 700; }
td.data, td.seeds { color: var(--muted); font-size: 13px; }
.warn { display: inline-block; color: var(--warn); background: var(--warnbg); border-radius: 4px;
        padding: 0 6px; font-size: 13px; white-space: normal; }
figure.plot { margin: 12px 0 20px; }
figure.plot img { max-width: 100%; height: auto; border: 1px solid var(--line); }
table.samples th, table.samples td { vertical-align: top; padding: 8px 10px; }
table.samples tbody th { font-weight: 600; white-space: normal; min-width: 90px; max-width: 160px; }
table.samples td.real { background: #eef3fc; }
.thumbs { display: grid; grid-template-columns: repeat(3, 80px); gap: 3px; }
.thumbs img { display: block; width: 80px; height: auto; border-radius: 2px; background: var(--line); }
.count { font-size: 12px; color: var(--muted); margin-top: 3px; }
.missing { font-size: 12px; color: var(--muted); font-style: italic; padding: 4px; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _src(relative: str) -> str:
    return _e(quote(relative))


def _img(relative: str, width: int, height: int, alt: str, lazy: bool = False) -> str:
    """An <img> with alt text and its intrinsic size (so the layout does not jump); thumbnails
    load lazily, which matters for data sets with hundreds of classes."""
    return (f'<img src="{_src(relative)}" width="{width}" height="{height}" alt="{_e(alt)}"'
            + (' loading="lazy">' if lazy else ">"))


def _table_html(rows: list[dict]) -> str:
    if not rows:
        return '<p class="caption">No results.</p>'
    head = ("<tr><th>method</th><th>classifier</th><th>training data</th>"
            + "".join(f'<th class="num">{_e(label)}</th>' for _, label in METRICS)
            + '<th class="num">per-seed top-1 (%)</th><th>warnings</th></tr>')
    body = []
    columns = 3 + len(METRICS) + 2
    for group, members in grouped_rows(rows):
        best = {metric: best_in_group(members, metric) for metric, _ in METRICS}
        body.append(f'<tbody><tr class="group"><th colspan="{columns}" scope="colgroup">{_e(group)}</th></tr>')
        for i, row in enumerate(members):
            setting = str(row.get("setting", ""))
            cells = [f'<td class="method">{_e(row.get("method", ""))}</td>',
                     f'<td class="classifier">{_e(row.get("classifier", ""))}</td>',
                     f'<td class="data">{_e(SETTING_LABELS.get(setting, setting))}</td>']
            for metric, _ in METRICS:
                text = percent(row.get(f"{metric}_mean"), row.get(f"{metric}_std"))
                css = f"num {metric}" + (" best" if i in best[metric] else "")
                cells.append(f'<td class="{css}">{_e(text)}</td>')
            seeds = ", ".join(str(s) for s in row.get("seeds") or [])
            cells.append(f'<td class="num seeds" title="seeds {_e(seeds)}">{_e(_seed_values(row))}</td>')
            short = [str(c) for c in row.get("short_classes") or []]
            warning = ""
            if short:
                warning = (f'<span class="warn" title="a filter kept fewer images than asked for these classes">'
                           f'&#9888; {len(short)} short class{"es" if len(short) != 1 else ""}: '
                           f'{_e(", ".join(short))}</span>')
            cells.append(f'<td class="warnings">{warning}</td>')
            body.append(f'<tr class="row" data-setting="{_e(setting)}">{"".join(cells)}</tr>')
        body.append("</tbody>")
    return (f'<div class="scroll"><table class="results"><thead>{head}</thead>{"".join(body)}</table></div>'
            '<p class="caption">Mean ± std over seeds on the real test split, in percent; the best value of '
            'each group in bold. Zero-shot and synthetic-only rows are under “synthetic only”, real-only and '
            'real + synthetic rows under “real + synthetic” (the paper’s Table 1). '
            f'Also as <a href="{TABLE_MD}">{TABLE_MD}</a> and <a href="{TABLE_CSV}">{TABLE_CSV}</a>.</p>')


def _quality_table_html(quality: dict[str, dict[str, dict]]) -> str:
    classes = quality_classes(quality)
    extra = [k for k in QUALITY_EXTRA if any(_number((q.get("all") or {}).get(k)) is not None
                                             for q in quality.values())]
    has_all_fd = any(_number((q.get("all") or {}).get("fd")) is not None for q in quality.values())
    head = ('<tr><th>method</th><th class="num">mean per-class FD</th>'
            + ('<th class="num">FD (all classes)</th>' if has_all_fd else "")
            + "".join(f'<th class="num">{_e(k)}</th>' for k in extra) + "</tr>")
    means = {}
    for method, per_class in quality.items():
        values = [_number((per_class.get(c) or {}).get("fd")) for c in classes]
        present = [v for v in values if v is not None]
        means[method] = (sum(present) / len(present) if present else None, len(present))
    lowest = min((m for m, _ in means.values() if m is not None), default=None)
    body = []
    for method, per_class in quality.items():
        mean, count = means[method]
        text = "–" if mean is None else f"{mean:.2f}"
        if mean is not None and count < len(classes):
            text += f" ({count} of {len(classes)} classes)"
        css = "num fd" + (" best" if mean is not None and lowest is not None and round(mean, 2) == round(lowest, 2)
                          else "")
        cells = [f"<td>{_e(method)}</td>", f'<td class="{css}">{_e(text)}</td>']
        every = per_class.get("all") or {}
        if has_all_fd:
            v = _number(every.get("fd"))
            cells.append(f'<td class="num">{"–" if v is None else f"{v:.2f}"}</td>')
        for k in extra:
            v = _number(every.get(k))
            cells.append(f'<td class="num">{"–" if v is None else f"{v:.3f}"}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="quality"><thead>{head}</thead><tbody>{"".join(body)}</tbody>'
            '</table></div><p class="caption">Fréchet distance of each method’s synthetic images to the real '
            'images (lower is closer; the lowest mean in bold); precision, recall, density and coverage of '
            'the synthetic set against the real one over all classes, where measured.</p>')


def _training_table_html(training: dict[str, dict[str, dict]]) -> str:
    """Per trained stage: steps, the last smoothed loss, the mean images/s and the time spent."""
    rows = []
    for kind, labels in training.items():
        for label, logs in labels.items():
            entries = [e for part in logs.values() for e in part]
            steps, losses = _per_step(logs, "loss")
            rates = [r for r in (_number(e.get("images_per_s")) for e in entries) if r is not None]
            seconds = sum(_number(e.get("seconds")) or 0.0 for e in entries)
            final = plots._smoothed(losses)[-1] if losses else None
            rows.append(f"<tr><td>{_e(TRAINING_STAGES.get(kind, kind))}</td><td>{_e(label)}</td>"
                        f'<td class="num">{len(logs) if len(logs) > 1 else 1}</td>'
                        f'<td class="num">{steps[-1] if steps else 0}</td>'
                        f'<td class="num">{"n/a" if final is None else f"{final:.4g}"}</td>'
                        f'<td class="num">{f"{sum(rates) / len(rates):.1f}" if rates else "n/a"}</td>'
                        f'<td class="num">{seconds / 60:.1f}</td></tr>')
    return ('<div class="table-wrap"><table><thead><tr><th>stage</th><th>run</th><th>parts</th><th>steps</th>'
            '<th>final loss</th><th>images/s</th><th>minutes</th></tr></thead><tbody>' + "".join(rows)
            + "</tbody></table></div>")


def _figure(folder: Path, name: str, data: bytes, alt: str, caption: str) -> str:
    """Write the PNG ``data`` as ``folder/name``; its figure's HTML."""
    _write(folder / name, data)
    return _plot_html(name, data, alt, caption)


def _plot_html(name: str, data: bytes, alt: str, caption: str) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return (f'<figure class="plot">{_img(name, width, height, alt)}'
            f'<figcaption class="caption">{_e(caption)}</figcaption></figure>')


def _grids_html(grids: dict[str, dict[str, list[Path]]], real: dict[str, list[Path]], thumbs: _Thumbnails,
                per_row: int) -> str:
    """The paper's Figure 3 as a table: a row per class, a column for the real shots and one
    per method, each cell the first ``per_row`` images."""
    classes = _unique([*real, *(c for per_class in grids.values() for c in per_class)])
    methods = list(grids)
    head = ('<tr><th scope="col">class</th><th scope="col">real shots</th>'
            + "".join(f'<th scope="col">{_e(m)}</th>' for m in methods) + "</tr>")
    body = []
    for c, classname in enumerate(classes):
        class_folder = f"c{c:03d}-{_slug(classname)}"
        columns = [("real", True, f"real/{class_folder}", list(real.get(classname) or []))]
        columns += [(m, False, f"m{i:02d}-{_slug(m)}/{class_folder}", list(grids[m].get(classname) or []))
                    for i, m in enumerate(methods)]
        cells = [f'<th scope="row">{_e(classname)}</th>']
        for name, is_real, folder, paths in columns:
            shown = paths[:per_row]
            images = []
            for k, path in enumerate(shown):
                thumb = thumbs.add(Path(path), folder, k)
                if thumb is None:
                    images.append('<span class="missing">unreadable</span>')
                    continue
                relative, width, height = thumb
                kind = "real shot" if is_real else f"{name} sample"
                images.append(_img(relative, width, height, f"{classname}: {kind} {k + 1}", lazy=True))
            if not shown:
                images.append(f'<span class="missing">no {"real shots" if is_real else "images"}</span>')
            count = f"{len(shown)} of {len(paths)}" if len(paths) > len(shown) else str(len(paths))
            cells.append(f'<td class="{"real" if is_real else "synthetic"}"><div class="thumbs">{"".join(images)}'
                         f'</div><div class="count">{_e(count)} image{"s" if len(paths) != 1 else ""}</div></td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="samples"><thead>{head}</thead><tbody>{"".join(body)}</tbody>'
            "</table></div>")


def _write(path: Path, data: bytes | str) -> None:
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data)


def write_report(folder: Path, *, title: str, table: list[dict], grids: dict[str, dict[str, list[Path]]],
                 real: dict[str, list[Path]], quality: dict[str, dict[str, dict]] | None = None,
                 scaling: list[dict] | None = None, notes: list[str] | None = None, per_row_images: int = 6,
                 training: dict[str, dict[str, dict]] | None = None) -> Path:
    """Write the report into ``folder`` and return the path of its ``index.html``.

    ``table``: one row per (setting, method, classifier) with ``top1_mean``/``top1_std``,
    ``mean_per_class_mean``/``mean_per_class_std`` (fractions), ``seeds``, per-seed ``top1`` and
    ``short_classes``. ``grids``: per method, per class, synthetic image paths; ``real``: per
    class, the real shots (the paper's Figure 3, the first ``per_row_images`` of each).
    ``quality``: per method, per class (and optionally ``"all"``), a dict with ``"fd"`` (may be
    None) and optionally precision/recall/density/coverage (Figure 4). ``scaling``: rows with
    ``study``, ``x``, ``method``, ``classifier``, ``top1_mean``, ``top1_std``. ``notes``: lines
    shown at the top. ``training``: per trained stage kind (adapter, classifier), per label, the
    stage's training logs (``ddcore.train_log.train_logs``): the loss and learning-rate curves.

    Every file is written atomically; the thumbnails go to a fresh folder that replaces
    ``images/`` just before ``index.html`` is written, so a rerun never mixes old and new images.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, notes, scaling = list(table or []), list(notes or []), list(scaling or [])
    quality = {m: dict(q or {}) for m, q in (quality or {}).items()}

    _write(folder / TABLE_MD, table_markdown(table))
    _write(folder / TABLE_CSV, table_csv(table))

    sections: list[tuple[str, str, str]] = []  # (anchor, heading, html)
    sections.append(("results", "Results", _table_html(table)))

    plots = []
    if table:
        data = accuracy_png(table)
        _write(folder / ACCURACY_PNG, data)
        plots.append(_plot_html(ACCURACY_PNG, data, "bar chart of top-1 accuracy per method and classifier",
                                "Top-1 accuracy per method and classifier, per group of settings; error bars are "
                                "the standard deviation over seeds."))
    studies = _unique(str(r.get("study", "")) for r in scaling)
    for study in studies:
        name = f"scaling_{_slug(study)}.png"
        data = scaling_png(study, [r for r in scaling if str(r.get("study", "")) == study])
        _write(folder / name, data)
        label = STUDY_LABELS.get(study, study)
        plots.append(_plot_html(name, data, f"line chart of top-1 accuracy against {label}",
                                f"Top-1 accuracy against {label}; error bars are the standard deviation over seeds."))
    if plots:
        sections.append(("plots", "Plots", "".join(plots)))

    quality_written = bool(quality and quality_classes(quality))
    if quality_written:
        sections.append(("quality", "Synthetic data quality", _quality_table_html(quality) + _figure(
            folder, FD_PNG, fd_png(quality), "bar chart of the Fréchet distance per class and method",
            "Per-class Fréchet distance to the real images, a bar per method (the paper’s Figure 4); "
            "n/a where it was not measured.")))

    training = {kind: {label: logs for label, logs in labels.items() if logs}
                for kind, labels in (training or {}).items()}
    training_written = any(training.values())
    if training_written:
        sections.append(("training", "Training", _training_table_html(training) + _figure(
            folder, TRAINING_PNG, training_png(training), "line charts of the training loss and learning rate per step",
            "Training loss per optimizer step (smoothed as TensorBoard does; the raw values faint where few lines "
            "are drawn) and learning rate, from each stage's train_log.jsonl; a stage that trains one adapter "
            "per class shows the mean over its classes.")))

    staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{IMAGES}-"))
    os.chmod(staging, 0o755)
    try:
        thumbs = _Thumbnails(staging, THUMBNAIL)
        if (grids or real) and per_row_images > 0:
            grid_html = _grids_html(grids, real, thumbs, max(0, int(per_row_images)))
            sections.append(("samples", "Samples", (
                '<p class="caption">Per class: the real shots, then each method’s first '
                f"{int(per_row_images)} synthetic images (the paper’s Figure 3).</p>" + grid_html)))
        if thumbs.failed:
            notes.append(f"{len(thumbs.failed)} sample image(s) could not be read, e.g. {thumbs.failed[0]}")
        page = _page(title, notes, sections)
        old = None
        if (folder / IMAGES).exists():
            old = Path(tempfile.mkdtemp(dir=folder, prefix=f".{IMAGES}-old-"))
            (folder / IMAGES).replace(old / IMAGES)
        staging.replace(folder / IMAGES)
        _write(folder / INDEX, page)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        written = ({f"scaling_{_slug(study)}.png" for study in studies} | ({FD_PNG} if quality_written else set())
                   | ({TRAINING_PNG} if training_written else set()))
        for stale in [*folder.glob("scaling_*.png"), folder / FD_PNG, folder / TRAINING_PNG]:  # an earlier run's
            if stale.name not in written:
                stale.unlink(missing_ok=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder / INDEX


def _page(title: str, notes: list[str], sections: list[tuple[str, str, str]]) -> str:
    nav = "".join(f'<a href="#{anchor}">{_e(heading)}</a>' for anchor, heading, _ in sections)
    notes_html = ""
    if notes:
        notes_html = ('<section class="notes" id="notes" aria-label="notes"><ul>'
                      + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul></section>")
    body = "".join(f'<section id="{anchor}"><h2>{_e(heading)}</h2>{content}</section>'
                   for anchor, heading, content in sections)
    return ("<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{CSS}</style></head>\n"
            f'<body><header><div class="inner"><h1>{_e(title)}</h1><nav>{nav}</nav></div></header>\n'
            f"<main>{notes_html}{body}"
            '<footer>Written by datadream (<code>dd compare</code>). A static page: every link is relative, '
            "so the folder can be moved or zipped.</footer></main></body></html>\n")
