"""The set-quality report (ddcore.quality_report, `dd quality`) on constructed image sets."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from ddcore.errors import ConfigError
from ddcore.quality_report import feature_space, pixel_features, set_quality_report
from ddcore.records import Sample

from conftest import FAST

CLASSES = ["cat", "dog"]


def _noise_images(folder, count, low, high, seed):
    """``count`` 24x24 noise images with pixel values in [low, high), one file each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        Image.fromarray(rng.integers(low, high, size=(24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Real images per class (dark noise), an identical copy of them, and a disjoint set
    (bright noise) laid out as synthetic folders (one sub-folder per class)."""
    root = tmp_path_factory.mktemp("quality")
    real, same, far = [], [], []
    for label, name in enumerate(CLASSES):
        for path in _noise_images(root / "data" / "train" / name, 24, 0, 60, seed=label):
            real.append(Sample(path, label, name))
            copy = root / "same" / name / path.name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(path.read_bytes())
            same.append(Sample(copy, label, name))
        for path in _noise_images(root / "far" / name, 20, 200, 256, seed=10 + label):
            far.append(Sample(path, label, name))
        _noise_images(root / "data" / "test" / name, 2, 0, 60, seed=20 + label)
    return root, real, same, far


@pytest.mark.slow
def test_identical_sets_are_at_distance_zero_with_full_precision_and_recall(sets, tmp_path):
    _, real, same, _ = sets
    features, described = feature_space("pixels")
    result = set_quality_report(real, same, CLASSES, features, space=described, out=tmp_path)
    for name in (*CLASSES, "all"):
        entry = result["classes"][name]
        assert entry["fd"] == pytest.approx(0.0, abs=1e-6)
        assert entry["precision"] == entry["recall"] == entry["coverage"] == 1.0
        # Every synthetic image sits on its real twin, inside its own k-NN ball and a few others'.
        assert entry["density"] >= 1.0
    assert result["classes"]["cat"]["n_real"] == result["classes"]["cat"]["n_fake"] == 24


@pytest.mark.slow
def test_disjoint_sets_are_far_with_zero_precision_recall_density_coverage(sets, tmp_path):
    _, real, same, far = sets
    features, described = feature_space("pixels")
    result = set_quality_report(real, far, CLASSES, features, space=described, out=tmp_path)
    for name in (*CLASSES, "all"):
        entry = result["classes"][name]
        assert entry["precision"] == entry["recall"] == entry["density"] == entry["coverage"] == 0.0
        # Mean pixel values differ by about (228 - 30) / 255 = 0.78 in each of 768 dimensions.
        assert entry["fd"] > 300
    # A half-right set sits between the two.
    half = same[:12] + far[:10] + same[24:36] + far[20:30]
    mixed = set_quality_report(real, half, CLASSES, features, space=described)["classes"]["all"]
    assert 0.0 < mixed["precision"] < 1.0 and 0.0 < mixed["coverage"] < 1.0
    assert 0.0 < mixed["fd"] < result["classes"]["all"]["fd"]


@pytest.mark.slow
def test_the_report_files_hold_the_same_numbers(sets, tmp_path):
    _, real, _, far = sets
    features, described = feature_space("pixels")
    result = set_quality_report(real, far, CLASSES, features, space=described, k=3, out=tmp_path)
    assert json.loads((tmp_path / "quality.json").read_text()) == json.loads(json.dumps(result))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "quality.csv").read_text())))
    assert [r["class"] for r in rows] == ["all", "cat", "dog"]
    assert float(rows[1]["fd"]) == pytest.approx(result["classes"]["cat"]["fd"])
    markdown = (tmp_path / "quality.md").read_text()
    assert "k = 3" in markdown and markdown.count("\n| ") == 4  # header + 3 rows
    with Image.open(tmp_path / "quality.png") as plot:
        assert plot.size[0] > 300


def test_pixel_features_are_the_resized_image():
    image = Image.new("RGB", (40, 30), (255, 0, 51))
    path = __import__("tempfile").mktemp(suffix=".png")
    image.save(path)
    row = pixel_features([Sample(path, 0, "x")])[0]
    assert row.shape == (768,)
    assert np.allclose(row.reshape(16, 16, 3)[5, 7], [1.0, 0.0, 0.2])


def test_an_unknown_feature_space_or_an_empty_set_is_a_one_line_error(sets):
    _, real, _, _ = sets
    with pytest.raises(ConfigError, match="unknown feature space 'sift'"):
        feature_space("sift")
    features, described = feature_space("pixels")
    with pytest.raises(ConfigError, match="synthetic set holds no images"):
        set_quality_report(real, [], CLASSES, features, space=described)


@pytest.mark.slow
def test_dd_quality_on_a_folder_and_on_a_run(sets, tmp_path, run_dd, tiny_folder):
    root, *_ = sets
    out = tmp_path / "report"
    result = run_dd("quality", str(root / "far"), "--data", str(root / "data"), "--features", "pixels",
                    "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert "synthetic vs real in pixels" in result.stdout
    written = json.loads((out / "quality.json").read_text())
    assert written["n_real"] == 48 and written["n_synthetic"] == 40
    assert written["classes"]["all"]["precision"] == 0.0
    # Bad input: a usage error (exit 2) naming the accepted spaces, and a one-line error.
    bad = run_dd("quality", str(root / "far"), "--data", str(root / "data"), "--features", "sift")
    assert bad.returncode == 2 and "'sift' is not one of clip, clip:SPEC, fid" in bad.stderr
    shots = run_dd("quality", str(root / "far"), "--data", str(root / "data"), "--real", "shots")
    assert shots.returncode != 0 and "needs a run folder" in shots.stderr
    # A run folder: its own synthetic set against its own shots, in the tiny CLIP's space.
    run = tmp_path / "run"
    made = run_dd("run", "--method", "issynth", "--data", str(tiny_folder), "--out", str(run), "--stop-after",
                  "generate", "-q", *FAST)
    assert made.returncode == 0, made.stderr
    measured = run_dd("quality", str(run), "--features", "clip:tiny", "--real", "shots", "-q")
    assert measured.returncode == 0, measured.stderr
    written = json.loads((run / "quality" / "quality.json").read_text())
    assert written["n_real"] == 3 * 2 and written["n_synthetic"] == 3 * 2  # --shots 2, --images-per-class 2
    assert written["space"].startswith("tiny image features")
