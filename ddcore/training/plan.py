"""Which images each training step sees, and Mixup/CutMix, all from seeds.

A step's batch depends only on (seed, epoch, step), never on the number of data-loading
workers or on where an earlier run stopped, so a resumed training draws the same batches and
the same augmentations as an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ddcore.seeds import classifier_epoch_seed, classifier_step_seeds

Batch = list[tuple[int, int]]  # (index into the training items, seed for that image's augmentation)


class TrainingPlan:
    """Steps over ``primary`` items (the synthetic set, or the real shots when there is none);
    with ``secondary`` items (the real shots next to a synthetic set) every step also draws as
    many of those, oversampled: the secondary items are reshuffled each time they run out, so
    every shot is seen equally often."""

    def __init__(self, primary, secondary, batch_size: int, epochs: int, seed: int) -> None:
        self.primary = np.asarray(primary, dtype=np.int64)
        self.secondary = np.asarray(secondary, dtype=np.int64)
        self.batch_size, self.epochs, self.seed = batch_size, epochs, seed
        self._order: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.primary) / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def batch(self, step: int) -> tuple[Batch, Batch]:
        """The (primary, secondary) items of global step ``step``."""
        epoch, within = divmod(step, self.steps_per_epoch)
        primary, secondary = self._epoch_order(epoch)
        lo, hi = within * self.batch_size, min((within + 1) * self.batch_size, len(self.primary))
        base = self._seed_block(step)
        first = [(int(i), base + k) for k, i in enumerate(primary[lo:hi])]
        second = [(int(i), base + 2048 + k) for k, i in enumerate(secondary[lo:hi])] if len(secondary) else []
        return first, second

    def step_seed(self, step: int) -> int:
        """The seed of a step's own randomness (dropout, Mixup/CutMix)."""
        return self._seed_block(step) + 4095

    def _seed_block(self, step: int) -> int:
        """Each step owns 4096 seeds: primary images, secondary images from 2048, its own last."""
        return classifier_step_seeds(self.seed, step)


    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng(classifier_epoch_seed(self.seed, epoch))
            primary = rng.permutation(self.primary)
            secondary = self.secondary
            if len(secondary):
                needed = self.steps_per_epoch * self.batch_size
                rounds = math.ceil(needed / len(secondary))
                secondary = np.concatenate([rng.permutation(self.secondary) for _ in range(rounds)])[:needed]
            self._order = (epoch, (primary, secondary))
        return self._order[1]


def soft_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    targets = torch.full((len(labels), num_classes), off, dtype=torch.float32)
    targets.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)
    return targets


def mix_batch(images: torch.Tensor, targets: torch.Tensor, mixup_alpha: float, cutmix_alpha: float,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (one of them, chosen at random when both alphas are positive) between
    each image and its neighbour in the batch, as torchvision's ``v2.MixUp``/``v2.CutMix`` do,
    but drawn from ``seed`` so that a resumed run mixes the same way."""
    if len(images) < 2 or (mixup_alpha <= 0 and cutmix_alpha <= 0):
        return images, targets
    rng = np.random.default_rng(seed)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha))
    rolled_images, rolled_targets = images.roll(1, 0), targets.roll(1, 0)
    if use_cutmix:
        h, w = images.shape[-2:]
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        ry, rx = int(h * math.sqrt(1 - lam) / 2), int(w * math.sqrt(1 - lam) / 2)
        y0, y1, x0, x1 = max(cy - ry, 0), min(cy + ry, h), max(cx - rx, 0), min(cx + rx, w)
        images = images.clone()
        images[..., y0:y1, x0:x1] = rolled_images[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    else:
        images = images * lam + rolled_images * (1.0 - lam)
    return images, targets * lam + rolled_targets * (1.0 - lam)
