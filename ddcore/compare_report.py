"""The outputs of ``dd compare``: Table 1 as JSON, Markdown and CSV, and the HTML report with
image grids per class (the paper's Figure 3), accuracy plots, the scaling studies and the
per-class distance between synthetic and real images (Figure 4) in the classifier's
image-feature space.

With several base models (``CompareSpec.base_models``) the table gains a ``base model`` column
after the method ("-" for the runs that make no synthetic images and run once), and the report
names each generator by method and base model (``datadream-dset @ tiny-sdxl``): its bars, its
grid column, its row of the quality table, all against the same real images."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from ddcore.compare import CompareSpec, PlannedRun, facet_label, run_config, scaling_rows, table_rows
from ddcore.errors import DDError
from ddcore.generation import load_synthetic_set
from ddcore.plugins import Plugins
from ddcore.progress import SILENT, Reporter
from ddcore.store import atomic_write_json, atomic_write_text

GRID_IMAGES = 6  # synthetic images per class and method in the report


def write_compare_outputs(spec: CompareSpec, rows: list[dict[str, Any]], plugins: Plugins | None = None,
                          reporter: Reporter = SILENT) -> dict[str, Any]:
    from ddcore.report import table_csv, table_markdown, write_report

    plugins = plugins or Plugins()
    table = table_rows(rows)
    atomic_write_json(spec.out / "table.json", table)
    markdown, csv_text = table_markdown(table), table_csv(table)
    atomic_write_text(spec.out / "table.md", markdown)
    atomic_write_text(spec.out / "table.csv", csv_text)
    first = _first_run(spec, rows, plugins)
    grids = synthetic_grids(rows, first.dataset.classnames)
    real = {name: [] for name in first.dataset.classnames}
    for shot in first.context.shots:
        real[shot.classname].append(shot.path)
    notes = [f"data set: {first.dataset.name} ({first.dataset.num_classes} classes), {spec.base.shots} shots, "
             f"{spec.base.images_per_class} synthetic images per class, seeds {', '.join(map(str, spec.seeds))}",
             f"runs: {len(rows)}; stages shared in {spec.out / 'store'}"]
    if spec.faceted:
        notes.append(f"base models: {', '.join(spec.base_models)}; the methods that make synthetic images ran "
                     "once per base model (named 'method @ base model'), the others once for all")
    quality, note = synthetic_quality(spec, rows, first, plugins, reporter)
    if note:
        notes.append(note)
    scaling = [{**r, "method": facet_label(r)} for r in scaling_rows(rows, spec)]
    report = write_report(spec.out / "report", title=f"dd compare: {first.dataset.name}", table=labelled(table),
                          grids=grids, real=real, quality=quality, scaling=scaling, notes=notes,
                          per_row_images=GRID_IMAGES, training=training_curves(rows))
    if spec.faceted:  # the report's copies of the table, with the base-model column too
        atomic_write_text(report.parent / "table.md", markdown)
        atomic_write_text(report.parent / "table.csv", csv_text)
    return {"table": table, "markdown": spec.out / "table.md", "report": report, "quality": quality}


def labelled(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows with each generator named by method and base model (the HTML report's
    and the console's tables have no base-model column of their own)."""
    return [{**row, "method": facet_label(row)} for row in table]


def _first_run(spec: CompareSpec, rows: list[dict[str, Any]], plugins: Plugins):
    """The first seed's run, prepared: its data set and shots (nothing is recomputed)."""
    from ddcore.pipeline import Run

    row = rows[0]
    planned = PlannedRun(row["method"], row["classifier"], row["setting"], row["seed"], row["shots"],
                         row["images_per_class"], row["study"], row.get("base_model"))
    run = Run(run_config(spec, planned), plugins)
    run.prepare()
    return run


