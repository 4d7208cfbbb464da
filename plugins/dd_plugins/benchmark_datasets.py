"""The ten few-shot benchmarks of the paper, read from a local copy laid out as in CoOp's guide.

``--dataset NAME --data ROOT`` where ROOT is CoOp's ``$DATA`` folder (holding ``dtd/``,
``oxford_pets/``, ...) or the data set's own folder. Nothing is downloaded; a missing folder
or file is a one-line ``DataError`` saying where to get it
(https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md).

=============  ==================  ===================================================
NAME           folder under $DATA  splits
=============  ==================  ===================================================
imagenet       imagenet/           images/train = train, images/val = test (no val);
                                   class names from classnames.txt
caltech101     caltech-101/        split_zhou_Caltech101.json, 101_ObjectCategories/
dtd            dtd/                split_zhou_DescribableTextures.json, images/
eurosat        eurosat/            split_zhou_EuroSAT.json, 2750/
fgvc_aircraft  fgvc_aircraft/      images_variant_{train,val,test}.txt, variants.txt,
                                   images/
oxford_pets    oxford_pets/        split_zhou_OxfordPets.json, images/
stanford_cars  stanford_cars/      split_zhou_StanfordCars.json (paths relative to the
                                   folder: cars_train/, cars_test/)
sun397         sun397/             split_zhou_SUN397.json, SUN397/
food101        food-101/           split_zhou_Food101.json, images/
flowers102     oxford_flowers/     split_zhou_OxfordFlowers.json, jpg/
=============  ==================  ===================================================

Train, val and test are the split file's own ``train``/``val``/``test`` lists: the test set
is the real held-out one (the public DataDream code built the DTD, Flowers102 and EuroSAT
"test" sets from the train split; that must not happen here). ``--split FILE`` replaces the
CoOp split file of a data set that has one. Class names have ``_`` shown as spaces (as CoOp's
zero-shot prompts do); ``domain`` and the first template are CoOp's/DataDream's per data set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ddcore.api import (DataError, Dataset, DatasetSource, Sample, hookimpl, is_image_file, load_split_file, option,
                        unique_dirnames)

GUIDE = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"

# CoOp's datasets/eurosat.py NEW_CNAMES: the EuroSAT folder names as CoOp names the classes
# (its split file was written with these names; a file with the folder names is renamed).
EUROSAT_NAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@dataclass(frozen=True)
class Benchmark:
    """Where one benchmark lives inside its folder, and its prompt facts."""

    name: str  # --dataset NAME
    title: str
    folder: str  # CoOp's folder name under $DATA
    images: str  # folder the split's paths are relative to ("" = the data set folder)
    split: str | None  # CoOp split file; None: read by a reader of its own (imagenet, aircraft)
    domain: str  # the word before "photo" in DataDream's prompts
    template: str  # CoOp's zero-shot template (trainers/zsclip.py CUSTOM_TEMPLATES)
    anchor: str  # section of CoOp's DATASETS.md
    url: str  # official download page
    needs: tuple[str, ...] = ()  # further paths that must exist (besides images and split)
    coop_files: tuple[str, ...] = ()  # files only CoOp's guide provides (besides the split)
    rename: dict[str, str] = field(default_factory=dict)


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("imagenet", "ImageNet", "imagenet", "images", None, "", "a photo of a {}.", "imagenet",
                  "https://image-net.org/download.php", needs=("images/train", "images/val", "classnames.txt"),
                  coop_files=("classnames.txt",)),
        Benchmark("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                  "", "a photo of a {}.", "caltech101", "https://data.caltech.edu/records/mzrjq-6wc02"),
        Benchmark("dtd", "DTD", "dtd", "images", "split_zhou_DescribableTextures.json", "texture ",
                  "{} texture.", "dtd", "https://www.robots.ox.ac.uk/~vgg/data/dtd/"),
        Benchmark("eurosat", "EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json", "satellite ",
                  "a centered satellite photo of {}.", "eurosat", "https://github.com/phelber/EuroSAT",
                  rename=EUROSAT_NAMES),
        Benchmark("fgvc_aircraft", "FGVC Aircraft", "fgvc_aircraft", "images", None, "aircraft ",
                  "a photo of a {}, a type of aircraft.", "fgvcaircraft",
                  "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
                  needs=("variants.txt", *(f"images_variant_{s}.txt" for s in ("train", "val", "test")))),
        Benchmark("oxford_pets", "Oxford Pets", "oxford_pets", "images", "split_zhou_OxfordPets.json", "pet ",
                  "a photo of a {}, a type of pet.", "oxfordpets", "https://www.robots.ox.ac.uk/~vgg/data/pets/"),
        Benchmark("stanford_cars", "Stanford Cars", "stanford_cars", "", "split_zhou_StanfordCars.json", "car ",
                  "a photo of a {}.", "stanfordcars", "https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
                  needs=("cars_train", "cars_test")),
        Benchmark("sun397", "SUN397", "sun397", "SUN397", "split_zhou_SUN397.json", "scene ", "a photo of a {}.",
                  "sun397", "https://vision.princeton.edu/projects/2010/SUN/"),
        Benchmark("food101", "Food101", "food-101", "images", "split_zhou_Food101.json", "food ",
                  "a photo of {}, a type of food.", "food101",
                  "https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/"),
        Benchmark("flowers102", "Flowers102", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", "flower ",
                  "a photo of a {}, a type of flower.", "flowers102",
                  "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"),
    )
}


CLASS_NAMES = ("coop", "folder")


def load_benchmark(name: str, data: Path | None, split: Path | None = None, class_names: str = "coop") -> Dataset:
    """Load benchmark ``name`` from ``data`` (CoOp's ``$DATA`` or the data set's own folder).
    ``class_names``: ``coop`` (CoOp's renames, ``_`` shown as spaces) or ``folder`` (the names as
    the folders and split files spell them, as the official DataDream code prompts with).

    Raises:
        DataError: a folder or file is missing (naming where to get it) or malformed.
    """
    bench = BENCHMARKS[name]
    folder = find_folder(bench, data)
    if split is not None and bench.split is None:
        raise DataError(f"--dataset {name} has no split file to replace; leave --split out")
    required = [bench.images, *bench.needs]
    if bench.split and split is None:
        required.append(bench.split)
    for rel in filter(None, required):
        if not (folder / rel).exists():
            raise DataError(f"{bench.title}: {folder / rel} is missing; {where_to_get(bench, rel)}")
    images = folder / bench.images
    if bench.name == "imagenet":
        dataset = read_imagenet(folder, images)
    elif bench.name == "fgvc_aircraft":
        dataset = read_aircraft(folder, images)
    else:
        split_file = Path(split).expanduser() if split is not None else folder / bench.split
        dataset = load_split_file(images, split_file, name=name)
    return finish(bench, dataset, class_names)


def find_folder(bench: Benchmark, data: Path | None) -> Path:
    """The data set's folder: ``data/<folder>``, or ``data`` itself when it looks like it."""
    get = f"download {bench.title} from {bench.url} and lay it out as in {GUIDE}#{bench.anchor}"
    if data is None:
        raise DataError(f"--dataset {bench.name} needs --data DATA, the folder holding {bench.folder}/; {get}")
    data = Path(data).expanduser()
    if not data.is_dir():
        raise DataError(f"data folder {data} does not exist; {get}")
    if (data / bench.folder).is_dir():
        return data / bench.folder
    markers = (bench.images, bench.split, *bench.needs)
    if data.name == bench.folder or any(m and (data / m).exists() for m in markers):
        return data
    raise DataError(f"no {bench.folder}/ folder in {data}; {get}")


