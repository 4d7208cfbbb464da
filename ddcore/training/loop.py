"""The classifier training loop, shared by every classifier plugin.

One loop for every classifier, so that methods and classifiers compare on equal terms:

* every step draws a batch of synthetic images and as many real shots (oversampled), and the
  loss is ``lambda * CE(real) + (1 - lambda) * CE(synthetic)``; with only one kind of data it
  is the plain mean cross-entropy;
* AdamW, linear warm-up then cosine decay, gradient-norm clipping as an option;
* gradient accumulation (``micro_batch``) gives the same update as the whole batch at once,
  because the loss is a per-image weighted sum;
* bf16 autocast on CUDA (``amp``); Mixup/CutMix (``mix``, on ``mix_prob`` of the batches) and
  label smoothing as options;
* a checkpoint every ``checkpoint_every`` steps and at the end of each epoch; a resumed run
  continues with the same batches and augmentations as an uninterrupted one.

A plugin describes its model with a :class:`TrainableModel` and calls :func:`train`.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ddcore.checkpoint import load_state, save_state
from ddcore.distributed import grad_norm
from ddcore.errors import ConfigError
from ddcore.options import option
from ddcore.seeds import mix_decision_seed
from ddcore.train_log import TrainLog
from ddcore.records import Sample
from ddcore.training.data import (AUGMENTATIONS, DecodedCache, EvalImages, TrainImages, cache_side,
                                  eval_transform, shared_memory_free, train_transform)
from ddcore.training.plan import TrainingPlan, mix_batch, soft_targets

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainingOptions:
    """Settings of the shared loop; a classifier's ``Options`` inherits them (``--set classifier.lr=1e-5``)."""

    # Defaults: the official DataDream classifier (classify/bash_run.sh, main.py); the paper
    # gives only the batch size, AdamW with cosine annealing and the search grid (docs/fidelity.md).
    epochs: int = option(10, "passes over the training images (the synthetic ones, when there are)", demo=30)
    batch_size: int = option(64, "per step: this many synthetic images, and as many real ones", demo=32)
    micro_batch: int = option(0, ">0: gradient accumulation in chunks of this many images")
    lr: float = option(1e-4, "AdamW learning rate (cosine after a linear warm-up)", demo=3e-3)
    weight_decay: float = option(1e-4, "AdamW weight decay")
    warmup_epochs: float = option(3.0, "linear warm-up over this many epochs' steps")
    warmup_steps: int = option(0, ">0: the warm-up in steps instead of warmup_epochs", demo=5)
    max_grad_norm: float = option(0.0, ">0: clip the gradient norm (the official code does not)")
    mix: bool = option(False, "Mixup/CutMix (one of the two per mixed batch)")
    mix_prob: float = option(0.2, "the share of batches mixed when mix is on (official: 20 %)")
    mixup_alpha: float = option(1.0, "Mixup's Beta(alpha, alpha)")
    cutmix_alpha: float = option(1.0, "CutMix's Beta(alpha, alpha)")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy")
    augment: bool = option(True, "augment the training images (flips, crops; see augmentations)", demo=False)
    augmentations: str = option("datadream", "datadream (the official code's) or simple (the paper's list)")
    amp: bool = option(True, "bf16 autocast on CUDA; ignored on the CPU")
    num_workers: int = option(-1, "data-loading workers; -1: none on the CPU, up to 8 on a GPU")
    cache_gb: float = option(4.0, "decoded-image cache in GB; 0 turns it off")
    checkpoint_every: int = option(500, "steps between checkpoints (and at each epoch's end)")

    def __post_init__(self) -> None:
        if self.augmentations not in AUGMENTATIONS:
            raise ConfigError(f"classifier.augmentations must be one of {', '.join(AUGMENTATIONS)}, "
                              f"not {self.augmentations!r}")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise ConfigError(f"classifier.mix_prob must be between 0 and 1, not {self.mix_prob}")

    def warmup(self, steps_per_epoch: int) -> int:
        """Warm-up steps: ``warmup_steps`` when set, else ``warmup_epochs`` epochs' worth."""
        return self.warmup_steps if self.warmup_steps > 0 else round(self.warmup_epochs * steps_per_epoch)


