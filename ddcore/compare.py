"""``dd compare``: a matrix of methods x classifiers x seeds on one data set, with shared stages.

Every run of the matrix keeps its own run folder (``runs/<name>/``: run.json, fewshot.json,
metrics and predictions), but all of them put their stage outputs in one store (``store/``).
Stage folders are named by the digest of what they depend on, so an adapter is trained once
for all classifiers and settings, a synthetic set is generated once, and asking for fewer
images per class reuses the first images of a larger set. A rerun after an interruption
finds every finished stage and resumes the unfinished one.

The table has one row per (setting, method, classifier) with the mean and standard deviation
(sample, ddof=1) over seeds, as Table 1 of the paper: methods that make synthetic data are run
on synthetic images only and on real + synthetic images; ``zero-shot`` and ``real-finetune``
have one setting each.

``base_models`` (``dd compare --base-models``) adds the diffusion base model as an axis: every
method that makes synthetic images runs once per base model (its run names carry the base
model's short name), the ones that make none (``zero-shot``, ``real-finetune``) run once, and the
table gains a base-model column ("-" for the runs that do not depend on it).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ddcore.config import RunConfig
from ddcore.errors import ConfigError
from ddcore.plugins import Plugins
from ddcore.progress import SILENT, Reporter
from ddcore.generation import short_classes
from ddcore.report import base_model_label
from ddcore.store import atomic_write_json

SETTINGS = ("synthetic", "real+synthetic")
RESULTS = "results.json"


@dataclass(frozen=True)
class PlannedRun:
    method: str
    classifier: str
    setting: str  # the classifier's training data: none, real, synthetic or real+synthetic
    seed: int
    shots: int
    images_per_class: int
    study: str = ""  # "", "images_per_class" or "shots"
    # The generator's base model when the matrix has several (part of the name); None when the
    # matrix has one, or for a run that makes no synthetic images (it runs once for all).
    base_model: str | None = None

    @property
    def name(self) -> str:
        extra = {"images_per_class": f"-n{self.images_per_class}", "shots": f"-k{self.shots}"}.get(self.study, "")
        method = self.method if self.base_model is None else f"{self.method}@{base_model_slug(self.base_model)}"
        return f"{method}-{self.classifier}-{self.setting.replace('+', '_')}-seed{self.seed}{extra}"


def base_model_slug(model: str) -> str:
    """The filesystem-safe short form of a base model in run names: its ``base_model_label``
    with ``/`` as ``--`` (``org/name`` -> ``org--name``) and any other unsafe character as ``-``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", base_model_label(model).replace("/", "--")).strip("-.")
    return slug or "model"


def facet_label(row: dict[str, Any]) -> str:
    """A row's method with its base model (``datadream-dset @ tiny-sdxl``) where the row has
    one: the report's and the console table's names of the generators."""
    base = row.get("base_model")
    return row["method"] if not base else f"{row['method']} @ {base_model_label(base)}"


@dataclass
class CompareSpec:
    methods: list[str]
    classifiers: list[str]
    seeds: list[int]
    base: RunConfig  # the shared settings (data, models, counts, ...)
    out: Path
    settings: list[str] = field(default_factory=lambda: list(SETTINGS))
    scale_images: list[int] = field(default_factory=list)  # images per class for the scaling study
    scale_shots: list[int] = field(default_factory=list)  # shots for the scaling study
    # The feature space of the set-quality measures (ddcore.quality_report); "classifier": the
    # first classifier's CLIP image features.
    quality_features: str = "classifier"
    # The diffusion base models (``--base-models``); empty: the one of ``base`` (``--base-model``).
    base_models: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        models = [m.strip() for m in self.base_models if m and m.strip()] or [self.base.base_model]
        self.base_models = list(dict.fromkeys(models))  # each once, in the order given

    @property
    def faceted(self) -> bool:
        """Whether the base model is an axis of the matrix (more than one)."""
        return len(self.base_models) > 1

    def depends_on_base_model(self, train_on: str) -> bool:
        """Whether runs of a method training on ``train_on`` use the base model (they generate)."""
        return train_on not in ("none", "real") and not self.base.synthetic