def where_to_get(bench: Benchmark, rel: str) -> str:
    """The fix for a missing path: CoOp's guide for its own files, else the official page."""
    if rel in (bench.split, *bench.coop_files):
        return f"download it as {GUIDE}#{bench.anchor} says"
    return f"download {bench.title} from {bench.url} and lay it out as in {GUIDE}#{bench.anchor}"


def read_imagenet(folder: Path, images: Path) -> Dataset:
    """CoOp's ImageNet: labels are the sorted ``images/train`` class folders, names from
    ``classnames.txt`` (``<wnid> <name>`` lines), and ``images/val`` is the test set."""
    names = {}
    for line in (folder / "classnames.txt").read_text(encoding="utf-8").splitlines():
        wnid, _, classname = line.strip().partition(" ")
        if wnid:
            names[wnid] = classname.strip()
    wnids = _subfolders(images / "train")
    if not wnids:
        raise DataError(f"no class folders (n01440764, ...) in {images / 'train'}; extract the ImageNet train set there")
    if unknown := [w for w in wnids if w not in names]:
        raise DataError(f"class folder(s) {', '.join(unknown[:3])} of {images / 'train'} are not in "
                        f"{folder / 'classnames.txt'}; use CoOp's classnames.txt ({GUIDE}#imagenet)")
    if _subfolders(images / "val") != wnids:
        raise DataError(f"{images / 'val'} does not have the same class folders as {images / 'train'}; "
                        "sort the validation images into one folder per class (n01440764/...)")
    classnames = [names[w] for w in wnids]

    def samples(split: str) -> list[Sample]:
        return [Sample(images / split / wnid / f, label, classnames[label])
                for label, wnid in enumerate(wnids) for f in _image_names(images / split / wnid)]

    return Dataset(name="imagenet", classnames=classnames, train=samples("train"), test=samples("val"),
                   root=images)


