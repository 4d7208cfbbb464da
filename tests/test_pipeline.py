"""The pipeline in-process: generation planning and resume, stage reuse, lifecycle hooks."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddcore.errors import DDError, StageError
from ddcore.generation import GenerationJob, image_seed, load_synthetic_set
from ddcore.hookspecs import hookimpl
from ddcore.pipeline import Run
from ddcore.plugins import Plugins
from ddcore.progress import SILENT
from ddcore.records import Dataset, Prompt
from ddcore.stages import Filter, Generator
from ddcore.store import atomic_write_bytes

from conftest import RecordingReporter, config_for


class SeedColour(Generator):
    """A real, cheap generator: a flat colour drawn from the item's seed."""

    def __init__(self, options=None, fail_after: int | None = None):
        super().__init__(options)
        self.rendered: list[tuple[int, int]] = []
        self.fail_after = fail_after
        self.setups = 0

    def setup(self, context, adapter_dir):
        self.setups += 1

    def generate(self, items):
        images = []
        for item in items:
            if self.fail_after is not None and len(self.rendered) >= self.fail_after:
                raise KeyboardInterrupt
            rng = np.random.default_rng(item.seed)
            images.append(Image.new("RGB", (8, 8), tuple(int(v) for v in rng.integers(0, 256, 3))))
            self.rendered.append((item.label, item.index))
        return images

    def metadata(self):
        return {"steps": 0}


class EvenOnly(Filter):
    """Keeps attempts with an even red channel: a deterministic, seed-driven decision."""

    def keep(self, images, items):
        return [image.getpixel((0, 0))[0] % 2 == 0 for image in images]


class KeepAll(Filter):
    passes_all = True

    def keep(self, images, items):
        return [True] * len(images)


def small_dataset(classes: int = 3) -> Dataset:
    names = [f"class {c}" for c in range(classes)]
    return Dataset(name="toy", classnames=names, train=[], test=[])


def job(root: Path, generator, filt=None, count=5, batch=2, dataset=None, **kw) -> GenerationJob:
    dataset = dataset or small_dataset()
    prompts = {c: [Prompt(f"a photo of a {n}")] for c, n in enumerate(dataset.classnames)}
    return GenerationJob(dataset=dataset, prompts=prompts, generator=generator, filter=filt or KeepAll(),
                         root=root, count=count, run_seed=7, batch_size=batch,
                         max_attempts_per_class=kw.pop("max_attempts", 40), reporter=kw.pop("reporter", SILENT),
                         setup=lambda: generator.setup(None, None), **kw)


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_image_seed_is_stable_and_distinct():
    assert image_seed(0, 1, 2) == image_seed(0, 1, 2)
    assert image_seed(0, 1, 2) == 171396932286456056  # pinned: seeds must never change between versions
    seeds = {image_seed(s, c, i) for s in range(2) for c in range(5) for i in range(50)}
    assert len(seeds) == 500 and all(0 <= s < 2**63 for s in seeds)


def test_the_set_does_not_depend_on_batch_size(tmp_path):
    results = []
    for batch in (1, 3, 8):
        gen = SeedColour()
        j = job(tmp_path / f"b{batch}", gen, batch=batch)
        j.run()
        j.finish({})
        results.append(folder_bytes(tmp_path / f"b{batch}"))
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == 15


def test_interrupted_generation_resumes_without_redoing_work(tmp_path):
    reference_root, tmp_path = tmp_path / "ref", tmp_path / "interrupted"
    gen = SeedColour(fail_after=7)
    with pytest.raises(KeyboardInterrupt):
        job(tmp_path, gen).run()
    files = list(tmp_path.rglob("*.png"))
    assert len(files) == 7  # every image rendered before the interrupt was kept
    assert not list(tmp_path.rglob(".*tmp*"))
    # Damage one finished file: it must be regenerated; the intact ones must not.
    broken = sorted(files)[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    again = SeedColour()
    j = job(tmp_path, again)
    j.run()
    synthetic = j.finish({"generator": "seed-colour"})
    intact = {p: p.stat().st_mtime_ns for p in files if p != broken}
    # Only blocks with a missing image are rendered again (whole, so batches stay the same),
    # and files that were intact are not rewritten.
    assert len(again.rendered) < 15
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in intact.items())
    assert len(synthetic.items) == 15
    fresh = SeedColour()
    job(reference_root, fresh).run()
    assert folder_bytes(tmp_path) == folder_bytes(reference_root)


def test_metadata_rows_describe_each_image(tmp_path):
    gen = SeedColour()
    j = job(tmp_path, gen, count=2)
    j.run()
    j.finish({"generator": "seed-colour", "steps": 0})
    rows = load_synthetic_set(tmp_path).items
    assert [r["file_name"] for r in rows[:2]] == ["class_0/00000.png", "class_0/00001.png"]
    first = rows[0]
    assert first == {"file_name": "class_0/00000.png", "label": 0, "class": "class 0", "index": 0,
                     "prompt": "a photo of a class 0", "seed": image_seed(7, 0, 0),
                     "generator": "seed-colour", "steps": 0}


