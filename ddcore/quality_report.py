"""The set-quality report: how close a synthetic image set is to a real one, per class.

Used by ``dd quality`` (any synthetic set against a data set's real images) and by
``dd compare`` (every method's set). The measures are those of :mod:`ddcore.quality`: the
Fréchet distance between Gaussians fitted to the two sets of features, and precision,
recall, density and coverage (Naeem et al. 2020), in a feature space chosen by name:

- ``clip`` or ``clip:SPEC``: L2-normalised open_clip image embeddings (``SPEC`` is any
  ``--classifier-model`` spec, e.g. ``ViT-L-14-quickgelu:openai``, ``local-dir:/models/clip``, ``tiny``;
  plain ``clip`` is ViT-B/16, the paper's classifier);
- ``fid`` or ``fid:PATH``: the 2048-d pool3 features of the FID Inception network
  (:mod:`ddcore.fid_inception`, the TensorFlow graph of published FIDs, as pytorch-fid runs
  it), so the Fréchet distance is the standard FID; the weights file is ``PATH``, else
  ``$DD_FID_WEIGHTS``, else pytorch-fid's cache file in ``$TORCH_HOME/hub/checkpoints``;
- ``inception-torchvision``: the 2048-d pool features of torchvision's ImageNet Inception-v3
  (its weights must be in the torch cache; its distances compare with each other only, not
  with published FIDs). Plain ``inception`` named it before and is now refused, with the two
  new names, so that an old command cannot silently mean either;
- ``pixels``: the image itself, resized to 16x16 RGB in [0, 1] (768 numbers; no model, a crude
  but transparent space for sanity checks).

A report folder holds ``quality.json`` (every number), ``quality.md`` and ``quality.csv`` (one
row per class and one for all classes pooled) and ``quality.png`` (per-class Fréchet distance).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ddcore.errors import ConfigError, ModelNotFoundError
from ddcore.progress import SILENT, Reporter
from ddcore.quality import ALL, QUALITY_KEYS, per_class_quality
from ddcore.records import Sample
from ddcore.store import atomic_write_bytes, atomic_write_json, atomic_write_text

DEFAULT_CLIP = "ViT-B-16-quickgelu:openai"  # the paper's classifier, OpenAI weights
PIXEL_SIZE = 16
SPACES = ("clip", "clip:SPEC", "fid", "fid:PATH", "inception-torchvision", "pixels")
REPORT_FILES = ("quality.json", "quality.md", "quality.csv", "quality.png")

Features = Callable[[list[Sample]], np.ndarray]


def pixel_features(samples: list[Sample], size: int = PIXEL_SIZE) -> np.ndarray:
    """Each image as RGB resized to ``size`` x ``size`` (bilinear), scaled to [0, 1], flattened."""
    from PIL import Image

    from ddcore.data import load_rgb

    rows = [np.asarray(load_rgb(s.path).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32).ravel()
            for s in samples]
    return np.stack(rows) / 255.0 if rows else np.zeros((0, size * size * 3), dtype=np.float32)


def feature_space(space: str, *, device: str = "cpu", reporter: Reporter = SILENT) -> tuple[Features, str]:
    """The feature function of a space named as in the module docstring, and a description of
    it for the report. Each image is embedded once, however often it is asked for. Raises a
    one-line :class:`ConfigError` for an unknown name and :class:`ModelNotFoundError` when the
    space's model is not on disk."""
    kind, _, spec = space.strip().partition(":")
    if kind == "pixels" and not spec:
        compute, described = pixel_features, f"pixels ({PIXEL_SIZE}x{PIXEL_SIZE} RGB)"
    elif kind == "clip":
        compute, described = _clip_space(spec, device, reporter)
    elif kind == "fid":
        compute, described = _fid_space(spec, device, reporter)
    elif kind == "inception-torchvision" and not spec:
        compute, described = _torchvision_inception_space(device, reporter)
    elif kind == "inception":
        raise ConfigError("the feature space 'inception' is now 'fid' (the standard FID network, comparable "
                          "with published FIDs) or 'inception-torchvision' (torchvision's ImageNet Inception-v3, "
                          "what 'inception' meant before)")
    else:
        raise ConfigError(f"unknown feature space '{space}'; choose one of {', '.join(SPACES)}")
    return _embed_once(compute), described


def _clip_space(spec: str, device: str, reporter: Reporter) -> tuple[Features, str]:
    from ddcore.models import load_clip
    from ddcore.quality import image_features

    try:
        loaded = load_clip(spec or DEFAULT_CLIP, device=device)
    except ModelNotFoundError as exc:  # its advice names --classifier-model; here it is --features
        raise ModelNotFoundError(f"{exc} (here: --features clip:SPEC)") from None

    def compute(samples: list[Sample]) -> np.ndarray:
        return image_features(loaded.spec, samples, device=device, loaded=loaded, reporter=reporter)

    return compute, f"{loaded.spec} image features (open_clip, L2-normalised)"


def _fid_space(path: str, device: str, reporter: Reporter) -> tuple[Features, str]:
    from ddcore.fid_inception import load_fid_inception, require_fid_weights
    from ddcore.quality import fid_features

    network = load_fid_inception(require_fid_weights(path or None))  # a wrong file fails before any image is read

    def compute(samples: list[Sample]) -> np.ndarray:
        return fid_features(samples, network, device=device, reporter=reporter)

    return compute, "FID Inception-v3 pool3 features (pytorch-fid's network and weights: FD is FID)"


