"""The optimizer-step loop of the adapters' trainers (DataDream's LoRA, Diffusion Inversion's
embeddings): resume from a checkpoint, step, log, checkpoint every so often. Imported by the
trainer modules only, which import torch anyway."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ddcore.api import ProcessInfo, TrainLog, grad_norm, load_state, save_state, sum_across, sum_gradients


def save_checkpoint(path: Path, step: int, optimizer, scheduler, **state: Any) -> None:
    """``{"step", **state, "optimizer", "scheduler"}`` written atomically."""
    save_state(path, {"step": step, **state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})


def train_steps(loss_at: Callable[[int], torch.Tensor], params: list, optimizer, scheduler, *, steps: int,
                checkpoint: Path, restore: Callable[[dict], None], save: Callable[..., None],
                checkpoint_every: int, max_grad_norm: float, reporter, task: str, resuming: str,
                log_dir: Path, part: str | None = None, images_per_step: int | None = None,
                grad_scaler: bool = False, shard: ProcessInfo = ProcessInfo()) -> None:
    """Steps up to ``steps``, from the one the checkpoint (if any) was saved at.

    Per step: ``loss_at(step)``, zero the gradients, backward, sum them over ``shard``'s
    processes (nothing with one), clip their norm to ``max_grad_norm`` (0: no clipping),
    optimizer then scheduler step, a line in ``log_dir/train_log.jsonl`` (``part`` names what
    is trained when a stage trains several). ``save(step, scaler=...)`` every
    ``checkpoint_every`` steps but the last, on the main process only; ``resuming`` names what
    is trained in the resume message.

    ``grad_scaler`` (fp16 weights): the loss is scaled before backward so small gradients do
    not underflow in half precision, and a step whose gradients hold inf or NaN is skipped
    (its scheduler step still counts, as in diffusers' scripts)."""
    scaler = torch.amp.GradScaler(params[0].device.type, enabled=grad_scaler)
    step = 0
    if checkpoint.is_file():
        state = load_state(checkpoint)
        restore(state)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        reporter.log(f"resuming {resuming} at step {step}/{steps}")
    with reporter.task(task, steps) as advance, \
            TrainLog(log_dir, start=step, stage="adapter", part=part, reporter=reporter,
                     enabled=shard.is_main) as log:
        advance(step)
        while step < steps:
            lr = optimizer.param_groups[0]["lr"]
            loss = loss_at(step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            sum_gradients(params, shard)
            scaler.unscale_(optimizer)
            if max_grad_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            else:
                norm = grad_norm(params)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            # Each process's loss is its share of the batch's; their sum is the batch's.
            advance(1, **log.step(step, loss=float(sum_across(loss.detach(), shard)), lr=lr,
                                  grad_norm=float(norm), images=images_per_step))
            if step % checkpoint_every == 0 and step < steps and shard.is_main:
                save(step, scaler=scaler.state_dict() if grad_scaler else None)