class SeedColourWithParity(SeedColour):
    """Records, per image, a field derived from its seed (as a generator's perturbation is)."""

    def item_metadata(self, item):
        return {"parity": item.seed % 2}


def test_prompt_info_and_item_metadata_land_in_each_row(tmp_path):
    dataset = small_dataset(2)
    prompts = {c: [Prompt("plain", info={"attribute": "color", "feasible": c == 0}), Prompt("other")]
               for c in range(2)}
    j = GenerationJob(dataset=dataset, prompts=prompts, generator=SeedColourWithParity(), filter=KeepAll(),
                      root=tmp_path, count=2, run_seed=7, batch_size=2, max_attempts_per_class=2, reporter=SILENT,
                      setup=lambda: None)
    j.run()
    rows = j.finish({"generator": "seed-colour"}).items
    assert [(r["class"], r.get("attribute"), r.get("feasible")) for r in rows] == [
        ("class 0", "color", True), ("class 0", None, None), ("class 1", "color", False), ("class 1", None, None)]
    assert [r["parity"] for r in rows] == [image_seed(7, r["label"], r["index"]) % 2 for r in rows]


def test_a_plugin_field_may_not_overwrite_a_core_field(tmp_path):
    prompts = {c: [Prompt("p", info={"seed": 3})] for c in range(3)}
    j = GenerationJob(dataset=small_dataset(), prompts=prompts, generator=SeedColour(), filter=KeepAll(),
                      root=tmp_path, count=1, run_seed=7, batch_size=1, max_attempts_per_class=1, reporter=SILENT,
                      setup=lambda: None)
    j.run()
    with pytest.raises(StageError, match="prompt info may not set the core metadata field.* seed"):
        j.finish({})


def test_filtered_generation_keeps_the_first_passing_attempts_whatever_the_batch(tmp_path):
    sets = []
    for batch in (1, 4):
        gen = SeedColour()
        j = job(tmp_path / f"b{batch}", gen, filt=EvenOnly(), count=4, batch=batch)
        j.run()
        sets.append([r["file_name"] for r in j.finish({}).items])
    assert sets[0] == sets[1] and len(sets[0]) == 12
    counts = json.loads((tmp_path / "b4" / "counts.json").read_text())
    assert all(c["kept"] == 4 for c in counts.values())
    assert sum(c["dropped"] for c in counts.values()) > 0  # some odd attempts were dropped


def test_filter_bound_reached_is_recorded_not_a_crash(tmp_path):
    class DropAll(Filter):
        def keep(self, images, items):
            return [False] * len(images)

    j = job(tmp_path, SeedColour(), filt=DropAll(), count=3, max_attempts=5)
    j.run()
    synthetic = j.finish({})
    assert synthetic.items == []
    counts = json.loads((tmp_path / "counts.json").read_text())
    assert counts["class 0"] == {"kept": 0, "dropped": 5}


@pytest.mark.parametrize(("filt", "bar"), [(KeepAll, "generating images"), (EvenOnly, "generating and filtering")])
def test_models_load_before_the_bar_opens_and_not_at_all_when_nothing_is_left(tmp_path, filt, bar):
    """The bar's rate and eta count rendering, not the loading of the models."""
    reporter = RecordingReporter()
    gen = SeedColour()
    gen.setup = lambda context, adapter_dir: reporter.events.append("setup")
    job(tmp_path, gen, filt=filt(), count=4, reporter=reporter).run()
    assert reporter.events == ["setup", f"bar: {bar}"]
    [recorded] = reporter.bars
    assert recorded.total == recorded.done == 12 and recorded.closed
    job(tmp_path, gen, filt=filt(), count=4, reporter=reporter).run()  # a rerun with every image there
    assert reporter.events == ["setup", f"bar: {bar}"]


def test_a_filtered_class_whose_attempts_are_all_dropped_loads_nothing_on_a_rerun(tmp_path):
    class DropAll(Filter):
        def keep(self, images, items):
            return [False] * len(images)

    reporter = RecordingReporter()
    gen = SeedColour()
    job(tmp_path, gen, filt=DropAll(), count=3, max_attempts=5, reporter=reporter).run()
    assert gen.setups == 1 and reporter.bars[0].done == 0
    job(tmp_path, gen, filt=DropAll(), count=3, max_attempts=5, reporter=reporter).run()
    assert gen.setups == 1 and len(reporter.bars) == 1  # every attempt is known to be dropped


def test_shards_together_make_the_same_set(tmp_path):
    from ddcore.generation import Shard

    for rank in range(3):
        job(tmp_path / "sharded", SeedColour(), shard=Shard(rank, 3)).run()
    whole = job(tmp_path / "whole", SeedColour())
    whole.run()
    sharded = folder_bytes(tmp_path / "sharded")
    assert len(sharded) == 5 * small_dataset().num_classes  # every image, each made by one shard
    assert sharded == folder_bytes(tmp_path / "whole")


