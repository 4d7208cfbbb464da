"""Generating a synthetic set: planning, resuming, filtering and writing.

Image ``i`` of class ``c`` has its own seed derived from (run seed, c, i), so the set does not
depend on the batch size, the number of processes, or interruptions. Files are named by that
index (``<class_dir>/<index>.png``). With a filter, indices are attempts: the set is the first
``count`` attempts in index order that the filter keeps, which is again independent of how the
work was split. The core does all of this once; a generator only renders batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from ddcore.errors import DataError, StageError
from ddcore.progress import Reporter
from ddcore.seeds import image_seed
from ddcore.records import Dataset, GenItem, Prompt, Sample, SyntheticSet
from ddcore.stages import Filter, Generator
from ddcore.image_writer import ImageWriter
from ddcore.store import atomic_write_json, atomic_write_text

METADATA = "metadata.jsonl"
COUNTS = "counts.json"  # kept/dropped per class, written when a filter ran
# Fields of metadata.jsonl the core owns; plugins add their own beside them.
CORE_FIELDS = frozenset({"file_name", "label", "class", "index", "prompt", "seed", "source"})


def plan_item(dataset: Dataset, prompts: dict[int, list[Prompt]], run_seed: int, label: int, index: int) -> GenItem:
    options = prompts[label]
    return GenItem(
        label=label,
        classname=dataset.classnames[label],
        class_dir=dataset.class_dirs[label],
        index=index,
        seed=image_seed(run_seed, label, index),
        prompt=options[index % len(options)],
    )


def image_is_valid(path: Path) -> bool:
    """True when ``path`` exists and decodes (a truncated or corrupt file is not valid)."""
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


@dataclass
class Shard:
    """Which part of the work this process does. Without a filter, work is dealt out in
    blocks of ``batch_size`` consecutive images of a class; with one, whole classes are (a
    filter's attempt count is not known in advance)."""

    rank: int = 0
    world_size: int = 1

    def owns_class(self, label: int) -> bool:
        return label % self.world_size == self.rank

    def owns_block(self, number: int) -> bool:
        return number % self.world_size == self.rank


class GenerationJob:
    def __init__(
        self,
        *,
        dataset: Dataset,
        prompts: dict[int, list[Prompt]],
        generator: Generator,
        filter: Filter,
        root: Path,
        count: int,
        run_seed: int,
        batch_size: int,
        max_attempts_per_class: int,
        reporter: Reporter,
        setup: Callable[[], None],
        shard: Shard = Shard(),
        writers: int = 2,
    ) -> None:
        """``setup`` loads the generator's (and filter's) models; it is called once, and only
        when there is something to render or describe. ``writers`` threads encode and write
        the PNGs while the next batch renders (0: on the render thread)."""
        missing = [dataset.classnames[c] for c in range(dataset.num_classes) if not prompts.get(c)]
        if missing:
            raise StageError(f"the prompt builder made no prompt for class(es): {', '.join(missing[:5])}")
        self.dataset, self.prompts = dataset, prompts
        self.generator, self.filter = generator, filter
        self.root, self.count, self.run_seed = root, count, run_seed
        self.batch_size, self.reporter, self.shard = batch_size, reporter, shard
        self.max_attempts = count if filter.passes_all else max(count, max_attempts_per_class)
        self._setup = setup
        self.writers = writers
        self.ready = False

    # -- bookkeeping ------------------------------------------------------------------------

    def _path(self, item: GenItem) -> Path:
        return self.root / item.file_name

    def _dropped(self) -> set[tuple[int, int]]:
        dropped = set()
        for log in self.root.glob("dropped-*.jsonl"):
            for line in log.read_text().splitlines():
                try:
                    row = json.loads(line)
                    dropped.add((int(row["label"]), int(row["index"])))
                except (ValueError, KeyError):
                    continue  # a line cut short by an interruption: that attempt is redone
        return dropped

    def _record_dropped(self, items: list[GenItem]) -> None:
        log = self.root / f"dropped-{self.shard.rank}.jsonl"
        with open(log, "a") as fh:
            for item in items:
                fh.write(json.dumps({"label": item.label, "index": item.index}) + "\n")

    # -- running ----------------------------------------------------------------------------

    def pending_blocks(self) -> list[tuple[list[GenItem], list[bool]]]:
        """This shard's blocks with at least one image missing: (items, missing flags).

        A block is ``batch_size`` consecutive indices of one class and is always rendered
        whole, so every image is computed in the same batch whatever the number of
        processes and interruptions: the set is then the same byte for byte."""
        blocks = []
        per_class = -(-self.count // self.batch_size)
        for label in range(self.dataset.num_classes):
            for b in range(per_class):
                if not self.shard.owns_block(label * per_class + b):
                    continue
                indices = range(b * self.batch_size, min((b + 1) * self.batch_size, self.count))
                items = [plan_item(self.dataset, self.prompts, self.run_seed, label, i) for i in indices]
                missing = [not image_is_valid(self._path(item)) for item in items]
                if any(missing):
                    blocks.append((items, missing))
        return blocks

    def ensure_ready(self) -> None:
        if not self.ready:
            self._setup()
            self.ready = True

    def run(self) -> None:
        """Render what is missing."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.filter.passes_all:
            self._run_unfiltered()
        else:
            self._run_filtered()

    def _render(self, batch: list[GenItem]) -> list[Image.Image]:
        self.ensure_ready()
        images = self.generator.generate(batch)
        if len(images) != len(batch):
            raise StageError(f"generator returned {len(images)} images for a batch of {len(batch)}")
        return images

    def _run_unfiltered(self) -> None:
        blocks = self.pending_blocks()
        total = sum(sum(missing) for _, missing in blocks)
        if total == 0:
            return
        self.ensure_ready()  # models load before the bar opens: its rate and eta count rendering only
        # The writer closes first: the bar ends when the last image is on disk.
        with self.reporter.task("generating images", total) as advance, ImageWriter(self.writers) as writer:
            for items, missing in blocks:
                for item, image, needed in zip(items, self._render(items), missing):
                    if needed:  # images already on disk are kept as they are
                        writer.save(self._path(item), image)
                advance(sum(missing))

    def _work_left(self, labels: list[int], dropped: set[tuple[int, int]], is_valid: Callable[[GenItem], bool]) -> bool:
        """Whether a class of ``labels`` still has an attempt to render (the walk of
        :meth:`_run_filtered`, without rendering)."""
        for label in labels:
            kept = 0
            for index in range(self.max_attempts):
                if kept == self.count:
                    break
                if (label, index) in dropped:
                    continue
                if not is_valid(plan_item(self.dataset, self.prompts, self.run_seed, label, index)):
                    return True
                kept += 1
        return False

    def _run_filtered(self) -> None:
        dropped = self._dropped()
        labels = [c for c in range(self.dataset.num_classes) if self.shard.owns_class(c)]
        checked: dict[tuple[int, int], bool] = {}  # each file on disk is decoded once

        def is_valid(item: GenItem) -> bool:
            key = (item.label, item.index)
            if key not in checked:
                checked[key] = image_is_valid(self._path(item))
            return checked[key]

        if not self._work_left(labels, dropped, is_valid):
            return  # nothing to render: the models are not loaded, and there is no bar
        self.ensure_ready()  # models load before the bar opens: its rate and eta count rendering only
        with self.reporter.task("generating and filtering", self.count * len(labels)) as advance, \
                ImageWriter(self.writers) as writer:
            for label in labels:
                kept = 0
                index = 0
                while kept < self.count and index < self.max_attempts:
                    batch: list[GenItem] = []
                    # Walk attempts in order; known outcomes are counted, unknown ones batched.
                    while index < self.max_attempts and kept + len(batch) < self.count and len(batch) < self.batch_size:
                        item = plan_item(self.dataset, self.prompts, self.run_seed, label, index)
                        index += 1
                        if (label, item.index) in dropped:
                            continue
                        if is_valid(item):
                            kept += 1
                            advance(1)
                        else:
                            batch.append(item)
                    if not batch:
                        continue
                    images = self._render(batch)
                    decisions = self.filter.keep(images, batch)
                    rejected = []
                    for item, image, ok in zip(batch, images, decisions):
                        if ok:
                            writer.save(self._path(item), image)
                            kept += 1
                            advance(1)
                        else:
                            rejected.append(item)
                    self._record_dropped(rejected)

    # -- the finished set -------------------------------------------------------------------

    def finish(self, extra: dict[str, Any]) -> SyntheticSet:
        """Write ``metadata.jsonl`` and per-class counts (main process, after all shards)."""
        dropped = self._dropped()
        rows: list[dict[str, Any]] = []
        stats: dict[str, dict[str, int]] = {}
        for label in range(self.dataset.num_classes):
            kept: list[GenItem] = []
            attempts = 0
            for index in range(self.max_attempts):
                if len(kept) == self.count:
                    break
                item = plan_item(self.dataset, self.prompts, self.run_seed, label, index)
                if (label, index) in dropped:
                    attempts += 1
                    continue
                if not image_is_valid(self._path(item)):
                    if self.filter.passes_all:
                        raise StageError(f"image {self._path(item)} is missing; rerun to generate it")
                    break  # the filter's attempt bound was reached before this one
                attempts += 1
                kept.append(item)
            stats[self.dataset.classnames[label]] = {"kept": len(kept), "dropped": attempts - len(kept)}
            for item in kept:
                rows.append(self._row(item, extra))
        atomic_write_text(self.root / METADATA, "".join(json.dumps(r) + "\n" for r in rows))
        atomic_write_json(self.root / COUNTS, stats)
        return SyntheticSet(self.root, rows)

    def _row(self, item: GenItem, extra: dict[str, Any]) -> dict[str, Any]:
        """One line of ``metadata.jsonl``: the core's fields, the generator's fields for every
        image (``extra``), the prompt's ``info`` and the generator's fields for this image."""
        row = {
            "file_name": item.file_name,
            "label": item.label,
            "class": item.classname,
            "index": item.index,
            "prompt": item.prompt.text,
            "seed": item.seed,
            **extra,
        }
        if item.prompt.source is not None:
            row["source"] = str(item.prompt.source)
        for who, fields in (("prompt info", item.prompt.info), ("generator item_metadata", self.generator.item_metadata(item))):
            clash = sorted(set(fields) & CORE_FIELDS)
            if clash:
                raise StageError(f"{who} may not set the core metadata field(s) {', '.join(clash)}")
            row.update(fields)
        return row


def load_synthetic_set(root: Path) -> SyntheticSet:
    path = root / METADATA
    if not path.is_file():
        raise StageError(f"{root} has no {METADATA}; run `dd generate` first")
    return SyntheticSet(root, [json.loads(line) for line in path.read_text().splitlines() if line.strip()])


def short_classes(root: Path, wanted: int) -> list[str]:
    """Classes of the set in ``root`` for which the filter kept fewer than ``wanted`` images
    (from its ``counts.json``; a set made without a filter has none)."""
    counts = root / COUNTS
    if not counts.is_file():
        return []
    return [name for name, c in json.loads(counts.read_text()).items() if c["kept"] < wanted]


def load_synthetic_folder(root: Path, dataset: Dataset, per_class: int) -> tuple[list[Sample], str]:
    """Samples of a synthetic set made elsewhere (``--synthetic DIR``): a folder written by
    ``dd generate`` (with ``metadata.jsonl``) or one sub-folder of images per class, named as
    the data set's classes. At most ``per_class`` images per class, in file-name order.
    Returns the samples and a digest of the files, which keys the classifier trained on them."""
    from ddcore.data import is_image_file
    from ddcore.store import digest

    root = root.expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"--synthetic {root}: no such folder")
    by_name = {name: label for label, name in enumerate(dataset.classnames)}
    by_name.update({d: label for label, d in enumerate(dataset.class_dirs)})
    if (root / METADATA).is_file():
        rows = [json.loads(line) for line in (root / METADATA).read_text().splitlines() if line.strip()]
        found = [(row.get("class", ""), root / row["file_name"]) for row in rows]
        names = {name for name, _ in found}
    else:
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        found = [(d.name, p) for d in folders for p in sorted(d.iterdir()) if p.is_file() and is_image_file(p)]
        names = {d.name for d in folders}
    unknown = sorted(name for name in names if name not in by_name)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"--synthetic {root} has {len(unknown)} class(es) the data set lacks ({shown}); its class "
                        f"folders must be named as the data set's classes (e.g. {dataset.class_dirs[0]!r})")
    if not found:
        raise DataError(f"--synthetic {root} holds no images (expected one sub-folder of images per class)")
    samples, taken = [], {}
    for name, path in found:
        label = by_name[name]
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            samples.append(Sample(path, label, dataset.classnames[label]))
    key = digest([[str(s.path.relative_to(root)), s.label, s.path.stat().st_size] for s in samples])
    return samples, key
