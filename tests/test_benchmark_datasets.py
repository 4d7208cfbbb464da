"""The ten CoOp benchmarks (plugins/dd_plugins/benchmark_datasets.py), on miniature copies of
CoOp's DATASETS.md layouts: a few 4x4 images per class and split files written here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dd_plugins.benchmark_datasets import BENCHMARKS, GUIDE, load_benchmark
from PIL import Image

from ddcore.errors import DataError
from ddcore.plugins import Plugins

# Per split-file benchmark: its folder, image folder, split file, and per class the relative
# path pattern ({split}, {i}), the class name written in the split file, and the name expected.
SPLIT_LAYOUTS = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", [
        ("accordion/image_{split}{i}.jpg", "accordion", "accordion"),
        ("Faces/image_{split}{i}.jpg", "face", "face"),
    ]),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json", [
        ("banded/banded_{split}{i}.jpg", "banded", "banded"),
        ("zigzagged/zigzagged_{split}{i}.jpg", "zigzagged", "zigzagged"),
    ]),
    # CoOp's EuroSAT file carries the renamed classes; an old folder name is renamed the same way.
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json", [
        ("AnnualCrop/AnnualCrop_{split}{i}.jpg", "Annual Crop Land", "Annual Crop Land"),
        ("SeaLake/SeaLake_{split}{i}.jpg", "SeaLake", "Sea or Lake"),
    ]),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json", [
        ("Abyssinian_{split}{i}.jpg", "abyssinian", "abyssinian"),
        ("american_bulldog_{split}{i}.jpg", "american_bulldog", "american bulldog"),
    ]),
    # Paths relative to the data set folder; train and test images share file names.
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json", [
        ("cars_{split}/0000{i}.jpg", "2012 AM General Hummer SUV", "2012 AM General Hummer SUV"),
        ("cars_{split}/0001{i}.jpg", "2012 Acura RL Sedan", "2012 Acura RL Sedan"),
    ]),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json", [
        ("a/abbey/sun_{split}{i}.jpg", "abbey", "abbey"),
        ("a/apartment_building/outdoor/sun_{split}{i}.jpg", "outdoor apartment_building", "outdoor apartment building"),
    ]),
    "food101": ("food-101", "images", "split_zhou_Food101.json", [
        ("apple_pie/1{split}{i}.jpg", "apple_pie", "apple pie"),
        ("baby_back_ribs/2{split}{i}.jpg", "baby_back_ribs", "baby back ribs"),
    ]),
    "flowers102": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", [
        ("image_0{split}{i}.jpg", "pink primrose", "pink primrose"),
        ("image_1{split}{i}.jpg", "hard-leaved pocket orchid", "hard-leaved pocket orchid"),
    ]),
}
COUNTS = {"train": 3, "val": 1, "test": 2}  # per class; distinct, so a swapped split shows
CAR_SPLIT_DIR = {"train": "train", "val": "train", "test": "test"}  # cars' val comes from cars_train

AIRCRAFT_VARIANTS = ["F-16A/B", "707-320", "A300B4"]  # label order is the file's, not sorted
IMAGENET = {"n01443537": "goldfish", "n01440764": "tench"}  # labels follow sorted folder names

DOMAINS = {"imagenet": "", "caltech101": "", "dtd": "texture ", "eurosat": "satellite ",
           "fgvc_aircraft": "aircraft ", "oxford_pets": "pet ", "stanford_cars": "car ", "sun397": "scene ",
           "food101": "food ", "flowers102": "flower "}
FIRST_TEMPLATES = {"imagenet": "a photo of a {}.", "caltech101": "a photo of a {}.", "dtd": "{} texture.",
                   "eurosat": "a centered satellite photo of {}.",
                   "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
                   "oxford_pets": "a photo of a {}, a type of pet.", "stanford_cars": "a photo of a {}.",
                   "sun397": "a photo of a {}.", "food101": "a photo of {}, a type of food.",
                   "flowers102": "a photo of a {}, a type of flower."}
FOLDERS = {name: layout[0] for name, layout in SPLIT_LAYOUTS.items()} | {
    "imagenet": "imagenet", "fgvc_aircraft": "fgvc_aircraft"}


def write_image(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)


def write_split_dataset(data: Path, name: str) -> dict[str, list]:
    """One split-file benchmark under ``data``; returns the rows written to its split file."""
    folder, images, split_name, classes = SPLIT_LAYOUTS[name]
    rows: dict[str, list] = {}
    for split, count in COUNTS.items():
        tag = CAR_SPLIT_DIR[split] if name == "stanford_cars" else split
        rows[split] = []
        for label, (pattern, written, _) in enumerate(classes):
            for i in range(count):
                # cars' val rows are other cars_train files than its train rows
                rel = pattern.format(split=tag, i=i + (5 if split == "val" else 0))
                write_image(data / folder / images / rel, value=10 * label + i)
                rows[split].append([rel, label, written])
    (data / folder / split_name).write_text(json.dumps(rows))
    return rows


def write_imagenet(data: Path) -> None:
    folder = data / "imagenet"
    for split, count in (("train", 3), ("val", 2)):
        for wnid in IMAGENET:
            for i in range(count):
                write_image(folder / "images" / split / wnid / f"{wnid}_{split}{i}.JPEG")
    (folder / "images" / "train" / "n01440764" / "notes.txt").write_text("not an image")
    # classnames.txt lists every ImageNet class; only the folders present are classes here
    lines = [f"{w} {n}" for w, n in sorted(IMAGENET.items())] + ["n01484850 great white shark"]
    (folder / "classnames.txt").write_text("\n".join(lines) + "\n")


def write_aircraft(data: Path) -> dict[str, list[str]]:
    folder = data / "fgvc_aircraft"
    folder.mkdir(parents=True)
    (folder / "variants.txt").write_text("\n".join(AIRCRAFT_VARIANTS) + "\n")
    ids: dict[str, list[str]] = {}
    for s, (split, count) in enumerate(COUNTS.items()):
        lines = []
        for label, variant in enumerate(AIRCRAFT_VARIANTS):
            for i in range(count):
                image_id = f"{s}{label}{i:05d}"
                write_image(folder / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}")
        ids[split] = [line.split(" ")[0] for line in lines]
        (folder / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return ids


@pytest.fixture(scope="session")
def coop_data(tmp_path_factory) -> tuple[Path, dict[str, dict[str, list]]]:
    """CoOp's $DATA with all ten benchmarks in miniature, and the split rows written."""
    data = tmp_path_factory.mktemp("coop") / "DATA"
    rows = {name: write_split_dataset(data, name) for name in SPLIT_LAYOUTS}
    write_imagenet(data)
    rows["fgvc_aircraft"] = write_aircraft(data)
    return data, rows