def test_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DDError, match="disk full while writing .*rerun the same command"):
        atomic_write_bytes(tmp_path / "a.png", b"data")
    assert list(tmp_path.iterdir()) == []


# -- whole runs in-process ---------------------------------------------------------------------


class Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def before_stage(self, stage, context):
        self.calls.append(("before", stage))

    @hookimpl
    def after_stage(self, stage, context, result):
        self.calls.append(("after", stage, type(result).__name__))

    @hookimpl
    def stage_failed(self, stage, context, error):
        self.calls.append(("failed", stage, type(error).__name__))


def test_a_run_calls_lifecycle_hooks_and_reuses_finished_stages(tiny_folder, tmp_path):
    plugins = Plugins()
    recorder = Recorder()
    plugins.register(recorder, name="recorder")
    run = Run(config_for(tiny_folder, tmp_path / "run", "--method", "sd-txt2img"), plugins)
    metrics = run.run_all()
    assert recorder.calls == [("before", "generate"), ("after", "generate", "SyntheticSet"),
                              ("before", "train"), ("after", "train", "PosixPath"),
                              ("before", "evaluate"), ("after", "evaluate", "dict")]
    assert set(metrics["per_class"]) == {"red square", "green circle", "blue stripes"}
    assert metrics["num_test"] == 12
    synthetic = run.synthetic()
    assert len(synthetic.items) == 6
    stamps = {p: p.stat().st_mtime_ns for p in synthetic.root.rglob("*.png")}
    # A second, identical run reuses everything: same keys, no file rewritten.
    again = Run(config_for(tiny_folder, tmp_path / "run", "--method", "sd-txt2img"), plugins)
    assert again.run_all()["top1"] == metrics["top1"]
    assert {p: p.stat().st_mtime_ns for p in synthetic.root.rglob("*.png")} == stamps
    # Asking for more images extends the same set rather than starting over.
    more = Run(config_for(tiny_folder, tmp_path / "run", "--method", "sd-txt2img", images_per_class=3), plugins)
    more.prepare()
    assert more.keys()["synthetic"] == run.keys()["synthetic"]
    assert more.keys()["classifier"] != run.keys()["classifier"]


def test_a_failing_stage_is_reported_to_hooks(tiny_folder, tmp_path):
    plugins = Plugins()
    recorder = Recorder()
    plugins.register(recorder, name="recorder")
    run = Run(config_for(tiny_folder, tmp_path / "run", "--method", "real-finetune"), plugins)
    run.prepare()
    with pytest.raises(StageError, match="not trained yet"):
        run.evaluate()
    assert recorder.calls[-1] == ("failed", "evaluate", "StageError")


def test_zero_shot_trains_nothing_and_real_finetune_makes_no_images(tiny_folder, tmp_path):
    zero = Run(config_for(tiny_folder, tmp_path / "zs", "--method", "zero-shot"))
    assert zero.choices["generator"] is None
    metrics = zero.run_all()
    info = json.loads((zero.stage_dir("classifier").path / "classifier.json").read_text())
    assert info["trained"] is False and info["prompts"]["blue stripes"] == ["a photo of a blue stripes"]
    assert not (zero.out / "synthetic").exists()
    # The metrics are the predictions': top-1 is the share of test images predicted right.
    predictions = [json.loads(line) for line in (zero.out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == metrics["num_test"] == len(zero.dataset.test)
    assert metrics["top1"] == pytest.approx(sum(p["true"] == p["predicted"] for p in predictions) / len(predictions))
    real = Run(config_for(tiny_folder, tmp_path / "rf", "--method", "real-finetune"))
    real.run_all()
    assert not (real.out / "synthetic").exists()
    assert (real.stage_dir("classifier").path / "trained.safetensors").is_file()
    assert json.loads((real.stage_dir("classifier").path / "stage.json").read_text())["real"] == 6


def test_stage_keys_follow_what_each_output_depends_on(tiny_folder, tmp_path):
    def keys(*extra, **values):
        run = Run(config_for(tiny_folder, tmp_path / "run", "--method", "datadream-dset", *extra, **values))
        run.prepare()
        return run.keys()

    base = keys()
    template = keys("--set", "prompt_builder.template=a {domain}picture of a {classname}")
    assert template["adapter"] != base["adapter"]  # adapters train on the prompts
    assert template["synthetic"] != base["synthetic"]
    rank = keys("--set", "adapter.rank=4")
    assert rank["adapter"] != base["adapter"] and rank["synthetic"] != base["synthetic"]
    classifier_only = keys("--set", "classifier.lr=0.5")
    assert classifier_only["adapter"] == base["adapter"] and classifier_only["synthetic"] == base["synthetic"]
    assert classifier_only["classifier"] != base["classifier"]
    other_shots = keys(seed=3)
    assert other_shots["data"] != base["data"] and other_shots["adapter"] != base["adapter"]
