"""The optimizer-step loop of the adapters' trainers (DataDream's LoRA, Diffusion Inversion's
embeddings): resume from a checkpoint, step, checkpoint every so often. Imported by the
trainer modules only, which import torch anyway."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ddcore.api import ProcessInfo, atomic_write_bytes, sum_gradients


def save_checkpoint(path: Path, step: int, optimizer, scheduler, **state: Any) -> None:
    """``{"step", **state, "optimizer", "scheduler"}`` written atomically with ``torch.save``."""
    buffer = io.BytesIO()
    torch.save({"step": step, **state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, optimizer, scheduler, restore: Callable[[dict], None]) -> int:
    """The step a checkpoint at ``path`` was saved at (0 when there is none); ``restore(state)``
    puts the trained tensors back, then the optimizer and scheduler states are loaded."""
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    restore(state)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])


def train_steps(loss_at: Callable[[int], torch.Tensor], params: list, optimizer, scheduler, *, steps: int,
                checkpoint: Path, restore: Callable[[dict], None], save: Callable[[int], None],
                checkpoint_every: int, max_grad_norm: float, reporter, task: str, resuming: str,
                shard: ProcessInfo = ProcessInfo()) -> None:
    """Steps up to ``steps``, from the one the checkpoint (if any) was saved at.

    Per step: ``loss_at(step)``, zero the gradients, backward, sum them over ``shard``'s
    processes (nothing with one), clip their norm to ``max_grad_norm`` (0: no clipping),
    optimizer then scheduler step. ``save(step)`` every ``checkpoint_every`` steps but the last,
    on the main process only. ``resuming`` names what is trained in the resume message."""
    step = load_checkpoint(checkpoint, optimizer, scheduler, restore)
    if step:
        reporter.log(f"resuming {resuming} at step {step}/{steps}")
    with reporter.task(task, steps) as advance:
        advance(step)
        while step < steps:
            loss = loss_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sum_gradients(params, shard)
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            advance(1)
            if step % checkpoint_every == 0 and step < steps and shard.is_main:
                save(step)