def _torchvision_inception_space(device: str, reporter: Reporter) -> tuple[Features, str]:
    from ddcore.quality import INCEPTION_FILE, inception_features, inception_weights

    weights = inception_weights()
    if weights is None:
        import torch

        raise ModelNotFoundError(
            f"the inception-torchvision feature space needs torchvision's Inception-v3 weights, not found offline; "
            f"copy {INCEPTION_FILE} into {Path(torch.hub.get_dir()) / 'checkpoints'} or use --features fid, clip "
            f"or pixels")

    def compute(samples: list[Sample]) -> np.ndarray:
        return inception_features(samples, weights, device=device, reporter=reporter)

    return compute, "Inception-v3 pool features (torchvision's ImageNet weights; not FID)"


def _embed_once(compute: Features) -> Features:
    """``compute`` with a cache by image path: ``dd compare`` asks for the real images once per method."""
    cache: dict[Path, np.ndarray] = {}

    def features(samples: list[Sample]) -> np.ndarray:
        missing = list({s.path: s for s in samples if s.path not in cache}.values())
        if missing:
            for sample, row in zip(missing, compute(missing)):
                cache[sample.path] = row
        return np.stack([cache[s.path] for s in samples]) if samples else np.zeros((0, 1), dtype=np.float32)

    return features


def set_quality_report(real: list[Sample], synthetic: list[Sample], classnames: list[str], features: Features,
                       *, space: str, k: int = 5, out: Path | None = None) -> dict[str, Any]:
    """Per class and over all classes: the synthetic set's distance to the real one.

    Returns ``{"space", "k", "n_real", "n_synthetic", "classes": per_class_quality(...)}``;
    with ``out``, also writes the report files (see the module docstring)."""
    if not synthetic:
        raise ConfigError("the synthetic set holds no images")
    if not real:
        raise ConfigError("the real set holds no images")
    result = {"space": space, "k": k, "n_real": len(real), "n_synthetic": len(synthetic),
              "classes": per_class_quality(real, synthetic, classnames, features, k=k)}
    if out is not None:
        write_quality_report(out, result)
    return result


def quality_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per class, then the all-classes row: class, sizes and the five measures."""
    rows = []
    for name, entry in result["classes"].items():
        rows.append({"class": "all" if name == ALL else name, "n_real": entry["n_real"],
                     "n_synthetic": entry["n_fake"], **{key: entry.get(key) for key in QUALITY_KEYS},
                     "note": entry.get("reason", "")})
    return rows[-1:] + rows[:-1]  # the pooled row first: it is the one people read


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def quality_markdown(result: dict[str, Any]) -> str:
    rows = quality_rows(result)
    head = ["class", "real", "synthetic", "FD", "precision", "recall", "density", "coverage"]
    lines = [f"Synthetic vs real images in {result['space']} (k = {result['k']} nearest neighbours). "
             "FD: Fréchet distance, lower is closer; precision and density measure fidelity, recall and "
             "coverage diversity (Naeem et al. 2020).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["class"], row["n_real"], row["n_synthetic"], *(row[key] for key in QUALITY_KEYS)]
        lines.append("| " + " | ".join(_cell(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def quality_csv(result: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["class", "n_real", "n_synthetic", *QUALITY_KEYS, "note"])
    writer.writeheader()
    for row in quality_rows(result):
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


def write_quality_report(out: Path, result: dict[str, Any]) -> Path:
    from ddcore.report import fd_png

    atomic_write_json(out / "quality.json", result)
    atomic_write_text(out / "quality.md", quality_markdown(result))
    atomic_write_text(out / "quality.csv", quality_csv(result))
    atomic_write_bytes(out / "quality.png", fd_png({"synthetic": result["classes"]}))
    return out


# --------------------------------------------------------------------------- dd quality

REAL_SETS = ("train", "val", "test", "shots")


def sets_to_compare(target: Path, config, plugins, real: str = "train") -> tuple[list[Sample], list[Sample], list[str]]:
    """The real and synthetic samples ``dd quality`` compares, and the class names.

    ``target`` is a run folder (its synthetic set, its data set; ``real="shots"`` gives its few
    shots) or a folder of synthetic images (``dd generate``'s, or one sub-folder per class),
    read against the data set ``config`` names."""
    from ddcore.errors import StageError
    from ddcore.generation import load_synthetic_folder
    from ddcore.pipeline import RUN_FILE, load_dataset, load_run

    if real not in REAL_SETS:
        raise ConfigError(f"--real takes {', '.join(REAL_SETS)}, not {real!r}")
    if (target / RUN_FILE).is_file():
        run = load_run(target, plugins)
        run.prepare()
        dataset, shots = run.dataset, run.context.shots
        if run.config.synthetic:
            synthetic = run._external_synthetic()[0]
        else:
            made = run.synthetic()
            if made is None:
                raise StageError(f"run {target} makes no synthetic images (method '{run.config.method}')")
            synthetic = made.samples(dataset)
    else:
        if real == "shots":
            raise ConfigError("--real shots needs a run folder (the shots are the run's)")
        dataset, shots = load_dataset(config, plugins), []
        synthetic, _ = load_synthetic_folder(target, dataset, per_class=1 << 62)
    chosen = {"train": dataset.train, "val": dataset.val, "test": dataset.test, "shots": shots}[real]
    if not chosen:
        raise ConfigError(f"data set '{dataset.name}' has no {real} images; choose another with --real")
    return chosen, synthetic, dataset.classnames
