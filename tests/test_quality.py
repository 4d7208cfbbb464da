"""ddcore.quality: Frechet distance, precision/recall/density/coverage, CLIP image features."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from ddcore import quality
from ddcore.quality import frechet_distance, image_features, per_class_quality, prdc, set_quality
from ddcore.records import Sample

# --------------------------------------------------------------------------- helpers


def _reference_prdc(real, fake, k, k_fake=None):
    """The authors' reference code (clovaai/generative-evaluation-prdc), transcribed; ``k_fake``
    (default ``k``) for the fake radii only."""
    from sklearn.metrics import pairwise_distances

    def radii(x, k):
        d = pairwise_distances(x, x)
        idx = np.argpartition(d, k, axis=-1)[..., : k + 1]
        return np.take_along_axis(d, idx, axis=-1).max(axis=-1)

    r_real, r_fake = radii(real, k), radii(fake, k if k_fake is None else k_fake)
    d = pairwise_distances(real, fake)
    return {
        "precision": (d < r_real[:, None]).any(axis=0).mean(),
        "recall": (d < r_fake[None, :]).any(axis=1).mean(),
        "density": (1.0 / k) * (d < r_real[:, None]).sum(axis=0).mean(),
        "coverage": (d.min(axis=1) < r_real).mean(),
    }


def _rng(seed=0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- Frechet distance


def test_fd_identical_sets_is_zero():
    x = _rng().normal(size=(300, 16))
    assert frechet_distance(x, x.copy()) == pytest.approx(0.0, abs=1e-8)


def test_fd_same_covariance_is_the_squared_mean_distance():
    rng = _rng(1)
    shift = np.zeros(8)
    shift[0], shift[3] = 12.0, -9.0  # ||mu1 - mu2||^2 = 225
    cov = np.diag(np.linspace(0.5, 2.0, 8))
    x = rng.multivariate_normal(np.zeros(8), cov, size=4000)
    y = rng.multivariate_normal(shift, cov, size=4000)
    assert frechet_distance(x, y) == pytest.approx(225.0, rel=0.02)
    # exactly the mean term when the samples' covariances are equal: y is a translate of x
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_fd_covariance_term():
    # N(0, I) vs N(0, 4I) in D dims: Tr(I + 4I - 2 * 2I) = D
    rng = _rng(2)
    d = 6
    x = rng.normal(size=(6000, d))
    y = 2.0 * rng.normal(size=(6000, d))
    assert frechet_distance(x, y) == pytest.approx(float(d), rel=0.05)


def test_fd_is_symmetric_and_positive():
    rng = _rng(3)
    x, y = rng.normal(size=(50, 5)), rng.normal(loc=0.3, size=(70, 5))
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6)
    assert frechet_distance(x, y) > 0.1


@pytest.mark.parametrize("n, d", [(2, 16), (5, 64), (10, 256)])
def test_fd_fewer_rows_than_dimensions(n, d):
    rng = _rng(4)
    x, y = rng.normal(size=(n, d)), rng.normal(loc=0.1, size=(n + 1, d))
    for a, b in ((x, y), (x, x.copy()), (y, x)):
        value = frechet_distance(a, b)
        assert np.isfinite(value) and value >= 0.0
    assert frechet_distance(x, x.copy()) == pytest.approx(0.0, abs=1e-6 * d)
    assert frechet_distance(x, y) > 1.0
    # Independent value: with centred data A, B, Tr sqrtm(Sx Sy) is the sum of the singular
    # values of A B^T / sqrt((n - 1)(m - 1)) (the nonzero eigenvalues of Sx Sy are their squares).
    a, b = x - x.mean(axis=0), y - y.mean(axis=0)
    trace_root = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = x.mean(axis=0) - y.mean(axis=0)
    expected = diff @ diff + np.trace(np.cov(x, rowvar=False)) + np.trace(np.cov(y, rowvar=False)) - 2 * trace_root
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-5)


def test_fd_from_the_samples_equals_the_matrix_square_root():
    """The few-samples route (an SVD of the n x m cross product) against scipy's sqrtm of the
    covariance product it replaces, on a product small enough for sqrtm to be exact."""
    from ddcore.quality import _trace_sqrt_from_samples, _trace_sqrt_product

    rng = _rng(7)
    x, y = rng.normal(size=(9, 24)), 2.0 * rng.normal(loc=0.3, size=(12, 24))
    via_sqrtm = _trace_sqrt_product(np.cov(x, rowvar=False), np.cov(y, rowvar=False), 1e-6)
    assert _trace_sqrt_from_samples(x, y) == pytest.approx(via_sqrtm, rel=1e-6)
    assert _trace_sqrt_from_samples(x, y) == pytest.approx(_trace_sqrt_from_samples(y, x), rel=1e-9)


def test_fd_one_dimension_and_float32():
    rng = _rng(5)
    x = rng.normal(size=(5000, 1)).astype(np.float32)
    y = (rng.normal(size=(5000, 1)) * 3 + 1).astype(np.float32)
    # (0 - 1)^2 + 1 + 9 - 2 * 3 = 5
    assert frechet_distance(x, y) == pytest.approx(5.0, rel=0.05)


def test_fd_singular_product_falls_back(monkeypatch):
    """A failing sqrtm (non-finite result) retries with the eps offset, then the eigenvalues."""
    import scipy.linalg

    calls = []

    def broken(a, *args, **kwargs):
        calls.append(a)
        return np.full_like(a, np.nan)

    monkeypatch.setattr(scipy.linalg, "sqrtm", broken)
    x = _rng(6).normal(size=(40, 4))
    assert frechet_distance(x, x + 1.0) == pytest.approx(4.0, rel=1e-6)
    assert len(calls) == 2  # plain, then with the offset


@pytest.mark.parametrize("rows", [0, 1])
def test_fd_needs_two_rows(rows):
    good = np.zeros((5, 3))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(np.zeros((rows, 3)), good)
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(good, np.zeros((rows, 3)))


def test_fd_rejects_bad_shapes():
    with pytest.raises(ValueError, match="different feature sizes"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="2-D"):
        frechet_distance(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


# --------------------------------------------------------------------------- prdc


def test_prdc_identical_sets():
    x = _rng(10).normal(size=(200, 10))
    got = prdc(x, x.copy(), k=5)
    assert got["precision"] == 1.0 and got["recall"] == 1.0 and got["coverage"] == 1.0
    assert got["density"] == pytest.approx(1.0, abs=0.02)


def test_prdc_far_apart_clouds_are_all_zero():
    rng = _rng(11)
    real = rng.normal(size=(150, 6))
    fake = rng.normal(loc=50.0, size=(120, 6))
    assert prdc(real, fake) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    assert frechet_distance(real, fake) == pytest.approx(6 * 50.0**2, rel=0.02)


def test_prdc_mode_dropping_keeps_precision_loses_recall():
    rng = _rng(12)
    mode_a = rng.normal(size=(100, 5))
    mode_b = rng.normal(loc=30.0, size=(100, 5))
    real = np.concatenate([mode_a, mode_b])
    fake = mode_a[:80].copy()  # a subset of the real points, one mode dropped
    got = prdc(real, fake, k=5)
    assert got["precision"] == 1.0
    assert got["recall"] < 0.55
    assert got["coverage"] < 0.55


def test_prdc_duplicated_point_has_low_coverage():
    real = _rng(13).normal(size=(200, 8))
    fake = np.repeat(real[:1], 100, axis=0)
    got = prdc(real, fake, k=5)
    assert got["precision"] == 1.0
    assert got["coverage"] < 0.1
    assert got["recall"] == 0.0  # the fake radii are all 0


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_matches_the_reference_code(k, monkeypatch):
    rng = _rng(14)
    real = rng.normal(size=(90, 7))
    fake = rng.normal(loc=0.4, scale=1.3, size=(70, 7))
    expected = _reference_prdc(real, fake, k)
    for entries in (quality._CHUNK_ENTRIES, 500):  # one block, then many row chunks
        monkeypatch.setattr(quality, "_CHUNK_ENTRIES", entries)
        got = prdc(real, fake, k=k)
        for key, value in expected.items():
            assert got[key] == pytest.approx(float(value), abs=1e-12), (key, entries)


def test_prdc_density_counts_multiple_balls():
    # Real points on a line 0, 1, ..., 9 with k=1: radius 1 each (0 and 9: also 1).
    real = np.arange(10, dtype=float)[:, None]
    # fake at 4.5: strictly inside the balls of 4 and 5 only -> density 2/1 for that point
    fake = np.array([[4.5], [4.5]])
    got = prdc(real, fake, k=1)
    assert got["density"] == pytest.approx(2.0)
    assert got["precision"] == 1.0
    assert got["coverage"] == pytest.approx(0.2)


def test_prdc_small_sets_cap_k():
    rng = _rng(15)
    real, fake = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    got = prdc(real, fake, k=5)
    expected = _reference_prdc(real, fake, 2, k_fake=1)  # k capped at 3 - 1 (real) and 2 - 1 (fake)
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value)), key
    assert all(np.isfinite(v) for v in got.values())


def test_prdc_validation():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="at least 2 rows"):
        prdc(x, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="k must be"):
        prdc(x, x, k=0)


def test_set_quality_keys_and_types():
    rng = _rng(16)
    got = set_quality(rng.normal(size=(30, 4)), rng.normal(size=(20, 4)), k=3)
    assert set(got) == {"fd", "precision", "recall", "density", "coverage", "n_real", "n_fake"}
    assert got["n_real"] == 30 and got["n_fake"] == 20
    assert all(type(v) in (float, int) for v in got.values())


# --------------------------------------------------------------------------- image features, per class


@pytest.fixture(scope="module")
def shapes(tiny_folder):
    from ddcore.data.folders import load_image_folder

    return load_image_folder(tiny_folder)


@pytest.fixture(scope="module")
def tiny_loaded():
    from ddcore.models.clip import load_clip

    return load_clip("tiny")


def test_image_features_tiny(shapes, tiny_loaded):
    samples = shapes.train
    first = image_features("tiny", samples, batch_size=7)
    assert first.shape == (len(samples), 32) and first.dtype == np.float32
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    again = image_features("tiny", samples, loaded=tiny_loaded)
    assert np.allclose(first, again, atol=1e-6)
    assert not np.allclose(first[0], first[-1])  # different images, different features
    assert image_features("tiny", [], loaded=tiny_loaded).shape == (0, 32)


def test_image_features_restores_train_mode(shapes, tiny_loaded):
    tiny_loaded.model.train()
    try:
        image_features("tiny", shapes.train[:2], loaded=tiny_loaded)
        assert tiny_loaded.model.training
    finally:
        tiny_loaded.model.eval()


def test_per_class_quality_real_vs_itself_and_other_class(shapes, tiny_loaded):
    real, names = shapes.train, shapes.classnames
    calls = []

    def features(samples):
        calls.append(len(samples))
        return image_features("tiny", samples, loaded=tiny_loaded)

    same = per_class_quality(real, list(real), names, features, k=3)
    assert calls == [2 * len(real)]
    assert set(same) == {*names, "all"}
    for name in [*names, "all"]:
        assert same[name]["fd"] == pytest.approx(0.0, abs=1e-6), name
        assert same[name]["precision"] == 1.0 and same[name]["coverage"] == 1.0
    assert same[names[0]]["n_real"] == 6 and same["all"]["n_fake"] == 18

    # "synthetic" images of class c are the real images of class c + 1
    shifted = [Sample(s.path, (s.label - 1) % len(names), names[(s.label - 1) % len(names)]) for s in real]
    other = per_class_quality(real, shifted, names, features, k=3)
    for name in names:
        assert other[name]["fd"] > 1e-3 + 100 * same[name]["fd"], name
    assert other["all"]["fd"] == pytest.approx(0.0, abs=1e-6)  # pooled, the same images


def test_per_class_quality_too_few_images():
    names = ["a", "b", "c"]
    real = [Sample(f"r{i}", i % 3, names[i % 3]) for i in range(9)]  # 3 per class
    synthetic = [Sample("s0", 0, "a"), Sample("s1", 0, "a"), Sample("s2", 1, "b")]  # 2, 1, 0
    rng = _rng(20)
    table = {s.path: rng.normal(size=4) for s in real + synthetic}
    calls = []

    def features(samples):
        calls.append(len(samples))
        return np.stack([table[s.path] for s in samples])

    got = per_class_quality(real, synthetic, names, features, k=5)
    assert calls == [12]
    assert got["a"]["fd"] is not None and got["a"]["n_fake"] == 2
    for name, n_fake in (("b", 1), ("c", 0)):
        entry = got[name]
        assert all(entry[key] is None for key in ("fd", "precision", "recall", "density", "coverage"))
        assert entry["n_real"] == 3 and entry["n_fake"] == n_fake
        assert "synthetic" in entry["reason"]
    assert got["all"]["n_real"] == 9 and got["all"]["n_fake"] == 3 and got["all"]["fd"] is not None
    # nothing at all: no features call, every entry explained
    empty = per_class_quality([], [], names, features)
    assert calls == [12] and all(e["reason"] for e in empty.values())


def test_per_class_quality_rejects_bad_labels_and_reserved_name():
    with pytest.raises(ValueError, match="outside"):
        per_class_quality([Sample("x", 5, "z")], [], ["a"], lambda s: np.zeros((len(s), 2)))
    with pytest.raises(ValueError, match="reserved"):
        per_class_quality([], [], ["all"], lambda s: np.zeros((len(s), 2)))


@pytest.mark.slow
def test_inception_features_from_local_weights_only(tmp_path, monkeypatch, tiny_folder):
    from torchvision.models import inception_v3

    from ddcore.quality import INCEPTION_FILE, inception_features, inception_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert inception_weights() is None  # nothing is downloaded
    torch.manual_seed(0)
    weights = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_FILE
    weights.parent.mkdir(parents=True)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(), weights)
    assert inception_weights() == weights
    samples = [Sample(p, 0, "x") for p in sorted((tiny_folder / "train").rglob("*.png"))[:3]]
    first = inception_features(samples, weights)
    assert first.shape == (3, 2048) and np.isfinite(first).all()
    np.testing.assert_allclose(inception_features(samples, weights), first, rtol=1e-5, atol=1e-6)
