"""How close a synthetic image set is to a real one, in an image-feature space.

Two families of measures, both computed on feature vectors (one row per image):

* :func:`frechet_distance` -- the Frechet distance between Gaussians fitted to the two sets
  (the distance behind FID, here in whatever feature space the caller chooses, e.g. the
  classifier's CLIP image embeddings);
* :func:`prdc` -- precision, recall, density and coverage of Naeem et al. 2020, "Reliable
  Fidelity and Diversity Metrics for Generative Models" (ICML), computed as in the authors'
  reference code (``clovaai/generative-evaluation-prdc``).

:func:`set_quality` bundles them; :func:`image_features` embeds images with an open_clip model
(L2-normalised image embeddings, the space the zero-shot / fine-tuned classifier works in);
:func:`per_class_quality` runs :func:`set_quality` per class and over all classes together
(the paper's Figure 4 and ``dd compare``'s report).

Everything takes numpy arrays and returns plain Python floats (and ints for counts), so the
results go straight into JSON reports.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .progress import SILENT
from .records import Sample

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .models.clip import LoadedClip

QUALITY_KEYS = ("fd", "precision", "recall", "density", "coverage")
ALL = "all"  # the key of the all-classes entry in per_class_quality's result
_CHUNK_ENTRIES = 1 << 23  # distance-matrix entries held at once by prdc (64 MiB of float64)


# --------------------------------------------------------------------------- validation


def _rows(name: str, a: np.ndarray, *, min_rows: int = 2) -> np.ndarray:
    """``a`` as a finite float64 matrix with at least ``min_rows`` rows, or ValueError."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [samples, features], got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {a.shape[0]}: a set's spread "
                         f"cannot be estimated from fewer")
    if a.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns (shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return a


def _pair(x: np.ndarray, y: np.ndarray, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x, y = _rows(names[0], x), _rows(names[1], y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} have different feature sizes: {x.shape[1]} vs {y.shape[1]}")
    return x, y


# --------------------------------------------------------------------------- Frechet distance


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    """``Tr(sqrtm(s1 @ s2))`` for covariance matrices ``s1``, ``s2``.

    ``scipy.linalg.sqrtm`` of the product; when that is not finite (a singular product can
    defeat it) or has a non-negligible imaginary part, again with ``eps`` times the mean
    variance added to both diagonals (pytorch-fid's fallback, made scale-free). Tiny imaginary
    parts, rounding noise, are dropped. Should both fail, the trace comes from the eigenvalues
    of ``s1 @ s2`` instead (real and >= 0 in exact arithmetic, since the product is similar to
    the PSD ``s1^1/2 s2 s1^1/2``): ``sum(sqrt(max(Re(lambda), 0)))``.
    """
    from scipy.linalg import LinAlgWarning, sqrtm

    def attempt(a: np.ndarray, b: np.ndarray) -> float | None:
        with warnings.catch_warnings():
            # A singular product (fewer samples than dimensions) is expected here; its square
            # root is still fine for the trace, and a bad one is caught below.
            warnings.simplefilter("ignore", LinAlgWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                root = sqrtm(a @ b)
            except (np.linalg.LinAlgError, ValueError):
                return None
        root = np.asarray(root)
        if not np.isfinite(root).all():
            return None
        diag = np.diagonal(root)
        if np.iscomplexobj(root):
            scale = max(float(np.abs(diag.real).max(initial=0.0)), 1e-12)
            if float(np.abs(diag.imag).max(initial=0.0)) > 1e-3 * scale:
                return None
        return float(np.sum(diag.real))

    found = attempt(s1, s2)
    if found is not None:
        return found
    dim = s1.shape[0]
    offset = np.eye(dim) * eps * max(float(np.trace(s1) + np.trace(s2)) / (2 * dim), 1e-12)
    found = attempt(s1 + offset, s2 + offset)
    if found is not None:
        return found
    eigenvalues = np.linalg.eigvals(s1 @ s2)
    return float(np.sqrt(np.clip(eigenvalues.real, 0.0, None)).sum())


def _trace_sqrt_from_samples(x: np.ndarray, y: np.ndarray) -> float:
    """``Tr(sqrtm(S_x S_y))`` from the samples themselves. With ``A``, ``B`` the centred rows
    scaled by ``1/sqrt(n - 1)``, ``S_x S_y = A^T A B^T B`` has the nonzero eigenvalues of
    ``(A B^T)(A B^T)^T``, the squared singular values of ``A B^T``, so the trace is their sum.
    Exact, and an ``n x m`` SVD: ``sqrtm`` of the singular ``d x d`` product that few samples
    give takes minutes at FID's d = 2048 and may need the fallbacks."""
    a = (x - x.mean(axis=0)) / math.sqrt(len(x) - 1)
    b = (y - y.mean(axis=0)) / math.sqrt(len(y) - 1)
    return float(np.linalg.svd(a @ b.T, compute_uv=False).sum())


def frechet_distance(x: np.ndarray, y: np.ndarray, *, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to the rows of ``x`` and of ``y``.

    With ``mu_x``, ``mu_y`` the row means and ``S_x``, ``S_y`` the sample covariances
    (unbiased, ``n - 1`` in the denominator, as in FID)::

        d^2 = ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 sqrtm(S_x S_y))

    This is the squared 2-Wasserstein distance between the two Gaussians, the quantity FID
    reports (no square root taken). It is 0 for identical sets; for two sets with equal
    covariances it is exactly the squared distance of their means.

    ``x`` and ``y`` are ``[samples, features]`` with the same number of features, each with at
    least 2 rows (else ValueError). With fewer samples than features the covariances are
    singular (rank at most ``n - 1``); the formula is still well defined (the Gaussians are
    degenerate, living in the span of their samples) and the result stays finite and >= 0,
    but it is a noisy, biased estimate: compare such numbers only across sets of the same sizes.

    Numerics: with no more samples than features on either side, the trace term comes from the
    samples (:func:`_trace_sqrt_from_samples`, exact); otherwise ``sqrtm`` of the product via
    scipy, the usual ``eps`` diagonal offset (relative to the mean variance here) if that fails,
    tiny imaginary parts dropped. A tiny negative total from rounding is clamped to 0.
    """
    x, y = _pair(x, y, ("x", "y"))
    mu_x, mu_y = x.mean(axis=0), y.mean(axis=0)
    s_x = np.atleast_2d(np.cov(x, rowvar=False))
    s_y = np.atleast_2d(np.cov(y, rowvar=False))
    diff = mu_x - mu_y
    if max(len(x), len(y)) <= x.shape[1]:  # few-shot sets in FID's 2048 dimensions, say
        trace_root = _trace_sqrt_from_samples(x, y)
    else:
        trace_root = _trace_sqrt_product(s_x, s_y, eps)
    value = float(diff @ diff + np.trace(s_x) + np.trace(s_y) - 2.0 * trace_root)
    if not math.isfinite(value):
        raise ValueError("the Frechet distance is not finite (features too large for float64?)")
    return max(value, 0.0)


# --------------------------------------------------------------------------- precision, recall, density, coverage


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(a, b, metric="euclidean")


def _chunks(n_rows: int, n_cols: int):
    step = max(1, _CHUNK_ENTRIES // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield start, min(start + step, n_rows)


def _knn_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``points`` to its ``k``-th nearest other row (itself excluded)."""
    n = points.shape[0]
    radii = np.empty(n)
    for start, stop in _chunks(n, n):
        d = _distances(points[start:stop], points)
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        radii[start:stop] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) of ``fake`` against ``real``.

    ``real`` (N rows ``X_i``) and ``fake`` (M rows ``Y_j``) are feature vectors; distances are
    Euclidean. ``NND_k(X_i)`` is the distance from ``X_i`` to its k-th nearest neighbour among
    the other real rows (itself excluded), ``NND_k(Y_j)`` likewise within the fake set, and
    ``B(c, r)`` is the open ball ``{z : ||z - c|| < r}`` (strict, as in the authors' code)::

        precision = 1/M * sum_j 1[ Y_j in union_i B(X_i, NND_k(X_i)) ]
        recall    = 1/N * sum_i 1[ X_i in union_j B(Y_j, NND_k(Y_j)) ]
        density   = 1/(k M) * sum_j sum_i 1[ Y_j in B(X_i, NND_k(X_i)) ]
        coverage  = 1/N * sum_i 1[ exists j: Y_j in B(X_i, NND_k(X_i)) ]

    Precision: share of fakes inside the real manifold estimate (fidelity); recall: share of
    reals inside the fake manifold estimate (diversity); density: how many real neighbourhoods
    hold each fake, over ``k`` (about 1 when fakes are distributed like reals, can exceed 1);
    coverage: share of real neighbourhoods holding at least one fake. All in [0, 1] except
    density, in [0, N/k].

    Small sets: each set needs at least 2 rows (else ValueError), and ``k`` is capped per set
    at its size minus one -- the real radii (precision, density, coverage, and density's
    ``1/k``) use ``min(k, N - 1)``, the fake radii (recall) ``min(k, M - 1)``.

    The distance matrices are built in row chunks, so memory stays bounded for large sets.
    """
    real, fake = _pair(real, fake, ("real", "fake"))
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    n, m = real.shape[0], fake.shape[0]
    k_real, k_fake = min(k, n - 1), min(k, m - 1)

    fake_radii = _knn_radii(fake, k_fake)
    fake_inside_some = np.zeros(m, dtype=bool)  # precision
    fake_ball_counts = np.zeros(m, dtype=np.int64)  # density
    real_covered = np.zeros(n, dtype=bool)  # coverage
    real_recalled = np.zeros(n, dtype=bool)  # recall
    for start, stop in _chunks(n, max(n, m)):
        # Real radii and real-to-fake distances of the same rows, from the same chunk: a pair of
        # points that are identical across the sets then gets bit-identical distances in both.
        block = real[start:stop]
        d_real = _distances(block, real)
        d_real[np.arange(stop - start), np.arange(start, stop)] = np.inf
        radii = np.partition(d_real, k_real - 1, axis=1)[:, k_real - 1]
        del d_real
        d_fake = _distances(block, fake)  # [rows, M]
        inside = d_fake < radii[:, None]
        fake_inside_some |= inside.any(axis=0)
        fake_ball_counts += inside.sum(axis=0)
        real_covered[start:stop] = inside.any(axis=1)
        real_recalled[start:stop] = (d_fake < fake_radii[None, :]).any(axis=1)
    return {
        "precision": float(fake_inside_some.mean()),
        "recall": float(real_recalled.mean()),
        "density": float(fake_ball_counts.sum() / (k_real * m)),
        "coverage": float(real_covered.mean()),
    }


def set_quality(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """All measures of ``fake`` against ``real``: ``fd`` (:func:`frechet_distance`), ``precision``,
    ``recall``, ``density``, ``coverage`` (:func:`prdc` with ``k``), and the set sizes
    ``n_real``, ``n_fake`` (ints). Each set needs at least 2 rows (else ValueError)."""
    real, fake = _pair(real, fake, ("real", "fake"))
    return {"fd": frechet_distance(real, fake), **prdc(real, fake, k=k),
            "n_real": int(real.shape[0]), "n_fake": int(fake.shape[0])}


# --------------------------------------------------------------------------- image features


def image_features(spec: str, samples: list[Sample], *, device: str = "cpu", batch_size: int = 64,
                   reporter=SILENT, loaded: LoadedClip | None = None, num_workers: int = -1) -> np.ndarray:
    """L2-normalised open_clip image embeddings of ``samples``: float32 ``[len(samples), D]``.

    Images go through :func:`ddcore.training.data.eval_transform` (resize the shorter side,
    centre-crop, the model's mean/std), then ``model.encode_image``; each row is divided by its
    Euclidean norm. Runs in eval mode under ``torch.inference_mode``, in float32.

    ``spec`` is a :func:`ddcore.models.clip.load_clip` spec; pass ``loaded`` to reuse a model
    already loaded (``spec`` is then ignored and the model's own device used; its train/eval
    mode is restored afterwards). ``num_workers`` -1 picks as training does (0 on CPU).
    """
    import torch
    import torch.nn.functional as F

    from .training.data import EvalImages, eval_transform
    from .training.loop import workers

    if loaded is None:
        from .models.clip import load_clip

        loaded = load_clip(spec, device=device)
    model = loaded.model
    try:
        run_device = next(model.parameters()).device
    except StopIteration:
        run_device = torch.device(device)
    if not samples:
        dim = int(getattr(getattr(model, "visual", None), "output_dim", 0) or 0)
        return np.zeros((0, dim), dtype=np.float32)

    transform = eval_transform(loaded.image_size, loaded.mean, loaded.std)
    loader = torch.utils.data.DataLoader(EvalImages(samples, transform), batch_size=batch_size,
                                         num_workers=workers(num_workers, str(run_device)),
                                         pin_memory=run_device.type == "cuda")
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.inference_mode(), reporter.task("image features", len(samples)) as advance:
            for images, _ in loader:
                embedded = model.encode_image(images.to(run_device, non_blocking=True)).float()
                parts.append(F.normalize(embedded, dim=-1).cpu())
                advance(len(images))
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------- per class


def _unavailable(n_real: int, n_fake: int) -> dict:
    short = [f"{n} {side} image{'s' if n != 1 else ''}" for n, side in ((n_real, "real"), (n_fake, "synthetic"))
             if n < 2]
    return {**{key: None for key in QUALITY_KEYS}, "n_real": n_real, "n_fake": n_fake,
            "reason": f"needs at least 2 real and 2 synthetic images, has {' and '.join(short)}"}


def _entry(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    if real.shape[0] < 2 or fake.shape[0] < 2:
        return _unavailable(int(real.shape[0]), int(fake.shape[0]))
    return set_quality(real, fake, k=k)


def per_class_quality(real: list[Sample], synthetic: list[Sample], classnames: list[str],
                      features: Callable[[list[Sample]], np.ndarray], k: int = 5) -> dict[str, dict]:
    """:func:`set_quality` of the synthetic against the real images, per class and overall.

    ``features`` maps a list of samples to a ``[len(samples), D]`` array; it is called once,
    on ``real + synthetic``, and the rows are split by ``Sample.label`` (an index into
    ``classnames``). E.g. ``lambda s: image_features(spec, s, loaded=loaded)``.

    Returns ``{classname: entry}`` for every class name, in order, plus ``"all"``: every real
    against every synthetic image, classes pooled. An entry is :func:`set_quality`'s dict; a
    class with fewer than 2 images on either side gets ``None`` for the five measures, its
    ``n_real`` / ``n_fake``, and a ``"reason"``. A class may not be named ``"all"`` (ValueError).
    """
    if ALL in classnames:
        raise ValueError(f"a class is named '{ALL}', the key reserved for the all-classes entry")
    samples = list(real) + list(synthetic)
    labels = np.array([s.label for s in samples], dtype=np.int64)
    bad = sorted({int(v) for v in labels if not 0 <= v < len(classnames)})
    if bad:
        raise ValueError(f"sample labels {bad[:10]} are outside the {len(classnames)} classes")
    if samples:
        feats = np.asarray(features(samples))
        if feats.ndim != 2 or feats.shape[0] != len(samples):
            raise ValueError(f"features returned shape {feats.shape} for {len(samples)} samples; expected "
                             f"[{len(samples)}, D]")
    else:
        feats = np.zeros((0, 1), dtype=np.float32)
    is_real = np.arange(len(samples)) < len(real)
    result: dict[str, dict] = {}
    for label, name in enumerate(classnames):
        mine = labels == label
        result[name] = _entry(feats[mine & is_real], feats[mine & ~is_real], k)
    result[ALL] = _entry(feats[is_real], feats[~is_real], k)
    return result


__all__ = ["ALL", "QUALITY_KEYS", "frechet_distance", "image_features", "per_class_quality", "prdc",
           "set_quality"]


# --------------------------------------------------------------------------- Inception features
# Two Inception-v3 networks: the FID one (ddcore.fid_inception, the TensorFlow graph every
# published FID uses) and torchvision's ImageNet one (kept for reports made with it; its
# Fréchet distances compare only with each other).

INCEPTION_FILE = "inception_v3_google-0cc3c7bd.pth"  # torchvision's Inception-v3 ImageNet weights


def inception_weights() -> Path | None:
    """torchvision's Inception-v3 weights if they are in the local torch hub cache
    (``$TORCH_HOME/hub/checkpoints``), else None: nothing is downloaded."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
    return path if path.is_file() else None


def inception_features(samples: list[Sample], weights: Path, *, device: str = "cpu", batch_size: int = 32,
                       reporter=SILENT) -> np.ndarray:
    """2048-d pool features of torchvision's ImageNet Inception-v3 (``weights``: its state
    dict), with its own preprocessing. Not the network of published FIDs (:func:`fid_features`
    is): compare these values with each other only."""
    import torch
    from torchvision.models import Inception_V3_Weights, inception_v3

    model = inception_v3(weights=None, aux_logits=True, init_weights=False)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    model.fc = torch.nn.Identity()
    return network_features(model.eval(), samples, Inception_V3_Weights.IMAGENET1K_V1.transforms(),
                            task="Inception features (torchvision)", device=device, batch_size=batch_size,
                            reporter=reporter)


def fid_features(samples: list[Sample], network, *, device: str = "cpu", batch_size: int = 32,
                 reporter=SILENT) -> np.ndarray:
    """2048-d pool3 features of the FID Inception network (``network``:
    :func:`ddcore.fid_inception.load_fid_inception`'s, loaded once by the caller, as it is
    asked for set after set), preprocessed as pytorch-fid does: the standard FID feature space.
    Their :func:`frechet_distance` is FID."""
    from .fid_inception import fid_transform

    return network_features(network, samples, fid_transform, task="FID Inception features", device=device,
                            batch_size=batch_size, reporter=reporter)


def network_features(model, samples: list[Sample], transform: Callable, *, task: str, device: str = "cpu",
                     batch_size: int = 32, reporter=SILENT) -> np.ndarray:
    """``model``'s outputs (an eval-mode torch module returning ``[B, D]``) for each sample's
    image after ``transform`` (PIL RGB -> tensor), in order, as float32 ``[N, D]``."""
    import torch

    from .training.data import EvalImages

    model.to(device)
    loader = torch.utils.data.DataLoader(EvalImages(samples, transform), batch_size=batch_size)
    parts = []
    with torch.inference_mode(), reporter.task(task, len(samples)) as advance:
        for images, _ in loader:
            parts.append(model(images.to(device)).float().cpu())
            advance(len(images))
    return torch.cat(parts).numpy()
