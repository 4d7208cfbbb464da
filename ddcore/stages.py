"""The stage interfaces a plugin implements, and method presets.

Each stage is a class with a nested ``Options`` dataclass: its fields are the settings a user
can change with ``--set <kind>.<field>=VALUE`` (or a ``[adapter]``/``[generator]``/... table
in the TOML config). The core builds a stage as ``StageClass(options)`` and then calls the
methods below. Everything a stage needs about the run arrives in a ``RunContext`` (below):
the data set, the few shots, the global settings, the device.

Plugin authors import all of this from ``ddcore.api``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ddcore.config import RunConfig
from ddcore.errors import StageError
from ddcore.kinds import ALL_KINDS, METHOD_SETTINGS, STAGE_KINDS, TRAIN_ON
from ddcore.progress import SILENT, Reporter
from ddcore.records import Dataset, Prompt, Sample

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from ddcore.records import GenItem

__all__ = ["ALL_KINDS", "BASES", "METHOD_SETTINGS", "STAGE_KINDS", "TRAIN_ON", "Adapter", "Classifier",
           "DatasetSource", "Filter", "Generator", "Method", "PromptBuilder", "RunContext", "Setting", "Stage",
           "TrainingData"]


@dataclass(frozen=True)
class Setting:
    """One row of a method's protocol table (``docs/fidelity.md``, ``dd run --explain``).

    ``key`` names a resolved value: a run setting (``steps``), a stage option
    (``adapter.lr``) or a derived value a stage reports in ``describe`` (``adapter.group_steps``).
    ``ours`` is the value we resolve to: a constant, or a function of the case (an object with
    ``dataset``, ``shots`` and ``classes``) for values that depend on them (``ours_text`` then
    says it in words). A test resolves every method for several data sets and shot counts and
    checks each row, so the table cannot drift from the code."""

    key: str
    paper: str  # the paper's value, with its section
    code: str  # the official code's value, with its file
    ours: Any
    why: str = ""  # why ours differs from the paper or the code (empty: it does not)
    ours_text: str = ""

    def expected(self, case: Any) -> Any:
        return self.ours(case) if callable(self.ours) else self.ours

    def ours_display(self) -> str:
        return self.ours_text or str(self.ours)


class Stage:
    """Base of every stage: holds the validated options."""

    kind: ClassVar[str] = ""
    name: str = ""  # the name it was registered under (set when the core builds it)
    # The stage's settings against its paper and official code (docs/fidelity.md).
    protocol: ClassVar[tuple[Setting, ...]] = ()
    # Options naming a pretrained model besides ``model`` and ``*_model`` (`dd doctor` checks
    # whether their defaults are in the local cache).
    pretrained_options: ClassVar[tuple[str, ...]] = ()
    # The base-model families (ddcore/models/families.py: "sd", "sdxl", "sd3", "flux") the stage
    # works with; None: every family. A run refuses another family before any work.
    families: ClassVar[tuple[str, ...] | None] = None

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()

    def fingerprint(self, context: "RunContext") -> Any:
        """What the stage's output depends on beyond its options: e.g. the contents of a file
        or folder an option names (the option itself holds only the path). JSON-serialisable;
        part of the stage's key, so a change makes the stage run again instead of reusing a
        stale output. Called once the shots are known. The default, None, adds nothing."""
        return None

    def describe(self, context: "RunContext") -> dict[str, Any]:
        """Values the stage derives from its options and the run, worth showing beside them
        (``dd run --explain``, ``run.json``): e.g. the steps each adapter trains, the warm-up
        it gets. JSON-serialisable; called once the shots are known. The default: none."""
        return {}


class Adapter(Stage):
    """Fits weights to the few-shot set (DataDream LoRA, textual inversion, ...).

    ``trains = False`` marks an adapter with nothing to fit (``none``): the core then skips
    the stage and passes ``adapter_dir=None`` to the generator.
    """

    kind = "adapter"
    trains: ClassVar[bool] = True
    # The generators that can use what it trains (None: any that loads adapters into a diffusers
    # pipeline). A run pairing it with another fails at once, before any training.
    generators: ClassVar[tuple[str, ...] | None] = None

    def fit(self, context: "RunContext", out_dir: Path) -> None:
        """Train and write the weights into ``out_dir``.

        Resume from checkpoints you left in ``out_dir`` on an earlier, interrupted call: the
        core calls ``fit`` again on the same folder until it returns normally.
        """
        raise NotImplementedError

    def load_into(self, context: "RunContext", pipe: Any, adapter_dir: Path) -> None:
        """Make a diffusers pipeline use the trained weights (called once by generators)."""
        raise NotImplementedError(f"adapter '{self.name or type(self).__name__}' cannot be loaded into a pipeline")

    def select(self, pipe: Any, label: int) -> None:
        """Switch the pipeline to class ``label`` before a batch of that class (per-class
        adapters); the default does nothing."""

    def prepare_compile(self, pipe: Any) -> None:
        """Called once before a generator compiles the pipeline's denoiser (after
        ``load_into``). A per-class adapter loads its first weights here and swaps the later
        ones in place from then on, so switching classes never recompiles; the default does
        nothing."""


class PromptBuilder(Stage):
    """Turns class names (and optionally the real shots) into prompts."""

    kind = "prompt_builder"

    def build(self, context: "RunContext") -> dict[int, list["Prompt"]]:
        """Prompts per class label; image ``i`` of a class uses ``prompts[i % len(prompts)]``."""
        raise NotImplementedError


class Generator(Stage):
    """Makes images. The core plans the items (seeds, file names), resumes, writes files and
    metadata, and shards the work across processes; a generator only renders batches."""

    kind = "generator"
    # The adapters it works with (None: any, including none). A run pairing it with another
    # fails at once, before any training.
    adapters: ClassVar[tuple[str, ...] | None] = None

    def plan_prompts(self, context: "RunContext", prompts: dict[int, list["Prompt"]]) -> dict[int, list["Prompt"]]:
        """Adjust the prompt builder's prompts before images are planned; image ``i`` of class
        ``c`` gets ``prompts[c][i % len]``. An image-to-image generator ties each prompt to
        the real image it starts from (``Prompt.source``, recorded in the metadata). The
        default keeps them."""
        return prompts

    def setup(self, context: "RunContext", adapter_dir: Path | None) -> None:
        """Load models once, before the first batch."""

    def generate(self, items: list["GenItem"]) -> list["Image.Image"]:
        """Render one image per item. Items of a batch share one class. Image ``k`` must
        depend only on ``items[k]`` (its seed and prompt), never on the batch it is in."""
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        """Fields recorded for every image (steps, guidance, scheduler, resolution, ...)."""
        return {}

    def item_metadata(self, item: "GenItem") -> dict[str, Any]:
        """Fields recorded for image ``item`` alone (which embedding or source it came from,
        the perturbation drawn for it, ...). Called after ``setup``; it must give the same
        answer as when the image was rendered, so derive it from the item (its seed), not from
        state. The default records nothing."""
        return {}


class Filter(Stage):
    """Keeps or drops generated images."""

    kind = "filter"
    passes_all: ClassVar[bool] = False

    def setup(self, context: "RunContext") -> None:
        """Load models once."""

    def keep(self, images: list["Image.Image"], items: list["GenItem"]) -> list[bool]:
        raise NotImplementedError

    def max_attempts(self, count: int) -> int:
        """How many images a class may render to keep ``count``: the ``max_attempts_per_class``
        option when the Options declare one (the documented name), else ``count`` (no retries).
        Override for another rule."""
        return vars(self.options).get("max_attempts_per_class", count)


class Classifier(Stage):
    """Trains on real + synthetic images and predicts class scores."""

    kind = "classifier"

    def fit(self, context: "RunContext", data: "TrainingData", out_dir: Path) -> None:
        """Train (or, with no images at all, just prepare a zero-shot head) and save to
        ``out_dir``. Resume from your own checkpoints in ``out_dir`` if present."""
        raise NotImplementedError

    def load(self, context: "RunContext", out_dir: Path) -> None:
        """Load what ``fit`` saved, ready for ``predict``."""
        raise NotImplementedError

    def predict(self, context: "RunContext", samples: list["Sample"]) -> "np.ndarray":
        """Class scores, shape ``[len(samples), num_classes]`` (higher is more likely)."""
        raise NotImplementedError

    def export(self, context: "RunContext", out_dir: Path, dest: Path) -> Path:
        """Write the trained classifier to ``dest`` in its library's own format (``dd export``);
        called after ``load``. The default: it cannot be exported."""
        raise StageError(f"classifier '{self.name}' cannot be exported; its weights are in {out_dir}")

    def feature_model(self, config: RunConfig) -> str | None:
        """The ``load_clip`` spec of the image-feature space the set-quality metrics of ``dd
        compare`` use (``quality_features=classifier``); None: it has none."""
        return None


class DatasetSource(Stage):
    """Loads a data set (image folder, CoOp split, a named benchmark)."""

    kind = "dataset"

    def load(self, data: Path | None, split: Path | None) -> "Dataset":
        raise NotImplementedError


@dataclass
class TrainingData:
    """What a classifier trains on. ``real_weight`` is lambda in
    ``lambda * CE(real) + (1 - lambda) * CE(synthetic)``; both lists empty means zero-shot."""

    real: list["Sample"]
    synthetic: list["Sample"]
    real_weight: float = 0.8


# A Method's stage left to the kind's default (the plugin registered with ``default=True``).
UNSET = "<default>"


@dataclass(frozen=True)
class Method:
    """A named preset of stage choices. A stage it leaves ``UNSET`` is the kind's registered
    default (``register(..., default=True)``); ``generator=None`` means no synthetic data;
    ``train_on`` says which data the classifier sees (``"none"``: zero-shot).
    ``options`` are default stage options, keyed ``"<kind>.<option>"``; ``dataset_options``
    are more of them for one data set (``{"imagenet": {"adapter.epochs": 100}}``), over
    ``options``. ``settings`` are run settings of ``METHOD_SETTINGS`` (``{"steps": 20}``).
    ``protocol`` is the method's table of settings against its paper and official code."""

    adapter: str = UNSET
    prompt_builder: str = UNSET
    generator: str | None = UNSET
    filter: str = UNSET
    train_on: str = "real+synthetic"
    options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    protocol: tuple[Setting, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if self.train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {TRAIN_ON}, not {self.train_on!r}")
        unknown = sorted(set(self.settings) - set(METHOD_SETTINGS))
        if unknown:
            raise ValueError(f"method settings can be {', '.join(METHOD_SETTINGS)}, not {', '.join(unknown)}")

    def with_defaults(self, defaults: dict[str, str]) -> "Method":
        """The preset with every stage it leaves ``UNSET`` taken from ``defaults`` (kind ->
        name: what plugins registered with ``default=True``)."""
        chosen = {kind: defaults[kind] for kind in STAGE_KINDS
                  if kind in defaults and getattr(self, kind, None) == UNSET}
        return dataclasses.replace(self, **chosen) if chosen else self

    def preset_options(self, kind: str, dataset: str) -> dict[str, Any]:
        """The preset's options for stage ``kind`` on data set ``dataset``."""
        merged = {**self.options, **self.dataset_options.get(dataset, {})}
        return {k.split(".", 1)[1]: v for k, v in merged.items() if k.startswith(kind + ".")}


# Each stage kind's base class, by the kind it declares (``ddcore.kinds`` has the rest of the table).
BASES: dict[str, type[Stage]] = {cls.kind: cls for cls in (Adapter, PromptBuilder, Generator, Filter,
                                                            Classifier, DatasetSource)}


@dataclass
class RunContext:
    """What every stage may read about the run."""

    config: RunConfig
    dataset: Dataset
    shots: list[Sample]
    method: Method
    device: str
    out: Path
    reporter: Reporter = SILENT
    adapter: Adapter | None = None  # the adapter stage, for generators to load its weights
    prompts: dict[int, list[Prompt]] = field(default_factory=dict)  # the prompt builder's, per class
    rank: int = 0
    world_size: int = 1
    extras: dict[str, Any] = field(default_factory=dict)  # for plugins to share state

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shots_by_class(self) -> dict[int, list[Sample]]:
        grouped: dict[int, list[Sample]] = {c: [] for c in range(self.dataset.num_classes)}
        for shot in self.shots:
            grouped[shot.label].append(shot)
        return grouped