def read_aircraft(folder: Path, images: Path) -> Dataset:
    """CoOp's FGVC Aircraft: labels are the line order of ``variants.txt``; each
    ``images_variant_<split>.txt`` line is ``<image id> <variant>`` for ``images/<id>.jpg``."""
    classnames = [v.strip() for v in (folder / "variants.txt").read_text(encoding="utf-8").splitlines() if v.strip()]
    label_of = {c: i for i, c in enumerate(classnames)}
    splits = {}
    for split in ("train", "val", "test"):
        listing = folder / f"images_variant_{split}.txt"
        rows = []
        for line in listing.read_text(encoding="utf-8").splitlines():
            image_id, _, variant = line.strip().partition(" ")
            if not image_id:
                continue
            if variant not in label_of:
                raise DataError(f"variant '{variant}' in {listing} is not in {folder / 'variants.txt'}; "
                                "use the files of one fgvc-aircraft-2013b archive")
            rows.append(Sample(images / f"{image_id}.jpg", label_of[variant], variant))
        splits[split] = rows
    missing = [s.path.name for rows in splits.values() for s in rows if not s.path.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) listed in {folder} are missing under {images} "
                        f"(first: {', '.join(missing[:3])}); check --data points at the dataset root")
    return Dataset(name="fgvc_aircraft", classnames=classnames, root=images, **splits)


def finish(bench: Benchmark, dataset: Dataset, class_names: str = "coop") -> Dataset:
    """Name, domain, templates; class names with CoOp's renames and ``_`` shown as spaces
    (``class_names="coop"``), or as the files spell them (``"folder"``)."""
    if class_names not in CLASS_NAMES:
        raise DataError(f"dataset.class_names must be one of {', '.join(CLASS_NAMES)}, not {class_names!r}")
    if class_names == "folder":
        # CoOp's split files already hold EuroSAT's folder names; undo a renamed file's names.
        folder_names = {v: k for k, v in bench.rename.items()}
        classnames = [folder_names.get(c, c) for c in dataset.classnames]
    else:
        classnames = [bench.rename.get(c, c).replace("_", " ") for c in dataset.classnames]

    def relabel(samples: list[Sample]) -> list[Sample]:
        return [Sample(s.path, s.label, classnames[s.label]) for s in samples]

    return Dataset(
        name=bench.name,
        classnames=classnames,
        train=relabel(dataset.train),
        test=relabel(dataset.test),
        val=relabel(dataset.val),
        root=dataset.root,
        class_dirs=unique_dirnames(classnames),
        domain=bench.domain,
        templates=templates(bench),
    )


def templates(bench: Benchmark) -> list[str]:
    """CoOp's template first; for ImageNet then CLIP's 80 ImageNet templates (from open_clip)."""
    if bench.name != "imagenet":
        return [bench.template]
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    extra = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    return [bench.template, *(t for t in extra if t != bench.template)]


def _subfolders(path: Path) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _image_names(path: Path) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_file() and is_image_file(Path(e.name)))


class BenchmarkSource(DatasetSource):
    """Base of the ten benchmark sources (``bench`` is set per subclass)."""

    bench: Benchmark

    @dataclass
    class Options:
        class_names: str = option("coop", "coop: CoOp's class names ('Annual Crop Land', 'apple pie'), which every "
                                          "method here shares; folder: as the folders and split files spell them "
                                          "('AnnualCrop', 'apple_pie'), the names the official DataDream code "
                                          "prompts with (its zero-shot row)")

    def load(self, data, split):
        return load_benchmark(self.bench.name, data, split, self.options.class_names)


def _source(bench: Benchmark) -> type[DatasetSource]:
    """A ``DatasetSource`` class for one benchmark."""
    doc = f"{bench.title} from --data DATA laid out as in CoOp's DATASETS.md ({bench.folder}/)."
    return type(f"{bench.title.replace(' ', '')}Source", (BenchmarkSource,), {"bench": bench, "__doc__": doc})


@hookimpl
def register_datasets(register):
    for bench in BENCHMARKS.values():
        register(bench.name, _source(bench))
