"""The generation batch size when ``--batch-size`` is not given: as many images as fit.

On a GPU one image is rendered as a probe (with the generator's own call, guidance, steps and
resolution), its peak memory above the loaded models is taken as the cost of one image in a
batch, and the batch is the share of the free memory that many such images fit in. That
overestimates an image's cost (the probe's peak includes one-off workspace), so the guess errs
on the safe side. Every process must deal blocks of the same size, so the processes agree on
the smallest of their guesses. Elsewhere (the CPU, where a batch buys little) it is
:data:`CPU_BATCH_SIZE`, the size the project used before.

A batch size changes the kernels' float sums, not the seeds: images equal up to one level out
of 255 (docs/scaling.md). Give ``--batch-size`` for files identical across machines.
"""

from __future__ import annotations

from typing import Any, Callable

CPU_BATCH_SIZE = 8
MAX_BATCH_SIZE = 64  # larger batches gain nothing measurable and delay the first finished block
FREE_SHARE = 0.8  # the rest is headroom for the allocator's fragmentation


def batch_size_for(free_bytes: int, bytes_per_image: int, *, most: int = MAX_BATCH_SIZE) -> int:
    """How many images of ``bytes_per_image`` fit in the usable share of ``free_bytes``
    (at least 1, at most ``most``)."""
    fits = int(free_bytes * FREE_SHARE) // max(1, bytes_per_image)
    return max(1, min(most, fits))


def cuda_probe(device: str, render_one: Callable[[], Any]) -> tuple[int, int]:
    """(free bytes after the probe, peak bytes of ``render_one()`` above what was allocated)."""
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    render_one()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    torch.cuda.empty_cache()
    return torch.cuda.mem_get_info(device)[0], peak


def choose_batch_size(device: str, render_one: Callable[[], Any], *, count: int,
                      probe: Callable[[str, Callable[[], Any]], tuple[int, int]] | None = None) -> tuple[int, str]:
    """The batch size for ``device`` and why (for the log); ``count`` images per class bound it
    (a block never spans classes). ``probe``: :func:`cuda_probe` unless a test passes its own."""
    if not device.startswith("cuda"):
        return min(CPU_BATCH_SIZE, max(1, count)), f"{CPU_BATCH_SIZE} off a GPU"
    free, per_image = (probe or cuda_probe)(device, render_one)
    size = batch_size_for(free, per_image, most=min(MAX_BATCH_SIZE, max(1, count)))
    return size, f"{per_image / 2**30:.2f} GiB per image, {free / 2**30:.1f} GiB free"