def copy_of(coop_data, tmp_path: Path, name: str) -> Path:
    """A private $DATA holding only benchmark ``name`` (for tests that break it)."""
    data, _ = coop_data
    shutil.copytree(data / FOLDERS[name], tmp_path / "DATA" / FOLDERS[name])
    return tmp_path / "DATA"


def one_line_error(name: str, data, split=None) -> str:
    with pytest.raises(DataError) as info:
        load_benchmark(name, data, split)
    message = str(info.value)
    assert message.strip() and "\n" not in message and "\r" not in message, message
    return message


def keys(samples) -> list[tuple[Path, int]]:
    return [(s.path, s.label) for s in samples]


# ---------------------------------------------------------------------------------------------
# loading


def test_all_ten_are_registered_and_load_through_the_plugin_registry(coop_data):
    data, _ = coop_data
    plugins = Plugins()
    assert set(BENCHMARKS) == set(DOMAINS) <= set(plugins.names("dataset"))
    dataset = plugins.create("dataset", "dtd").load(data, None)
    assert dataset.name == "dtd" and dataset.classnames == ["banded", "zigzagged"]


@pytest.mark.parametrize("name, expected", [("eurosat", ["AnnualCrop", "SeaLake"]),
                                            ("food101", ["apple_pie", "baby_back_ribs"]),
                                            ("dtd", ["banded", "zigzagged"])])
