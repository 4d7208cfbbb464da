"""Every seed the framework derives from the run's ``--seed``, in one module.

Each derived seed is a named function so a reader sees where every random draw comes from and
that none depends on the machine, the process count or the Python version (``hash()`` of a
str does). New code derives its seeds with ``derive(run_seed, "what", ...)``.

The older formulas below are kept exactly: a stage's output folder is keyed by its settings,
not by the formula that seeded it, so changing one would make a fresh run disagree with the
outputs the same key already names (docs/design.md, "Seeds").
"""

from __future__ import annotations

import hashlib


def derive(*parts: object) -> int:
    """A 63-bit seed from parts (``derive(run_seed, "di-init", i)``)."""
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


def image_seed(run_seed: int, label: int, index: int) -> int:
    """The seed of synthetic image ``index`` of class ``label``: the whole set's identity (a
    set is the same whatever the batch size, process count or interruptions)."""
    raw = hashlib.sha256(f"ddcore-image/{run_seed}/{label}/{index}".encode()).digest()
    return int.from_bytes(raw[:8], "little") & (2**63 - 1)


def lora_init_seed(run_seed: int, label: int | None) -> int:
    """DataDream: the fresh LoRA weights of one adapter (``label`` None: the data-set one)."""
    return run_seed * 1_000_003 + (label if label is not None else -1)


def prior_image_seed(run_seed: int, index: int) -> int:
    """DataDream's preservation loss: class image ``index`` made by the base model."""
    return run_seed * 7919 + index


def classifier_step_seeds(run_seed: int, step: int) -> int:
    """The first of the 4096 seeds a classifier training step owns (its images' augmentations
    from 0, the second stream's from 2048, its own Mixup/CutMix and dropout at 4095)."""
    return (run_seed * 1_000_003 + step) * 4096


def classifier_epoch_seed(run_seed: int, epoch: int) -> list[int]:
    """The order of a classifier's training images in one epoch (a numpy ``default_rng`` seed)."""
    return [run_seed, epoch]


def validation_seed(run_seed: int) -> list[int]:
    """Which train images the classifier search holds out for validation (``default_rng``)."""
    return [run_seed, 7]


def fewshot_seed(run_seed: int, label: int) -> list[int]:
    """Which K train images of class ``label`` are the shots (``default_rng``, per class)."""
    return [run_seed, label]


def mix_decision_seed(step_seed: int) -> list[int]:
    """Whether a classifier step mixes its batch (Mixup/CutMix), from the step's own seed."""
    return [step_seed, 1]