def _reference_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method that made synthetic images (per method and base model when there are several,
    keyed ``method @ base model``): its first main-matrix run (first seed)."""
    chosen: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["synthetic"] and not row["study"] and facet_label(row) not in chosen:
            chosen[facet_label(row)] = row
    return chosen


def synthetic_grids(rows: list[dict[str, Any]], classnames: list[str]) -> dict[str, dict[str, list[Path]]]:
    grids: dict[str, dict[str, list[Path]]] = {}
    for method, row in _reference_rows(rows).items():
        per_class: dict[str, list[Path]] = {name: [] for name in classnames}
        for item in load_synthetic_set(Path(row["synthetic"])).items:
            name = classnames[int(item["label"])]
            if len(per_class[name]) < GRID_IMAGES:
                per_class[name].append(Path(row["synthetic"]) / item["file_name"])
        grids[method] = per_class
    return grids


def training_curves(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict]]:
    """The training logs of each distinct adapter and classifier stage the runs used (a shared
    adapter once, under its first run's method and seed)."""
    from ddcore.train_log import train_logs

    curves: dict[str, dict[str, dict]] = {"adapter": {}, "classifier": {}}
    seen: set[str] = set()
    for row in rows:
        for kind, label in (("adapter", f"{facet_label(row)} seed {row['seed']}"), ("classifier", row["name"])):
            folder = row.get(f"{kind}_dir")
            if folder and folder not in seen:
                seen.add(folder)
                logs = train_logs(Path(folder))
                if logs:
                    curves[kind][label] = logs
    return curves


def standard_fid(quality: dict[str, dict[str, dict]], sets: dict[str, list], first, reporter: Reporter) -> str:
    """The standard FID (the FID Inception network) of each method's set against the train
    split's real images, all classes pooled, into ``quality[method]["all"]["fid"]``, when the
    network's weights are on disk (``ddcore.fid_inception.fid_weights``). Returns the report
    note's addition: the scores, why there are none, or "" when the weights are not there."""
    from ddcore.fid_inception import fid_weights, load_fid_inception
    from ddcore.quality import fid_features, frechet_distance

    try:
        weights = fid_weights()
        network = load_fid_inception(weights) if weights is not None else None
    except DDError as exc:  # a DD_FID_WEIGHTS that names no file, or the wrong file
        return f"; no FID: {exc}"
    if network is None:
        return ""
    device = first.context.device
    real = fid_features(first.dataset.train, network, device=device, reporter=reporter)
    scores = {method: frechet_distance(real, fid_features(samples, network, device=device, reporter=reporter))
              for method, samples in sets.items() if len(samples) >= 2}  # a covariance needs two images
    for method, value in scores.items():
        quality[method]["all"]["fid"] = value
    return (f"; FID (the standard FID Inception network, all classes, {len(real)} real images; compares with "
            f"published FIDs only at the same image counts): " + ", ".join(
                f"{method} {value:.2f}" for method, value in scores.items()))


def feature_model(spec: CompareSpec, plugins: Plugins) -> str | None:
    """The open_clip model of the first classifier (its image-feature space), or None for a
    classifier that is not CLIP."""
    return plugins.create("classifier", spec.classifiers[0]).feature_model(spec.base)


def synthetic_quality(spec: CompareSpec, rows: list[dict[str, Any]], first, plugins: Plugins,
                      reporter: Reporter) -> tuple[dict[str, dict[str, dict]] | None, str | None]:
    """Per method and class: Frechet distance (and precision/recall/density/coverage) between
    the synthetic images and the data set's real train images, in ``spec.quality_features``
    (``classifier``: the first classifier's CLIP image-feature space). Returns (None, why)
    when it cannot be computed."""
    from ddcore.quality import per_class_quality
    from ddcore.quality_report import feature_space

    references = _reference_rows(rows)
    if not references:
        return None, None
    space = spec.quality_features
    if space == "classifier":
        model = feature_model(spec, plugins)
        if model is None:
            return None, f"no feature distances: classifier '{spec.classifiers[0]}' has no CLIP image encoder"
        space = f"clip:{model}"
    try:
        features, described = feature_space(space, device=first.context.device, reporter=reporter)
    except DDError as exc:
        return None, f"no feature distances: {exc}"

    classnames = first.dataset.classnames
    quality, sets = {}, {}
    for label, row in references.items():  # every set against the same real images and features
        sets[label] = load_synthetic_set(Path(row["synthetic"])).samples(first.dataset)
        quality[label] = per_class_quality(first.dataset.train, sets[label], classnames, features)
    note = f"feature distances: {described}, synthetic vs the train split's real images"
    if space.partition(":")[0] != "fid":  # in the fid space the "all" entry's fd already is the FID
        note += standard_fid(quality, sets, first, reporter)
    if spec.faceted:  # quality.json per base model, then method
        nested: dict[str, dict[str, dict]] = {}
        for label, row in references.items():
            nested.setdefault(row.get("base_model") or spec.base_models[0], {})[row["method"]] = quality[label]
        atomic_write_json(spec.out / "quality.json", nested)
    else:
        atomic_write_json(spec.out / "quality.json", quality)
    return quality, note