def plan(spec: CompareSpec, plugins: Plugins) -> list[PlannedRun]:
    """Every run of the matrix, then those of the scaling studies (first classifier only,
    the first setting, methods that make synthetic data for the images study). With several
    base models, each method that makes synthetic images runs per base model (the main matrix
    and both scaling studies), the others once."""
    unknown = [s for s in spec.settings if s not in SETTINGS]
    if unknown:
        raise ConfigError(f"--settings takes {', '.join(SETTINGS)}, not {', '.join(unknown)}")
    if not (spec.methods and spec.classifiers and spec.seeds):
        raise ConfigError("dd compare needs at least one method, one classifier and one seed")
    _check_slugs(spec.base_models)
    base = spec.base

    def models(train_on: str) -> list[str | None]:
        return list(spec.base_models) if spec.faceted and spec.depends_on_base_model(train_on) else [None]

    runs: list[PlannedRun] = []
    generating = []
    for method in spec.methods:
        train_on = plugins.method(method).train_on
        settings = [train_on] if train_on in ("none", "real") else spec.settings
        if train_on not in ("none", "real"):
            generating.append(method)
        for model in models(train_on):
            for classifier in spec.classifiers:
                for setting in settings:
                    for seed in spec.seeds:
                        runs.append(PlannedRun(method, classifier, setting, seed, base.shots, base.images_per_class,
                                               base_model=model))
    classifier, setting = spec.classifiers[0], spec.settings[0]
    # Larger sets first: a smaller count then reuses the first images of the larger set.
    for count in sorted(set(spec.scale_images) - {base.images_per_class}, reverse=True):
        for method in generating:
            for model in models(setting):
                for seed in spec.seeds:
                    runs.append(PlannedRun(method, classifier, setting, seed, base.shots, count, "images_per_class",
                                           model))
    for shots in sorted(set(spec.scale_shots) - {base.shots}):
        for method in spec.methods:
            train_on = plugins.method(method).train_on
            run_on = train_on if train_on in ("none", "real") else setting
            for model in models(run_on):
                for seed in spec.seeds:
                    runs.append(PlannedRun(method, classifier, run_on, seed, shots, base.images_per_class, "shots",
                                           model))
    return runs


def _check_slugs(models: list[str]) -> None:
    """Run names tell the base models apart by their short names, so those must differ."""
    seen: dict[str, str] = {}
    for model in models:
        slug = base_model_slug(model)
        if slug in seen:
            raise ConfigError(f"--base-models {seen[slug]} and {model} have the same short name '{slug}' (run "
                              "folders are named by it); give one of them another folder name")
        seen[slug] = model


def run_config(spec: CompareSpec, planned: PlannedRun) -> RunConfig:
    """One run's config. The user's stage options apply to the runs whose stage has them
    (``--set adapter.max_steps=...`` reaches DataDream's adapter, not IsSynth's ``none``);
    ``check_options`` has made sure each one reaches at least one stage of the matrix."""
    soft = {kind: {**spec.base.soft_options.get(kind, {}), **opts} for kind, opts in spec.base.options.items()}
    soft = {**spec.base.soft_options, **soft}
    return dataclasses.replace(
        spec.base, method=planned.method, classifier=planned.classifier, train_on=planned.setting,
        base_model=planned.base_model or spec.base_models[0],
        seed=planned.seed, shots=planned.shots, images_per_class=planned.images_per_class,
        out=str(spec.out / "runs" / planned.name), store=str(spec.out / "store"), fewshot=None,
        options={}, soft_options=soft,
    )


def check_options(spec: CompareSpec, plugins: Plugins) -> None:
    """Each ``--set KIND.OPTION`` must be an option of some stage the matrix uses (a typo is
    an error, not silently ignored)."""
    from ddcore.pipeline import Run

    fields: dict[str, set[str]] = {}
    for method in spec.methods:
        for classifier in spec.classifiers:
            config = dataclasses.replace(spec.base, method=method, classifier=classifier, options={}, soft_options={})
            for kind, name in Run.stage_choices(config, plugins.method(method)).items():
                if name is not None:
                    options = plugins.get(kind, name).factory.Options
                    fields.setdefault(kind, set()).update(f.name for f in dataclasses.fields(options))
    for kind, options in spec.base.options.items():
        unused = sorted(set(options) - fields.get(kind, set()))
        if unused:
            raise ConfigError(f"--set {kind}.{unused[0]}: no {kind} of these methods and classifiers has that option")


def check_base_models(spec: CompareSpec, planned: list[PlannedRun], plugins: Plugins) -> None:
    """Before any work: every planned run's stages must suit its base model's family
    (``Run.check_base_model_family``, e.g. Diffusion Inversion is SD only). One error names
    every (method, base model) pair that cannot run, rather than a failure halfway."""
    from ddcore.pipeline import Run

    dataset, checked, refused = None, set(), {}
    for item in planned:
        config = run_config(spec, item)
        key = (item.method, item.classifier, item.setting, config.base_model)
        if key in checked:
            continue
        checked.add(key)
        run = Run(config, plugins, dataset=dataset)  # builds the stages, loads no model
        dataset = run.dataset
        try:
            run.check_base_model_family()
        except ConfigError as exc:
            refused.setdefault((item.method, config.base_model), _refusal(run) or str(exc))
    if refused:
        pairs = "; ".join(f"{method} with {model} ({why})" for (method, model), why in refused.items())
        raise ConfigError(f"dd compare: {len(refused)} (method, base model) pair{'s' if len(refused) > 1 else ''} "
                          f"cannot run: {pairs}; drop the method from --methods or the model from --base-models")