def test_folder_class_names_are_the_official_codes(coop_data, name, expected):
    """``--set dataset.class_names=folder``: the names as the files spell them (the official
    DataDream code's prompts), CoOp's renames undone; the default stays CoOp's."""
    from ddcore.config import parse_set, resolve
    from ddcore.pipeline import load_dataset

    data, _ = coop_data
    config = resolve({}, {"dataset": name, "data": str(data), "options": parse_set(["dataset.class_names=folder"])})
    dataset = load_dataset(config, Plugins())
    assert dataset.classnames == expected
    assert [s.classname for s in dataset.test] == [expected[s.label] for s in dataset.test]
    assert load_benchmark(name, data).classnames != expected or name == "dtd"
    with pytest.raises(DataError, match="class_names must be one of coop, folder"):
        Plugins().create("dataset", name, {"class_names": "raw"}).load(data, None)


@pytest.mark.parametrize("name", sorted(SPLIT_LAYOUTS))
@pytest.mark.parametrize("own_folder", [False, True], ids=["DATA", "own-folder"])
def test_split_file_benchmarks(coop_data, name, own_folder):
    data, all_rows = coop_data
    folder, images, _, classes = SPLIT_LAYOUTS[name]
    dataset = load_benchmark(name, data / folder if own_folder else data)
    rows = all_rows[name]

    assert dataset.name == name
    assert dataset.classnames == [expected for _, _, expected in classes]
    assert dataset.domain == DOMAINS[name]
    assert dataset.templates == [FIRST_TEMPLATES[name]]
    assert dataset.root == data / folder / images
    assert len(dataset.class_dirs) == 2 and len(set(dataset.class_dirs)) == 2
    for split in ("train", "val", "test"):
        samples = getattr(dataset, split)
        assert len(samples) == 2 * COUNTS[split]
        # exactly the split file's own rows, in its order, with the shown class names
        assert keys(samples) == [(data / folder / images / rel, label) for rel, label, _ in rows[split]]
        assert all(s.classname == dataset.classnames[s.label] for s in samples)
        assert all(s.path.is_file() for s in samples)
    assert [s.label for s in dataset.test] == [0, 0, 1, 1]
    assert not {s.path for s in dataset.test} & {s.path for s in dataset.train + dataset.val}


@pytest.mark.parametrize("name", ["dtd", "flowers102", "eurosat"])
def test_test_set_is_the_split_files_test_entries_not_train(coop_data, name):
    """The public DataDream code built these three "test" sets from the train split."""
    data, all_rows = coop_data
    folder, images, _, _ = SPLIT_LAYOUTS[name]
    dataset = load_benchmark(name, data)
    root = data / folder / images
    test_rows = {(root / rel, label) for rel, label, _ in all_rows[name]["test"]}
    train_rows = {(root / rel, label) for rel, label, _ in all_rows[name]["train"]}
    assert set(keys(dataset.test)) == test_rows
    assert len(dataset.test) == len(test_rows) == 4
    assert not set(keys(dataset.test)) & train_rows
    assert set(keys(dataset.train)) == train_rows


def test_imagenet_uses_val_as_test_and_classnames_txt(coop_data):
    data, _ = coop_data
    for root in (data, data / "imagenet"):
        dataset = load_benchmark("imagenet", root)
        images = data / "imagenet" / "images"
        assert dataset.name == "imagenet" and dataset.root == images
        assert dataset.classnames == ["tench", "goldfish"]  # n01440764 < n01443537
        assert dataset.domain == ""
        assert len(dataset.train) == 6 and len(dataset.test) == 4 and dataset.val == []
        assert all(s.path.parent.parent == images / "train" for s in dataset.train)  # notes.txt skipped
        assert all(s.path.parent.parent == images / "val" for s in dataset.test)
        assert [s.label for s in dataset.test] == [0, 0, 1, 1]
        assert dataset.test[0].path == images / "val" / "n01440764" / "n01440764_val0.JPEG"
        assert dataset.test[0].classname == "tench"
    templates = dataset.templates
    assert templates[0] == "a photo of a {}." and len(templates) == 80 == len(set(templates))
    assert "a bad photo of a {}." in templates and all(t.count("{}") == 1 for t in templates)


