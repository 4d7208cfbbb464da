"""Tests for ddcore.data: image decoding, folder and split-file data sets, few shots, digits."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddcore.data import (
    IMAGE_EXTENSIONS,
    ensure_digits,
    fewshot_digest,
    is_image_file,
    load_fewshot,
    load_image_folder,
    load_rgb,
    load_split_file,
    sample_fewshot,
    save_fewshot,
)
from ddcore.data.digits import default_root
from ddcore.errors import DataError
from ddcore.records import Dataset, Sample


# ---------------------------------------------------------------------------------------------
# helpers


def raises_data_error(func, *args, **kwargs) -> str:
    """Call ``func``; assert it raises a one-line DataError and return the message."""
    with pytest.raises(DataError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.strip(), "empty message"
    return message


def write_png(path: Path, value: int = 128, size: tuple[int, int] = (4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def make_folder(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """``layout[split][class] = number of images``; each image has a distinct grey value."""
    for split, classes in layout.items():
        for cls, count in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_png(root / split / cls / f"img{i:02d}.png", value=(i * 7) % 256)
    return root


def pixel(path: Path, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    image = load_rgb(path)
    assert image.mode == "RGB"
    return image.getpixel(xy)


# ---------------------------------------------------------------------------------------------
# images


def test_rgb_and_l(tmp_path: Path) -> None:
    Image.new("RGB", (2, 2), (10, 20, 30)).save(tmp_path / "rgb.png")
    Image.new("L", (2, 2), 100).save(tmp_path / "l.png")
    assert pixel(tmp_path / "rgb.png") == (10, 20, 30)
    assert pixel(tmp_path / "l.png") == (100, 100, 100)


def test_la_alpha_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (50, 0))  # fully transparent -> white
    image.putpixel((1, 0), (50, 255))  # opaque -> its grey
    image.save(tmp_path / "la.png")
    assert pixel(tmp_path / "la.png", (0, 0)) == (255, 255, 255)
    assert pixel(tmp_path / "la.png", (1, 0)) == (50, 50, 50)


def test_rgba_alpha_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (200, 0, 0, 0))
    image.putpixel((1, 0), (200, 0, 0, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))
    image.save(tmp_path / "rgba.png")
    assert pixel(tmp_path / "rgba.png", (0, 0)) == (255, 255, 255)
    assert pixel(tmp_path / "rgba.png", (1, 0)) == (200, 0, 0)
    half = pixel(tmp_path / "rgba.png", (2, 0))
    assert all(abs(c - 127) <= 1 for c in half), half


def _palette_image() -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 10, 20, 30, 200, 100, 50] + [0] * (256 * 3 - 9))
    image.putpixel((0, 0), 1)
    image.putpixel((1, 0), 2)
    return image


def test_palette_without_transparency(tmp_path: Path) -> None:
    _palette_image().save(tmp_path / "p.png")
    assert pixel(tmp_path / "p.png", (0, 0)) == (10, 20, 30)
    assert pixel(tmp_path / "p.png", (1, 0)) == (200, 100, 50)


@pytest.mark.parametrize("ext", [".png", ".gif"])
def test_palette_with_transparency(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"pt{ext}"
    _palette_image().save(path, transparency=1)
    assert pixel(path, (0, 0)) == (255, 255, 255)  # transparent index -> white
    assert pixel(path, (1, 0)) == (200, 100, 50)


def test_cmyk(tmp_path: Path) -> None:
    image = Image.new("CMYK", (3, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 0))
    image.putpixel((2, 0), (0, 0, 0, 255))
    image.save(tmp_path / "cmyk.tif")
    expected = [(255, 255, 255), (0, 255, 255), (0, 0, 0)]
    for x, want in enumerate(expected):
        got = pixel(tmp_path / "cmyk.tif", (x, 0))
        assert all(abs(g - w) <= 2 for g, w in zip(got, want)), (x, got, want)


@pytest.mark.parametrize(("mode", "ext"), [("I;16", ".png"), ("I;16", ".tif"), ("I;16B", ".tif")])
def test_16bit_grey_scaled_not_clipped(tmp_path: Path, mode: str, ext: str) -> None:
    data = np.array([[0, 65535, 257 * 100, 1000]], dtype=np.uint16)
    byte_order = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (4, 1), data.astype(byte_order).tobytes())
    path = tmp_path / f"grey16{ext}"
    image.save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I;16") or check.mode == "I"
    row = [pixel(path, (x, 0))[0] for x in range(4)]
    assert row == [0, 255, 100, 4]  # 1000 / 257 = 3.9 -> 4, not clipped to 255


def test_mode_i_16bit_range_and_wide_range(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 65535, 25700]], dtype=np.int32)).save(tmp_path / "i.tif")
    with Image.open(tmp_path / "i.tif") as check:
        assert check.mode == "I"
    assert [pixel(tmp_path / "i.tif", (x, 0))[0] for x in range(3)] == [0, 255, 100]
    # Outside 0..65535 the image is stretched over its own range.
    Image.fromarray(np.array([[-1000, 99000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    assert [pixel(tmp_path / "wide.tif", (x, 0))[0] for x in range(2)] == [0, 255]


def test_float_and_bilevel(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 1.0, 0.2]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert [pixel(tmp_path / "f.tif", (x, 0))[0] for x in range(3)] == [0, 255, 51]
    bilevel = Image.new("1", (2, 1), 0)
    bilevel.putpixel((1, 0), 1)
    bilevel.save(tmp_path / "b.png")
    assert pixel(tmp_path / "b.png", (0, 0)) == (0, 0, 0)
    assert pixel(tmp_path / "b.png", (1, 0)) == (255, 255, 255)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (2, 4)


def test_corrupt_missing_and_non_image_raise(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    message = raises_data_error(load_rgb, tmp_path / "trunc.png")
    assert "trunc.png" in message and "remove or replace" in message

    message = raises_data_error(load_rgb, tmp_path / "absent.png")
    assert "absent.png" in message and "not found" in message

    (tmp_path / "notes.jpg").write_text("not an image\nat all\n")
    assert "notes.jpg" in raises_data_error(load_rgb, tmp_path / "notes.jpg")


def test_is_image_file() -> None:
    assert IMAGE_EXTENSIONS == frozenset(
        {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
    )
    assert is_image_file(Path("a/B.JPG")) and is_image_file(Path("x.webp"))
    assert not is_image_file(Path("a/readme.txt")) and not is_image_file(Path("a/._b.jpg"))


# ---------------------------------------------------------------------------------------------
# image folders


def test_load_image_folder(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "pets",
        {"train": {"golden_retriever": 3, "cat": 2}, "test": {"golden_retriever": 1, "cat": 1}},
    )
    (root / "train" / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "train" / "cat" / "notes.txt").write_text("x")
    (root / "train" / ".DS_Store").write_text("x")  # a hidden file at class level
    (root / "train" / ".cache").mkdir()  # a hidden folder is not a class
    write_png(root / "train" / "cat" / "IMG_A.PNG")  # upper-case extension counts

    ds = load_image_folder(root)
    assert ds.name == "pets"
    assert ds.root == root
    assert ds.classnames == ["cat", "golden retriever"]
    assert ds.class_dirs == ["cat", "golden_retriever"]
    assert [(s.path.relative_to(root).as_posix(), s.label, s.classname) for s in ds.train] == [
        ("train/cat/IMG_A.PNG", 0, "cat"),
        ("train/cat/img00.png", 0, "cat"),
        ("train/cat/img01.png", 0, "cat"),
        ("train/golden_retriever/img00.png", 1, "golden retriever"),
        ("train/golden_retriever/img01.png", 1, "golden retriever"),
        ("train/golden_retriever/img02.png", 1, "golden retriever"),
    ]
    assert [s.label for s in ds.test] == [0, 1]
    assert ds.val == []
    assert load_image_folder(root, name="custom").name == "custom"


def test_load_image_folder_with_val(tmp_path: Path) -> None:
    root = make_folder(
        tmp_path / "d",
        {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}, "val": {"a": 2, "b": 1}},
    )
    ds = load_image_folder(root)
    assert [(s.label, s.path.name) for s in ds.val] == [(0, "img00.png"), (0, "img01.png"), (1, "img00.png")]


def test_folder_errors(tmp_path: Path) -> None:
    message = raises_data_error(load_image_folder, tmp_path / "nowhere")
    assert "nowhere" in message and "--data" in message

    root = tmp_path / "d"
    root.mkdir()
    message = raises_data_error(load_image_folder, root)
    assert "'train'" in message and str(root) in message

    (root / "train").mkdir()
    message = raises_data_error(load_image_folder, root)
    assert "no class folders" in message and str(root / "train") in message

    (root / "train" / "empty_class").mkdir()
    (root / "train" / "empty_class" / "readme.txt").write_text("x")
    message = raises_data_error(load_image_folder, root)
    assert "'empty_class'" in message and "no images" in message

    shutil.rmtree(root / "train" / "empty_class")
    make_folder(root, {"train": {"cat": 1, "dog": 1}})
    message = raises_data_error(load_image_folder, root)
    assert "'test'" in message

    make_folder(root, {"test": {"cat": 1, "bird": 1}})
    message = raises_data_error(load_image_folder, root)
    assert "missing in test: dog" in message and "missing in train: bird" in message

    shutil.rmtree(root / "test" / "bird")
    (root / "test" / "dog").mkdir()
    message = raises_data_error(load_image_folder, root)
    assert "'dog'" in message and "no images" in message and "test" in message

    write_png(root / "test" / "dog" / "1.png")
    assert load_image_folder(root).num_classes == 2  # now valid

    make_folder(root, {"val": {"cat": 1}})
    message = raises_data_error(load_image_folder, root)
    assert "val" in message and "missing in val: dog" in message


# ---------------------------------------------------------------------------------------------
# split files


def make_split_root(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    for rel in ["c0/a.jpg", "c0/b.jpg", "c1/a.jpg", "c1/b.jpg", "c2/a.jpg"]:
        write_png(root / rel)
    return root


def write_split(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "split.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


GOOD_SPLIT = {
    "train": [["c0/a.jpg", 0, "cat"], ["c1/a.jpg", 1, "golden retriever"], ["c2/a.jpg", 2, "a/b"]],
    "val": [["c0/b.jpg", 0, "cat"]],
    "test": [["c1/b.jpg", 1, "golden retriever"], ["c0/b.jpg", 0, "cat"]],
}


def test_load_split_file(tmp_path: Path) -> None:
    root = make_split_root(tmp_path)
    ds = load_split_file(root, write_split(tmp_path, GOOD_SPLIT))
    assert ds.name == "images"
    assert ds.classnames == ["cat", "golden retriever", "a/b"]
    assert ds.class_dirs == ["cat", "golden_retriever", "a_b"]
    assert ds.train[1] == Sample(root / "c1/a.jpg", 1, "golden retriever")
    assert [s.label for s in ds.test] == [1, 0]
    assert [s.path for s in ds.val] == [root / "c0/b.jpg"]
    assert load_split_file(root, tmp_path / "split.json", name="x").name == "x"


def test_split_class_dirs_distinct(tmp_path: Path) -> None:
    root = make_split_root(tmp_path)
    split = {
        "train": [["c0/a.jpg", 0, "a/b"], ["c1/a.jpg", 1, "a:b"], ["c2/a.jpg", 2, "A_B"]],
        "test": [["c0/b.jpg", 0, "a/b"]],
    }
    ds = load_split_file(root, write_split(tmp_path, split))
    assert ds.class_dirs == ["a_b_0", "a_b_1", "A_B_2"]
    assert len({d.casefold() for d in ds.class_dirs}) == 3


def test_split_errors(tmp_path: Path) -> None:
    root = make_split_root(tmp_path)

    message = raises_data_error(load_split_file, root, tmp_path / "absent.json")
    assert "absent.json" in message

    message = raises_data_error(load_split_file, root, write_split(tmp_path, '{"train": [,'))
    assert "not valid JSON" in message and "line 1" in message

    message = raises_data_error(load_split_file, root, write_split(tmp_path, {"train": []}))
    assert "'test'" in message
    message = raises_data_error(load_split_file, root, write_split(tmp_path, {"test": []}))
    assert "'train'" in message

    bad_row = dict(GOOD_SPLIT, test=[["c1/b.jpg", 1, "golden retriever"], ["c0/b.jpg", "0"]])
    message = raises_data_error(load_split_file, root, write_split(tmp_path, bad_row))
    assert "row 1" in message and "'test'" in message

    missing = dict(
        GOOD_SPLIT,
        test=[["gone/1.jpg", 0, "cat"], ["gone/2.jpg", 0, "cat"], ["gone/3.jpg", 0, "cat"], ["gone/4.jpg", 0, "cat"]],
    )
    message = raises_data_error(load_split_file, root, write_split(tmp_path, missing))
    assert "4 image(s)" in message and "gone/1.jpg, gone/2.jpg, gone/3.jpg" in message
    assert "gone/4.jpg" not in message and "--data" in message

    unseen = dict(GOOD_SPLIT, test=[["c0/b.jpg", 3, "bird"]])
    message = raises_data_error(load_split_file, root, write_split(tmp_path, unseen))
    assert "test labels 3" in message and "not in train" in message

    two_names = dict(GOOD_SPLIT, test=[["c0/b.jpg", 0, "kitten"]])
    message = raises_data_error(load_split_file, root, write_split(tmp_path, two_names))
    assert "'cat'" in message and "'kitten'" in message

    gap = {"train": [["c0/a.jpg", 0, "cat"], ["c2/a.jpg", 2, "x"]], "test": [["c0/b.jpg", 0, "cat"]]}
    message = raises_data_error(load_split_file, root, write_split(tmp_path, gap))
    assert "missing 1" in message


# ---------------------------------------------------------------------------------------------
# few shots


@pytest.fixture()
def fewshot_dataset(tmp_path: Path) -> Dataset:
    root = make_folder(
        tmp_path / "fs",
        {"train": {"cat": 10, "dog": 10, "golden_retriever": 10}, "test": {"cat": 1, "dog": 1, "golden_retriever": 1}},
    )
    return load_image_folder(root)


def test_sample_fewshot_deterministic(fewshot_dataset: Dataset) -> None:
    shots = sample_fewshot(fewshot_dataset, 3, seed=0)
    assert len(shots) == 9
    assert [s.label for s in shots] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert shots == sorted(shots, key=lambda s: (s.label, str(s.path)))
    assert all(s in fewshot_dataset.train for s in shots)
    assert sample_fewshot(fewshot_dataset, 3, seed=0) == shots
    assert sample_fewshot(fewshot_dataset, 3, seed=1) != shots

    # Independent of the listing order passed in.
    shuffled = list(fewshot_dataset.train)
    random.Random(5).shuffle(shuffled)
    assert shuffled != fewshot_dataset.train
    assert sample_fewshot(dataclasses.replace(fewshot_dataset, train=shuffled), 3, seed=0) == shots

    # Pinned: numpy's default_rng([seed, label]).choice, indices sorted.
    expected = []
    for label in range(3):
        pool = sorted((s for s in fewshot_dataset.train if s.label == label), key=lambda s: str(s.path))
        picks = np.sort(np.random.default_rng([0, label]).choice(10, size=3, replace=False))
        expected += [pool[i] for i in picks]
    assert shots == expected

    assert sample_fewshot(fewshot_dataset, 10, seed=3) == fewshot_dataset.train  # all of them


def test_sample_fewshot_errors(fewshot_dataset: Dataset) -> None:
    message = raises_data_error(sample_fewshot, fewshot_dataset, 16, 0)
    assert "class 'cat' has 10 training images, fewer than --shots 16" in message
    assert "--shots" in raises_data_error(sample_fewshot, fewshot_dataset, 0, 0)

    # A corrupt chosen shot fails at sampling, naming its file.
    for sample in fewshot_dataset.train:
        sample.path.write_bytes(b"garbage")
    message = raises_data_error(sample_fewshot, fewshot_dataset, 1, 0)
    assert str(fewshot_dataset.train[0].path.parent) in message


def test_save_load_round_trip(fewshot_dataset: Dataset, tmp_path: Path) -> None:
    shots = sample_fewshot(fewshot_dataset, 2, seed=7)
    out = tmp_path / "run" / "fewshot.json"
    save_fewshot(out, shots, fewshot_dataset, k=2, seed=7)
    saved = json.loads(out.read_text())
    assert saved["dataset"] == "fs" and saved["k"] == 2 and saved["seed"] == 7
    assert saved["classnames"] == ["cat", "dog", "golden retriever"]
    assert saved["shots"][0][0].startswith("train/cat/")
    assert not any(Path(row[0]).is_absolute() for row in saved["shots"])
    assert [row[1:] for row in saved["shots"]] == [[s.label, s.classname] for s in shots]
    assert [p.name for p in out.parent.iterdir()] == ["fewshot.json"]  # no temp file left

    assert load_fewshot(out, fewshot_dataset) == shots

    # Also a bare row list and a CoOp-like {"train": rows}.
    (tmp_path / "bare.json").write_text(json.dumps(saved["shots"]))
    assert load_fewshot(tmp_path / "bare.json", fewshot_dataset) == shots
    (tmp_path / "coop.json").write_text(json.dumps({"train": saved["shots"]}))
    assert load_fewshot(tmp_path / "coop.json", fewshot_dataset) == shots


def test_save_fewshot_absolute_outside_root(fewshot_dataset: Dataset, tmp_path: Path) -> None:
    outside = write_png(tmp_path / "elsewhere" / "x.png")
    shots = [Sample(outside, 0, "cat")]
    save_fewshot(tmp_path / "f.json", shots, fewshot_dataset, k=1, seed=0)
    row = json.loads((tmp_path / "f.json").read_text())["shots"][0]
    assert Path(row[0]).is_absolute()
    assert load_fewshot(tmp_path / "f.json", fewshot_dataset) == [Sample(Path(row[0]), 0, "cat")]


def test_load_fewshot_errors(fewshot_dataset: Dataset, tmp_path: Path) -> None:
    assert "nope.json" in raises_data_error(load_fewshot, tmp_path / "nope.json", fewshot_dataset)
    (tmp_path / "bad.json").write_text("{oops")
    assert "not valid JSON" in raises_data_error(load_fewshot, tmp_path / "bad.json", fewshot_dataset)

    (tmp_path / "f.json").write_text(json.dumps({"shots": [["train/cat/img00.png", 0, "kitten"]]}))
    message = raises_data_error(load_fewshot, tmp_path / "f.json", fewshot_dataset)
    assert "'kitten'" in message and "'cat'" in message and "train/cat/img00.png" in message

    (tmp_path / "f.json").write_text(json.dumps({"shots": [["train/cat/img00.png", 9, "cat"]]}))
    assert "label 9" in raises_data_error(load_fewshot, tmp_path / "f.json", fewshot_dataset)

    (tmp_path / "f.json").write_text(json.dumps({"shots": [["train/cat/missing.png", 0, "cat"]]}))
    assert "missing.png" in raises_data_error(load_fewshot, tmp_path / "f.json", fewshot_dataset)


def test_fewshot_digest(fewshot_dataset: Dataset, tmp_path: Path) -> None:
    root = fewshot_dataset.root
    assert root is not None
    shots = sample_fewshot(fewshot_dataset, 2, seed=0)
    digest = fewshot_digest(shots, root)
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    assert fewshot_digest(sample_fewshot(fewshot_dataset, 1, seed=0), root) != digest  # other shots, other digest
    assert fewshot_digest(list(reversed(shots)), root) == digest  # order-free
    assert fewshot_digest(shots[:-1], root) != digest

    # The same images under a moved root give the same digest (relative paths).
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    moved_shots = [dataclasses.replace(s, path=moved / s.path.relative_to(root)) for s in shots]
    assert fewshot_digest(moved_shots, moved) == digest
    assert fewshot_digest(moved_shots, None) != digest  # absolute paths differ

    # Changing one image's bytes changes the digest.
    write_png(shots[0].path, value=201)
    assert fewshot_digest(shots, root) != digest


# ---------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_digits(tmp_path_factory.mktemp("cache") / "digits")


def test_digits_layout(digits_root: Path) -> None:
    from sklearn.datasets import load_digits

    assert (digits_root / ".complete").is_file()
    assert not list(digits_root.parent.glob("digits.tmp-*"))
    ds = load_image_folder(digits_root)
    names = ["eight", "five", "four", "nine", "one", "seven", "six", "three", "two", "zero"]
    assert ds.classnames == names and ds.num_classes == 10
    for label in range(10):
        n_train = sum(s.label == label for s in ds.train)
        n_test = sum(s.label == label for s in ds.test)
        assert n_train > 0 and n_test > 0
        assert n_train == (n_train + n_test) * 60 // 100
    digits = load_digits()
    assert len(ds.train) + len(ds.test) == len(digits.target)

    first = Image.open(digits_root / "train" / "zero" / "0000.png")
    assert first.mode == "L" and first.size == (32, 32)
    expected = 255 - np.rint(digits.images[0] * 255 / 16)
    assert np.array_equal(np.asarray(first)[::4, ::4], expected.astype(np.uint8))
    assert np.asarray(first)[0, 0] == 255  # white background, dark ink
    for sample in ds.test[:: 97]:
        with Image.open(sample.path) as image:
            assert image.mode == "L" and image.size == (32, 32)


def test_digits_idempotent(digits_root: Path) -> None:
    probe = digits_root / "test" / "nine" / sorted(os.listdir(digits_root / "test" / "nine"))[0]
    before = (probe.stat().st_mtime_ns, (digits_root / ".complete").stat().st_mtime_ns)
    assert ensure_digits(digits_root) == digits_root
    after = (probe.stat().st_mtime_ns, (digits_root / ".complete").stat().st_mtime_ns)
    assert before == after


def test_digits_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DD_HOME", str(tmp_path / "home"))
    assert default_root() == tmp_path / "home" / "datasets" / "digits"
    monkeypatch.delenv("DD_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "datadream" / "datasets" / "digits"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root() == Path.home() / ".cache" / "datadream" / "datasets" / "digits"