class TrainableModel:
    """What the loop needs from a classifier plugin's model."""

    module: torch.nn.Module
    image_size: int
    mean: tuple
    std: tuple

    def parameters_to_train(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores ``[N, C]`` with gradients (text features recomputed here, for CLIP)."""
        raise NotImplementedError

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The tensors training changed (LoRA weights, a fine-tuned tower, a head)."""
        raise NotImplementedError

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def workers(option: int, device: str) -> int:
    if option >= 0:
        return option
    return 0 if device == "cpu" else min(8, os.cpu_count() or 1)


def autocast(device: str, enabled: bool):
    if enabled and device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train(model: TrainableModel, data, options: TrainingOptions, *, num_classes: int, seed: int, device: str,
          out_dir: Path, reporter) -> dict[str, Any]:
    """Train ``model`` on ``data`` (a ``TrainingData``), resuming from ``out_dir/checkpoint.pt``.

    Returns a summary for the record: steps, steps per epoch, images in the decoded cache, workers.
    """
    samples = list(data.synthetic) + list(data.real)
    is_real = [False] * len(data.synthetic) + [True] * len(data.real)
    synthetic_ids = list(range(len(data.synthetic)))
    real_ids = list(range(len(data.synthetic), len(samples)))
    primary, secondary = (synthetic_ids, real_ids) if synthetic_ids else (real_ids, [])
    # lambda weighs the real part; with one kind of data, it is a plain mean.
    real_weight = data.real_weight if (synthetic_ids and real_ids) else (1.0 if real_ids else 0.0)
    plan = TrainingPlan(primary, secondary, options.batch_size, options.epochs, seed)
    total = plan.total_steps

    params = model.parameters_to_train()
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    warmup = options.warmup(plan.steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
    start = _resume(out_dir, model, optimizer, scheduler)

    n_workers = workers(options.num_workers, device)
    cache = _cache(samples, model.image_size, options, n_workers)
    dataset = TrainImages(samples, is_real, train_transform(model.image_size, model.mean, model.std, options.augment,
                                                                     options.augmentations),
                          cache)
    batches = (_flatten(plan.batch(step)) for step in range(start, total))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=batches, num_workers=n_workers,
                                         pin_memory=device.startswith("cuda"))
    model.module.train()
    with reporter.task("training classifier", total) as advance, torch.random.fork_rng(devices=[]), \
            TrainLog(out_dir, start=start, stage="classifier", reporter=reporter) as log:
        advance(start)
        for step, (images, labels, real) in enumerate(loader, start):
            torch.manual_seed(plan.step_seed(step))  # dropout: the same after a resume
            images, targets, real = _targets(images, labels, real, num_classes, options, plan.step_seed(step))
            weights = _weights(real, real_weight)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            chunk = options.micro_batch if options.micro_batch > 0 else len(images)
            loss = torch.zeros((), device=device)
            for lo in range(0, len(images), chunk):
                with autocast(device, options.amp):
                    logits = model.logits(images[lo:lo + chunk].to(device, non_blocking=True))
                log_probs = F.log_softmax(logits.float(), dim=-1)
                per_image = -(targets[lo:lo + chunk].to(device) * log_probs).sum(-1)
                part = (weights[lo:lo + chunk].to(device) * per_image).sum()
                part.backward()
                loss += part.detach()
            if options.max_grad_norm > 0:
                norm = float(torch.nn.utils.clip_grad_norm_(params, options.max_grad_norm))
            else:
                norm = grad_norm(params)
            optimizer.step()
            scheduler.step()
            done = step + 1
            advance(1, **log.step(done, loss=float(loss), lr=lr, grad_norm=norm, images=len(images)))
            if done % plan.steps_per_epoch == 0 or (options.checkpoint_every and done % options.checkpoint_every == 0):
                _checkpoint(out_dir, model, optimizer, scheduler, done)
    model.module.eval()
    return {"steps": total, "steps_per_epoch": plan.steps_per_epoch, "warmup_steps": warmup,
            "cached_images": cache.cached_images if cache else 0, "workers": n_workers}


def _flatten(batches: tuple[list, list]) -> list:
    return batches[0] + batches[1]


def _targets(images, labels, real, num_classes, options, seed):
    """Soft targets (label smoothing), with Mixup/CutMix applied within the synthetic part and
    within the real part, never across them (their losses are weighted apart). Returns the
    images, targets and real-mask, synthetic images first."""
    real = real.bool()
    order = torch.argsort(real.int(), stable=True)
    images, labels, real = images[order], labels[order], real[order]
    targets = soft_targets(labels, num_classes, options.label_smoothing)
    # Whether this batch is mixed: a draw of its own (the mix itself draws from seed + k).
    if options.mix and np.random.default_rng(mix_decision_seed(seed)).random() < options.mix_prob:
        parts = [mix_batch(images[mask], targets[mask], options.mixup_alpha, options.cutmix_alpha, seed + k)
                 for k, mask in enumerate((~real, real)) if mask.any()]
        images, targets = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return images, targets, real


def _weights(real: torch.Tensor, real_weight: float) -> torch.Tensor:
    """Per-image loss weights: the real part sums to lambda, the synthetic part to 1 - lambda."""
    n_real, n_synthetic = int(real.sum()), int((~real).sum())
    weights = torch.zeros(len(real))
    if n_real:
        weights[real] = real_weight / n_real
    if n_synthetic:
        weights[~real] = (1.0 - real_weight) / n_synthetic
    return weights


def _cache(samples: list[Sample], size: int, options: TrainingOptions, n_workers: int) -> DecodedCache | None:
    if options.cache_gb <= 0 or options.epochs < 2:
        return None  # one pass decodes each image once anyway
    budget = int(options.cache_gb * 2**30)
    if n_workers > 0:
        budget = min(budget, int(shared_memory_free() * 0.8))
    return DecodedCache([s.path for s in samples], cache_side(size, options.augment, options.augmentations), budget, shared=n_workers > 0)


def _checkpoint(out_dir: Path, model: TrainableModel, optimizer, scheduler, step: int) -> None:
    save_state(out_dir / CHECKPOINT, {"step": step, "model": model.trained_state(), "optimizer": optimizer.state_dict(),
                                      "scheduler": scheduler.state_dict()})


def _resume(out_dir: Path, model: TrainableModel, optimizer, scheduler) -> int:
    path = out_dir / CHECKPOINT
    if not path.is_file():
        return 0
    state = load_state(path)
    model.load_trained_state(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def remove_checkpoint(out_dir: Path) -> None:
    """The final weights supersede the checkpoint."""
    (out_dir / CHECKPOINT).unlink(missing_ok=True)


def predict_scores(logits_fn: Callable[[torch.Tensor], torch.Tensor], samples: list[Sample], transform: Callable, *,
                   num_classes: int, batch_size: int, device: str, num_workers: int, amp: bool,
                   reporter) -> np.ndarray:
    """Class scores ``[len(samples), num_classes]`` from ``logits_fn`` over the images."""
    loader = torch.utils.data.DataLoader(EvalImages(samples, transform), batch_size=batch_size,
                                         num_workers=workers(num_workers, device),
                                         pin_memory=device.startswith("cuda"))
    scores = []
    with torch.inference_mode(), reporter.task("predicting", len(samples)) as advance:
        for images, _ in loader:
            with autocast(device, amp):
                scores.append(logits_fn(images.to(device, non_blocking=True)).float().cpu())
            advance(len(images))
    return torch.cat(scores).numpy() if scores else np.zeros((0, num_classes), dtype=np.float32)


__all__ = ["CHECKPOINT", "TrainableModel", "TrainingOptions", "eval_transform", "predict_scores",
           "remove_checkpoint", "train", "warmup_cosine", "workers"]
