"""``dd report RUN``: one run's page, the same layout as ``dd compare``'s report: its result,
its training curves (loss and learning rate of the adapter and the classifier, from their
``train_log.jsonl``), its synthetic images beside the real shots. Written to ``RUN/report/``."""

from __future__ import annotations

from pathlib import Path

from ddcore.compare import folder_fields, table_rows
from ddcore.compare_report import GRID_IMAGES, synthetic_grids, training_curves
from ddcore.errors import StageError
from ddcore.generation import short_classes
from ddcore.pipeline import load_run
from ddcore.plugins import Plugins
from ddcore.progress import SILENT, Reporter
from ddcore.store import read_json

REPORT_DIR = "report"


def write_run_report(out: Path, plugins: Plugins | None = None, reporter: Reporter = SILENT) -> Path:
    """The run folder's report; returns its ``index.html``. Works on an unfinished run too
    (the table is empty until ``metrics.json`` exists; the curves show the steps so far)."""
    run = load_run(Path(out), plugins, reporter)
    c = run.config
    folders = folder_fields(run)
    synthetic = run.stage_folders()["synthetic"]
    if synthetic is not None and not (synthetic / "metadata.jsonl").is_file():
        folders["synthetic"] = None  # not generated yet: no grids
    row = {"method": c.method, "classifier": run.choices["classifier"], "setting": run.train_on, "seed": c.seed,
           "shots": c.shots, "images_per_class": c.images_per_class if synthetic else 0, "study": "",
           "name": run.out.name, **folders,
           "short_classes": short_classes(synthetic, c.images_per_class) if synthetic and synthetic.is_dir() else []}
    metrics_file = run.out / "metrics.json"
    table = []
    notes = [f"run: {run.out} ({run.dataset.name}, {run.dataset.num_classes} classes, {c.shots} shots, seed {c.seed})"]
    if metrics_file.is_file():
        metrics = read_json(metrics_file)
        table = table_rows([{**row, "top1": metrics["top1"], "mean_per_class": metrics["mean_per_class"]}])
    else:
        notes.append("not evaluated yet: the table fills in once `dd evaluate` (or `dd run`) has finished")
    training = training_curves([row])
    if not any(training.values()) and not table:
        raise StageError(f"{run.out} has nothing to report yet: no stage has trained or been evaluated")
    real: dict[str, list[Path]] = {name: [] for name in run.dataset.classnames}
    for shot in run.context.shots:
        real[shot.classname].append(shot.path)
    from ddcore.report import write_report

    return write_report(run.out / REPORT_DIR, title=f"dd report: {run.out.name}", table=table,
                        grids=synthetic_grids([row], run.dataset.classnames) if row["synthetic"] else {},
                        real=real, notes=notes, per_row_images=GRID_IMAGES, training=training)
