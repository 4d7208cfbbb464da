"""Runs the stages in order: adapt, generate, train, evaluate.

Each stage's output lives in ``<out>/<kind>/<key>``; the key is a digest of everything the
output depends on (settings, the few shots, the upstream stage's key). A finished stage is
reused, an unfinished one resumes. Before/after hooks run around every stage.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable

from ddcore.config import RunConfig, with_method_settings
from ddcore.data import fewshot_digest, load_fewshot, sample_fewshot, save_fewshot
from ddcore.distributed import min_across, process_info, wait_for_everyone
from ddcore.errors import ConfigError, StageError
from ddcore.evaluation import evaluate_scores, write_evaluation
from ddcore.generation import (COUNTS, GenerationJob, Shard, load_synthetic_folder, load_synthetic_set, plan_item,
                               short_classes)
from ddcore.options import demo_values, keyed_options, option_names
from ddcore.plugins import Plugins
from ddcore.progress import SILENT, Reporter
from ddcore.records import Dataset, Prompt, Sample, SyntheticSet
from ddcore.stages import Method, RunContext, Stage, TrainingData  # RunContext: also imported from here
from ddcore.search import PAPER_GRID, check_grid, search_settings, validation_split
from ddcore.tracking import Trackers, check_trackers, tracker_names
from ddcore.store import RunLock, StageDir, atomic_write_json, copy_stage_files, digest, read_json

STAGES = ("prepare", "adapt", "generate", "train", "evaluate")
RUN_FILE = "run.json"
SEARCH_FILE = "search.json"  # in the classifier folder: the trials and the choice
FEWSHOT_FILE = "fewshot.json"


def load_dataset(config: RunConfig, plugins: Plugins) -> Dataset:
    """The data set a config names (``dataset_name``), loaded with its ``--set dataset.*`` options."""
    name = dataset_name(config, plugins)
    data = Path(config.data).expanduser() if config.data else None
    split = Path(config.split).expanduser() if config.split else None
    source = plugins.create("dataset", name, stage_options(config, plugins.get("dataset", name).factory, "dataset"))
    return source.load(data, split)


def stage_options(config: RunConfig, stage_cls: type[Stage], kind: str,
                  preset: dict[str, Any] | None = None) -> dict[str, Any]:
    """A stage's options, lowest first: the method preset's (for this data set), the demo
    values its Options declare (offline demo only), the soft options it accepts (``dd
    compare``'s), the user's."""
    fields = option_names(stage_cls.Options)
    demo = demo_values(stage_cls.Options) if config.demo else {}
    soft = {k: v for k, v in config.soft_stage_options(kind).items() if k in fields}
    return {**(preset or {}), **demo, **soft, **config.stage_options(kind)}


def dataset_name(config: RunConfig, plugins: Plugins) -> str:
    """``--dataset``, else the loader registered for what is given: ``--split``, ``--data``, or
    nothing (the demo)."""
    return config.dataset or plugins.default("dataset", "split" if config.split else "folder" if config.data else "demo")


def with_defaults(config: RunConfig, plugins: Plugins) -> RunConfig:
    """``config`` with the method, classifier and data set loader it leaves open set to the
    registered defaults (so run.json names them)."""
    filled = {kind: plugins.default(kind) for kind in ("method", "classifier") if getattr(config, kind) is None}
    if config.dataset is None:
        filled["dataset"] = dataset_name(config, plugins)
    return dataclasses.replace(config, **filled)


def check_pairing(choices: dict[str, str | None], stages: dict[str, Stage]) -> None:
    """An adapter and a generator that declare they only work with certain others (Diffusion
    Inversion's pair) fail here, before any training."""
    adapter, generator = stages.get("adapter"), stages.get("generator")
    if generator is None:
        return
    names = {"adapter": choices["adapter"], "generator": choices["generator"]}
    if generator.adapters is not None and names["adapter"] not in generator.adapters:
        raise ConfigError(f"generator '{names['generator']}' works only with --adapter "
                          f"{' or '.join(generator.adapters)}, not '{names['adapter']}'")
    if adapter is not None and adapter.generators is not None and names["generator"] not in adapter.generators:
        raise ConfigError(f"adapter '{names['adapter']}' works only with --generator "
                          f"{' or '.join(adapter.generators)}, not '{names['generator']}'")


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_out(config: RunConfig, dataset_name: str) -> Path:
    return Path("runs") / f"{dataset_name}-{config.method}-{config.shots}shot-seed{config.seed}"


class Run:
    """One configured run. Build it, then call ``run_all()`` or one stage at a time."""

    def __init__(self, config: RunConfig, plugins: Plugins | None = None, reporter: Reporter = SILENT,
                 dataset: Dataset | None = None) -> None:
        self.plugins = plugins or Plugins()
        # A copy: this run's trackers attach to it, not to a reporter other runs share (SILENT).
        self.reporter = reporter = copy.copy(reporter)
        config = with_defaults(config, self.plugins)
        self.method = self.plugins.method(config.method)
        self.config = config = with_method_settings(config, self.method.settings)
        self._external: tuple[list[Sample], str] | None = None  # the --synthetic folder, once read
        self._keys: dict[str, str | None] | None = None  # the stage keys, once the shots are chosen
        # Before the stages: a method's options may depend on the data set (ImageNet's epochs).
        self.dataset = dataset if dataset is not None else load_dataset(config, self.plugins)
        self.choices = self._choices()
        self.stages: dict[str, Stage] = {
            kind: self.plugins.create(kind, name, self._options(kind))
            for kind, name in self.choices.items()
            if name is not None
        }
        check_pairing(self.choices, self.stages)
        self.out = Path(config.out) if config.out else default_out(config, self.dataset.name)
        # Stage outputs live under the store: the run folder itself, or one shared by many runs
        # (``dd compare``), where equal keys mean one adapter, one synthetic set, one classifier.
        self.store = Path(config.store) if config.store else self.out
        device = resolve_device(config.device)
        self.process = process_info(device)
        self.tracker_names = tracker_names(config.log_with)
        if self.process.is_main:
            check_trackers(self.tracker_names)  # a missing package fails now, not after training
        self.context = RunContext(
            config=config,
            dataset=self.dataset,
            shots=[],
            method=self.method,
            device=self.process.device or device,
            out=self.out,
            reporter=reporter,
            adapter=self.stages.get("adapter"),
            rank=self.process.rank,
            world_size=self.process.world_size,
        )

    # -- configuration ----------------------------------------------------------------------

    def _choices(self) -> dict[str, str | None]:
        return self.stage_choices(self.config, self.method)

    @staticmethod
    def stage_choices(c: RunConfig, m: Method) -> dict[str, str | None]:
        """The stage plugin chosen for each kind (None: the stage is not used)."""
        train_on = c.train_on or m.train_on
        generator = c.generator or m.generator
        if c.synthetic and train_on in ("real", "none"):
            raise ConfigError(f"--synthetic is given but method '{c.method}' trains on {train_on} images; "
                              "add --train-on real+synthetic or --train-on synthetic")
        if train_on in ("real", "none") or c.synthetic:
            generator = None  # no synthetic data is used, or it comes from --synthetic
        elif generator is None:
            raise ConfigError(f"method '{c.method}' makes no synthetic data, so --train-on {train_on} cannot be used")
        return {
            "adapter": (c.adapter or m.adapter) if generator else None,
            "prompt_builder": (c.prompt_builder or m.prompt_builder) if generator else None,
            "generator": generator,
            "filter": (c.filter or m.filter) if generator else None,
            "classifier": c.classifier,
        }

    @property
    def train_on(self) -> str:
        return self.config.train_on or self.method.train_on

    def _options(self, kind: str) -> dict[str, Any]:
        factory = self.plugins.get(kind, self.choices[kind]).factory
        return stage_options(self.config, factory, kind, self.method.preset_options(kind, self.dataset.name))

    def _stage_spec(self, kind: str) -> dict[str, Any] | None:
        stage = self.stages.get(kind)
        if stage is None:
            return None
        spec = {"name": self.choices[kind], "options": keyed_options(stage.options)}
        inputs = stage.fingerprint(self.context)
        if inputs is not None:  # keys of stages without a fingerprint stay as they were
            spec["inputs"] = inputs
        return spec

    def resolved(self) -> dict[str, Any]:
        """Every setting the run resolved to: the run settings, and per stage its plugin, its
        options and what it derives from them (``Stage.describe``). Needs the shots (after
        ``prepare`` or ``choose_shots``). Recorded in run.json; ``dd run --explain`` prints it."""
        c = self.config
        settings = {"method": c.method, "dataset": self.dataset.name, "classes": self.dataset.num_classes,
                    "shots": c.shots, "seed": c.seed, "base_model": c.base_model,
                    "images_per_class": c.images_per_class if self.choices["generator"] else 0,
                    "resolution": c.resolution, "steps": c.steps, "guidance": c.guidance,
                    "train_on": self.train_on, "real_weight": c.real_weight, "search": c.search}
        stages = {}
        for kind, stage in self.stages.items():
            stages[kind] = {"name": self.choices[kind], "options": dataclasses.asdict(stage.options),
                            "derived": stage.describe(self.context)}
        return {"settings": settings, "stages": stages}

    # -- keys -------------------------------------------------------------------------------

    def keys(self) -> dict[str, str | None]:
        """Digests naming each stage's output folder."""
        from ddcore.models import model_identity

        c = self.config
        data_key = digest({"dataset": self.dataset.name, "classes": self.dataset.classnames,
                           "shots": fewshot_digest(self.context.shots, self.dataset.root)})
        base = model_identity(c.base_model)
        adapter = self.stages.get("adapter")
        adapter_key = None
        if adapter is not None and adapter.trains:
            # Adapters train on the prompt builder's prompts, so those are part of the key.
            adapter_key = digest({"adapter": self._stage_spec("adapter"), "prompts": self._stage_spec("prompt_builder"),
                                  "base": base, "resolution": c.resolution, "data": data_key, "seed": c.seed})
        synthetic_key = None
        if c.synthetic:
            synthetic_key = self._external_synthetic()[1]
        elif self.choices["generator"]:
            # The image count is not part of the key: image i is the same whatever the count,
            # so asking for more images later extends the same set.
            synthetic_key = digest({
                "adapter": adapter_key, "prompts": self._stage_spec("prompt_builder"),
                "generator": self._stage_spec("generator"), "filter": self._stage_spec("filter"),
                "base": base, "resolution": c.resolution, "steps": c.steps, "guidance": c.guidance,
                "seed": c.seed, "data": data_key,
            })
        classifier_key = digest({
            "classifier": self._stage_spec("classifier"), "model": c.classifier_model,
            "train_on": self.train_on, "real_weight": c.real_weight, "synthetic": synthetic_key,
            "count": c.images_per_class if synthetic_key else 0, "data": data_key, "seed": c.seed,
            "search": (c.search_grid or PAPER_GRID) if c.search else None,
        })
        return {"data": data_key, "adapter": adapter_key, "synthetic": synthetic_key, "classifier": classifier_key}

    # -- stages -----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check the base model suits the stages, choose the few shots (or read ``--fewshot``)
        and record the run."""
        c = self.config
        self.check_base_model_family()
        shots = self.choose_shots()
        self._keys = self.keys()
        if self.process.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_fewshot(self.out / FEWSHOT_FILE, shots, self.dataset, k=c.shots, seed=c.seed)
            record = {"config": c.to_dict(), "dataset": self.dataset.name, "stages": self.choices,
                      "train_on": self.train_on, "keys": self._keys, "resolved": self.resolved()}
            atomic_write_json(self.out / RUN_FILE, record)
            self._start_trackers(record)

    def check_base_model_family(self) -> None:
        """A stage written for some model families only refuses another one now, before any
        training, naming the families it supports (one ``model_index.json`` read)."""
        restricted = {kind: stage for kind, stage in self.stages.items()
                      if stage is not None and stage.families is not None}
        if not restricted:
            return
        from ddcore.models.diffusion import base_model_family
        from ddcore.models.families import FAMILIES, titles

        family = base_model_family(self.config.base_model)
        for kind, stage in restricted.items():
            if family is not None and family not in stage.families:
                raise ConfigError(f"{kind} '{self.choices[kind]}' works with {titles(stage.families)} base models, "
                                  f"and --base-model {self.config.base_model} is {FAMILIES[family].title}; choose "
                                  f"another --base-model or method")

    def _start_trackers(self, record: dict[str, Any]) -> None:
        """The run's trackers (``log_with``), with its settings and stage keys as their config."""
        if self.tracker_names and self.reporter.trackers is None:
            self.reporter.trackers = Trackers(self.tracker_names, self.out, self.out.name)
            self.reporter.trackers.store_config({k: record[k] for k in ("config", "keys", "stages", "train_on")})

    def close(self) -> None:
        """Close the trackers (their files are complete after this)."""
        if self.reporter.trackers is not None:
            self.reporter.trackers.finish()
            self.reporter.trackers = None

    def choose_shots(self) -> list[Sample]:
        """The few shots (``--fewshot``, or sampled from the seed), into the context; writes nothing."""
        c = self.config
        if c.fewshot:
            self.context.shots = load_fewshot(Path(c.fewshot).expanduser(), self.dataset)
        else:
            self.context.shots = sample_fewshot(self.dataset, c.shots, c.seed)
        return self.context.shots

    def _stage(self, name: str, body: Callable[[], Any]) -> Any:
        hook = self.plugins.hook
        hook.before_stage(stage=name, context=self.context)
        try:
            result = body()
        except BaseException as exc:  # Ctrl-C too: loggers get to close their files
            hook.stage_failed(stage=name, context=self.context, error=exc)
            raise
        hook.after_stage(stage=name, context=self.context, result=result)
        return result

    def _reuse(self, what: str, path: Path) -> None:
        self.reporter.log(f"[green]reusing[/] finished {what} [dim]{path}[/]")

    def _build_prompts(self) -> dict[int, list[Prompt]]:
        """The prompts per class; adapters train on the prompts generation will use."""
        if not self.context.prompts:
            self.context.prompts = self.stages["prompt_builder"].build(self.context)
        return self.context.prompts

    def adapt(self) -> Path | None:
        adapter = self.stages.get("adapter")
        if adapter is None or not adapter.trains:
            return None

        def body() -> Path:
            stage = self.stage_dir("adapter")
            if stage.is_complete():
                self._reuse(f"adapter '{self.choices['adapter']}'", stage.path)
                return stage.path
            if self.process.is_main:
                stage.mark_started(spec=self._stage_spec("adapter"), base_model=self.config.base_model)
            wait_for_everyone(self.process)
            self._build_prompts()
            self.reporter.log(f"training adapter '{self.choices['adapter']}' -> {stage.path}")
            adapter.fit(self.context, stage.path)
            wait_for_everyone(self.process)
            if self.process.is_main:
                stage.mark_complete(spec=self._stage_spec("adapter"), base_model=self.config.base_model)
            wait_for_everyone(self.process)
            return stage.path

        return self._stage("adapt", body)

    def adapter_dir(self) -> Path | None:
        adapter = self.stages.get("adapter")
        if adapter is None or not adapter.trains:
            return None
        stage = self.stage_dir("adapter")
        if not stage.is_complete():
            raise StageError(f"the adapter in {stage.path} is not trained yet; run `dd adapt {self.out}` first")
        return stage.path

    def generate(self) -> SyntheticSet | None:
        if self.choices["generator"] is None:
            return None

        def body() -> SyntheticSet:
            count = self.config.images_per_class
            stage = self.stage_dir("synthetic")
            if self._has_images(stage, count):
                self._reuse(f"synthetic set ({count} per class)", stage.path)
                return self._synthetic_subset(stage.path, count)
            adapter_dir = self.adapter_dir()
            generator, filt = self.stages["generator"], self.stages["filter"]
            prompts = generator.plan_prompts(self.context, self._build_prompts())
            if self.process.is_main:
                stage.mark_started(images_per_class=0)
            wait_for_everyone(self.process)

            def setup() -> None:
                generator.setup(self.context, adapter_dir)
                if not filt.passes_all:
                    filt.setup(self.context)

            batch_size, loaded = self.config.batch_size, False
            if batch_size is None:
                batch_size, loaded = self._generation_batch_size(generator, setup, prompts, count)
            job = GenerationJob(
                dataset=self.dataset, prompts=prompts, generator=generator, filter=filt, root=stage.path,
                count=count, run_seed=self.config.seed, batch_size=batch_size,
                max_attempts_per_class=filt.max_attempts(count), reporter=self.reporter,
                setup=(lambda: None) if loaded else setup, shard=Shard(self.context.rank, self.context.world_size),
                writers=self.config.image_writers,
            )
            self.reporter.log(f"generating {count} images per class with '{self.choices['generator']}' -> {stage.path}")
            job.run()
            wait_for_everyone(self.process)  # every shard is on disk before the metadata is written
            if not self.process.is_main:
                return None
            job.ensure_ready()  # metadata needs the generator's fields even when nothing was rendered
            extra = {**generator.metadata(), "generator": self.choices["generator"],
                     "adapter": self.choices["adapter"], "adapter_key": self._keys["adapter"]}
            synthetic = job.finish(extra)
            if self.reporter.trackers is not None:
                self.reporter.trackers.log_images(sample_images(synthetic, self.dataset))
            short = short_classes(stage.path, count)
            if short:
                self.reporter.log(f"[yellow]the filter kept fewer than {count} images for {len(short)} class(es)[/] "
                                  f"({', '.join(short[:5])}{' ...' if len(short) > 5 else ''}); "
                                  f"see {stage.path / COUNTS}")
            stage.mark_complete(images_per_class=count)
            return synthetic

        return self._stage("generate", body)

    def _generation_batch_size(self, generator, setup: Callable[[], None], prompts: dict[int, list[Prompt]],
                               count: int) -> tuple[int, bool]:
        """``--batch-size`` left out: as many images as fit (ddcore/batch_size.py), the same on
        every process; and whether the models were loaded for the probe (on a GPU)."""
        from ddcore.batch_size import choose_batch_size

        gpu = self.context.device.startswith("cuda")
        if gpu:
            setup()  # the probe measures one image's memory above the loaded models
        probe_item = plan_item(self.dataset, prompts, self.config.seed, 0, 0)
        size, why = choose_batch_size(self.context.device, lambda: generator.generate([probe_item]), count=count)
        size = min_across(size, self.process)
        self.reporter.log(f"generation batch size {size} ({why}; --batch-size sets it)")
        return size, gpu

    def _synthetic_subset(self, root: Path, count: int) -> SyntheticSet:
        """The first ``count`` images per class of a set that may hold more."""
        full = load_synthetic_set(root)
        taken: dict[int, int] = {}
        rows = []
        for row in full.items:
            label = int(row["label"])
            if taken.get(label, 0) < count:
                taken[label] = taken.get(label, 0) + 1
                rows.append(row)
        return SyntheticSet(root, rows)

    @staticmethod
    def _has_images(stage: StageDir, count: int) -> bool:
        """Finished, with at least ``count`` images per class (a larger set serves a smaller ask)."""
        info = stage.info() or {}
        return bool(info.get("complete")) and info.get("images_per_class", -1) >= count

    def _external_synthetic(self) -> tuple[list[Sample], str]:
        """The ``--synthetic`` folder's samples and content digest (read once)."""
        if self._external is None:
            self._external = load_synthetic_folder(Path(self.config.synthetic), self.dataset,
                                                   self.config.images_per_class)
        return self._external

    def synthetic(self) -> SyntheticSet | None:
        if self.choices["generator"] is None:
            return None
        stage = self.stage_dir("synthetic")
        if not self._has_images(stage, self.config.images_per_class):
            raise StageError(f"the synthetic set in {stage.path} is not finished; run `dd generate {self.out}` first")
        return self._synthetic_subset(stage.path, self.config.images_per_class)

    def _training_data(self) -> TrainingData:
        train_on = self.train_on
        real = self.context.shots if train_on in ("real", "real+synthetic") else []
        if self.config.synthetic:
            synthetic = self._external_synthetic()[0]
        else:
            synthetic_set = self.synthetic() if train_on in ("synthetic", "real+synthetic") else None
            synthetic = synthetic_set.samples(self.dataset) if synthetic_set else []
        return TrainingData(real=real, synthetic=synthetic, real_weight=self.config.real_weight)

    def stage_dir(self, kind: str) -> StageDir:
        """The folder of this run's ``kind`` output (adapter, synthetic, classifier)."""
        return StageDir(self.store, kind, self._keys[kind])

    def stage_folders(self) -> dict[str, Path | None]:
        """The adapter, synthetic and classifier folders, ``None`` for a stage this run has no
        output of (real-only runs train no adapter; zero-shot has no synthetic set). Works
        before ``prepare()`` too (``dd report`` on a loaded run): it chooses the shots first."""
        if self._keys is None:
            self.choose_shots()
            self._keys = self.keys()
        return {kind: self.stage_dir(kind).path if self._keys[kind] else None
                for kind in ("adapter", "synthetic", "classifier")}

    def train(self) -> Path:
        def body() -> Path:
            stage = self.stage_dir("classifier")
            if stage.is_complete():
                self._reuse(f"classifier '{self.choices['classifier']}'", stage.path)
                return stage.path
            data = self._training_data()
            stage.mark_started(spec=self._stage_spec("classifier"))
            chosen = self._search(stage, data) if self.config.search else None
            if chosen is None or not chosen["final_equals_trial"]:
                classifier = self._classifier_with(chosen["setting"]) if chosen else self.stages["classifier"]
                what = "preparing zero-shot" if not (data.real or data.synthetic) else "training"
                self.reporter.log(f"{what} classifier '{self.choices['classifier']}' on {len(data.real)} real + "
                                  f"{len(data.synthetic)} synthetic images -> {stage.path}")
                classifier.fit(self.context, data, stage.path)
            else:
                copy_stage_files(chosen["folder"], stage.path)
            stage.mark_complete(spec=self._stage_spec("classifier"), train_on=self.train_on,
                                real=len(data.real), synthetic=len(data.synthetic),
                                search=chosen and {k: v for k, v in chosen.items() if k != "folder"})
            return stage.path

        return self._stage("train", body)

    def _classifier_with(self, overrides: dict[str, Any]):
        options = {**self._options("classifier"), **overrides}
        return self.plugins.create("classifier", self.choices["classifier"], options)

    def _search(self, stage: StageDir, data: TrainingData) -> dict[str, Any]:
        known = {f.name for f in dataclasses.fields(self.stages["classifier"].options)}
        grid = check_grid(self.config.search_grid or PAPER_GRID, known, self.choices["classifier"])
        if not (data.real or data.synthetic):
            raise ConfigError("--search needs a classifier that trains; this run is zero-shot")
        validation = validation_split(self.dataset, self.context.shots, data, self.config.seed)
        return search_settings(self._classifier_with, self.context, grid, validation,
                               self.store / "search" / self._keys["classifier"], stage.path / SEARCH_FILE)

    def evaluate(self) -> dict[str, Any]:
        def body() -> dict[str, Any]:
            stage = self.stage_dir("classifier")
            if not stage.is_complete():
                raise StageError(f"the classifier in {stage.path} is not trained yet; run `dd train {self.out}` first")
            test = self.dataset.test
            test_key = digest([[str(s.path), s.label] for s in test])
            cached = stage.path / "evaluation" / test_key
            if (cached / "metrics.json").is_file():
                self._reuse("evaluation", cached)
                metrics = read_json(cached / "metrics.json")
            else:
                classifier = self.stages["classifier"]
                classifier.load(self.context, stage.path)
                scores = classifier.predict(self.context, test)
                metrics = evaluate_scores(scores, test, self.dataset.classnames)
                metrics.update(self._run_summary())
                write_evaluation(cached, metrics, scores, test, self.dataset)
            write_evaluation(self.out, metrics, None, test, self.dataset, predictions_from=cached)
            return metrics

        return self._stage("evaluate", body)

    def _run_summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset.name, "method": self.config.method, "classifier": self.choices["classifier"],
            "train_on": self.train_on, "shots": self.config.shots, "seed": self.config.seed,
            "images_per_class": self.config.images_per_class if self._keys["synthetic"] else 0,
            "stages": self.choices, "keys": self._keys, "config_digest": digest(self.config.identity()),
            "search": (self.stage_dir("classifier").info() or {}).get("search"),
        }

    def run_all(self, stop_after: str | None = None) -> dict[str, Any] | None:
        """Every stage, or those up to ``stop_after`` (one of ``STAGES``). With several
        processes, all share adapter training and generation; the main process then trains
        and evaluates the classifier and returns the metrics, the others return None."""
        if stop_after is not None and stop_after not in STAGES:
            raise ConfigError(f"--stop-after must be one of {', '.join(STAGES)}, not {stop_after!r}")
        lock = RunLock(_mkdir(self.out)) if self.process.is_main else contextlib.nullcontext()
        with lock, contextlib.closing(self):
            for stage in STAGES:
                if stage in ("train", "evaluate") and not self.process.is_main:
                    return None
                result = getattr(self, stage)()
                if stage == stop_after:
                    return None
            return result


def sample_images(synthetic: SyntheticSet, dataset: Dataset, per_class: int = 4) -> dict[str, list]:
    """The first ``per_class`` images of each class, as arrays, for the trackers."""
    import numpy as np

    from ddcore.data import load_rgb

    taken: dict[int, list] = {}
    for row in synthetic.items:
        images = taken.setdefault(int(row["label"]), [])
        if len(images) < per_class:
            images.append(np.asarray(load_rgb(synthetic.root / row["file_name"])))
    return {f"samples/{dataset.classnames[label]}": images for label, images in sorted(taken.items())}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_run(out: Path, plugins: Plugins | None = None, reporter: Reporter = SILENT) -> Run:
    """Rebuild a run from the ``run.json`` in its folder (for ``dd adapt/generate/...``)."""
    path = out / RUN_FILE
    if not path.is_file():
        raise StageError(f"{out} is not a run folder (no {RUN_FILE}); start one with `dd run --out {out}`")
    config = RunConfig(**read_json(path)["config"])
    config.out = str(out)
    if (out / FEWSHOT_FILE).is_file():
        config.fewshot = str(out / FEWSHOT_FILE)
    return Run(config, plugins, reporter)