def test_fgvc_aircraft_reads_variant_files(coop_data):
    data, all_rows = coop_data
    for root in (data, data / "fgvc_aircraft"):
        dataset = load_benchmark("fgvc_aircraft", root)
        images = data / "fgvc_aircraft" / "images"
        assert dataset.name == "fgvc_aircraft" and dataset.root == images
        assert dataset.classnames == AIRCRAFT_VARIANTS
        assert dataset.class_dirs[0] == "F-16A_B"
        assert (dataset.domain, dataset.templates) == ("aircraft ", ["a photo of a {}, a type of aircraft."])
        for split, count in COUNTS.items():
            samples = getattr(dataset, split)
            assert len(samples) == 3 * count
            assert [s.path for s in samples] == [images / f"{i}.jpg" for i in all_rows["fgvc_aircraft"][split]]
            assert [s.label for s in samples] == [label for label in range(3) for _ in range(count)]
        assert not {s.path for s in dataset.test} & {s.path for s in dataset.train}


def test_split_option_replaces_the_coop_split_file(coop_data, tmp_path):
    data, all_rows = coop_data
    rows = {k: v[:1] + v[-1:] for k, v in all_rows["dtd"].items()}
    own = tmp_path / "my_split.json"
    own.write_text(json.dumps(rows))
    dataset = load_benchmark("dtd", data, own)
    assert len(dataset.train) == len(dataset.test) == 2
    assert "leave --split out" in one_line_error("imagenet", data, own)


# ---------------------------------------------------------------------------------------------
# errors: one line, naming what is missing and where to get it


def test_missing_root(tmp_path):
    message = one_line_error("dtd", tmp_path / "nowhere")
    assert "nowhere does not exist" in message
    assert f"{GUIDE}#dtd" in message and "https://www.robots.ox.ac.uk/~vgg/data/dtd/" in message
    assert "--data" in one_line_error("eurosat", None)


def test_data_folder_without_the_dataset(coop_data, tmp_path):
    data = copy_of(coop_data, tmp_path, "dtd")
    message = one_line_error("food101", data)
    assert "no food-101/ folder in" in message and f"{GUIDE}#food101" in message


@pytest.mark.parametrize("name", sorted(SPLIT_LAYOUTS))
def test_missing_split_file(coop_data, tmp_path, name):
    data = copy_of(coop_data, tmp_path, name)
    folder, _, split_name, _ = SPLIT_LAYOUTS[name]
    (data / folder / split_name).unlink()
    for root in (data, data / folder):
        message = one_line_error(name, root)
        assert split_name in message and "is missing" in message
        assert f"{GUIDE}#{BENCHMARKS[name].anchor}" in message


def test_missing_image_folder(coop_data, tmp_path):
    data = copy_of(coop_data, tmp_path, "eurosat")
    shutil.rmtree(data / "eurosat" / "2750")
    message = one_line_error("eurosat", data)
    assert "2750 is missing" in message and "https://github.com/phelber/EuroSAT" in message
    assert f"{GUIDE}#eurosat" in message


def test_missing_imagenet_files(coop_data, tmp_path):
    data = copy_of(coop_data, tmp_path, "imagenet")
    (data / "imagenet" / "classnames.txt").unlink()
    message = one_line_error("imagenet", data)
    assert "classnames.txt is missing" in message and f"{GUIDE}#imagenet" in message
    shutil.rmtree(data / "imagenet" / "images" / "val")
    message = one_line_error("imagenet", data)
    assert "val is missing" in message and "https://image-net.org" in message


def test_missing_aircraft_files(coop_data, tmp_path):
    data = copy_of(coop_data, tmp_path, "fgvc_aircraft")
    next((data / "fgvc_aircraft" / "images").glob("2*.jpg")).unlink()
    message = one_line_error("fgvc_aircraft", data)
    assert "1 image(s)" in message and "are missing" in message
    (data / "fgvc_aircraft" / "variants.txt").unlink()
    message = one_line_error("fgvc_aircraft", data)
    assert "variants.txt is missing" in message and "fgvc-aircraft" in message


def test_missing_images_are_reported_by_the_split_reader(coop_data, tmp_path):
    data = copy_of(coop_data, tmp_path, "flowers102")
    next((data / "oxford_flowers" / "jpg").glob("image_0test*.jpg")).unlink()
    message = one_line_error("flowers102", data)
    assert "1 image(s) named in" in message and "split_zhou_OxfordFlowers.json" in message