def _refusal(run) -> str:
    """Why ``run``'s stages refuse its base model, short: "SDXL; its adapter works with ... only"."""
    from ddcore.models.diffusion import base_model_family
    from ddcore.models.families import FAMILIES, titles

    family = base_model_family(run.config.base_model)
    kinds: dict[str, list[str]] = {}  # the supported families' titles -> the stages refusing
    for kind, stage in run.stages.items():
        if stage.families is not None and family not in stage.families:
            kinds.setdefault(titles(stage.families), []).append(kind.replace("_", " "))
    if family not in FAMILIES or not kinds:
        return ""
    why = ", ".join(f"its {' and '.join(names)} work{'s' if len(names) == 1 else ''} with {supported} only"
                    for supported, names in kinds.items())
    return f"{FAMILIES[family].title}; {why}"


def run_matrix(spec: CompareSpec, plugins: Plugins | None = None, reporter: Reporter = SILENT,
               on_result: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
    """Run (or reuse) every planned run; returns one result row per run, also in results.json."""
    from ddcore.pipeline import Run

    plugins = plugins or Plugins()
    planned = plan(spec, plugins)
    check_options(spec, plugins)
    check_base_models(spec, planned, plugins)
    spec.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(spec.out / "compare.json", {
        "methods": spec.methods, "classifiers": spec.classifiers, "seeds": spec.seeds, "settings": spec.settings,
        "scale_images": spec.scale_images, "scale_shots": spec.scale_shots, "base_models": spec.base_models,
        "base": spec.base.to_dict(), "runs": [p.name for p in planned],
    })
    rows = []
    for i, item in enumerate(planned, 1):
        reporter.log(f"[bold]run {i}/{len(planned)}[/]: {item.name}")
        run = Run(run_config(spec, item), plugins, reporter)
        metrics = run.run_all()
        if metrics is None:  # a helper process of a multi-process launch: the main one records
            continue
        row = {**dataclasses.asdict(item), "name": item.name, "top1": metrics["top1"],
               "mean_per_class": metrics["mean_per_class"], "per_class": metrics["per_class"],
               "run": str(run.out), **folder_fields(run), "short_classes": _short_classes(run)}
        rows.append(row)
        atomic_write_json(spec.out / RESULTS, rows)
        if on_result:
            on_result(row)
    return rows


def folder_fields(run) -> dict[str, str | None]:
    """A result row's stage folders (the report's grids and training curves read them)."""
    folders = run.stage_folders()
    return {"synthetic": _text(folders["synthetic"]), "adapter_dir": _text(folders["adapter"]),
            "classifier_dir": _text(folders["classifier"])}


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _short_classes(run) -> list[str]:
    synthetic = run.stage_folders()["synthetic"]
    if synthetic is None or run.config.synthetic:
        return []
    return short_classes(synthetic, run.config.images_per_class)


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- std over seeds per (setting, method, classifier), main matrix only; per (setting,
    method, classifier, base model) when the runs have several base models (then every row has
    ``base_model``: None for a method that makes no synthetic images, run once for all)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if not row["study"]:
            key = (row["setting"], row["method"], row["classifier"], row.get("base_model"))
            groups.setdefault(key, []).append(row)
    faceted = any(base is not None for *_, base in groups)
    table = []
    for (setting, method, classifier, base_model), members in groups.items():
        top1 = [m["top1"] for m in members]
        mpc = [m["mean_per_class"] for m in members]
        table.append({
            "setting": setting, "method": method, **({"base_model": base_model} if faceted else {}),
            "classifier": classifier,
            "top1_mean": statistics.fmean(top1), "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
            "mean_per_class_mean": statistics.fmean(mpc),
            "mean_per_class_std": statistics.stdev(mpc) if len(mpc) > 1 else 0.0,
            "seeds": [m["seed"] for m in members], "top1": top1,
            "short_classes": sorted({c for m in members for c in m["short_classes"]}),
        })
    return table


def scaling_rows(rows: list[dict[str, Any]], spec: CompareSpec) -> list[dict[str, Any]]:
    """Mean +- std over seeds along each scaling study (the main matrix gives the base point)."""
    points: dict[tuple, list[float]] = {}
    first = spec.classifiers[0]
    for row in rows:
        if row["classifier"] != first:
            continue
        for study in ("images_per_class", "shots"):
            wanted = spec.scale_images if study == "images_per_class" else spec.scale_shots
            if not wanted or row["study"] not in ("", study) or row[study] not in wanted:
                continue
            if not row["study"] and row["setting"] not in (spec.settings[0], "none", "real"):
                continue
            points.setdefault((study, row[study], row["method"], row.get("base_model") or ""), []).append(row["top1"])
    faceted = any(base for *_, base in points)
    return [{"study": study, "x": x, "method": method, **({"base_model": base or None} if faceted else {}),
             "classifier": first, "top1_mean": statistics.fmean(v),
             "top1_std": statistics.stdev(v) if len(v) > 1 else 0.0}
            for (study, x, method, base), v in sorted(points.items())]
