"""Writing generated images off the render loop.

Encoding a PNG and writing it (fsync, rename) takes as long as a denoising step of a small
model, and the accelerator would wait for it. An :class:`ImageWriter` hands each image to a
few threads (PIL's encoder and the file calls release the GIL) and lets the render loop go on.
It is bounded: at most ``max_pending`` images wait, so memory stays flat when the disk is
slower than the GPU. Files are still written atomically (``atomic_save_image``), and closing
the writer, on success, an error or Ctrl-C, waits for every submitted image, so a rendered
image is never lost to an interruption.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ddcore.store import atomic_save_image


class ImageWriter:
    """``with ImageWriter(workers=2) as writer: writer.save(path, image)``.

    ``workers=0`` writes on the caller's thread (the plain loop, for comparison and debugging).
    The first error of a write (a full disk) is raised by the next ``save`` or by the close.
    """

    def __init__(self, workers: int = 2, max_pending: int | None = None) -> None:
        if workers < 0:
            raise ValueError(f"workers must be 0 or more, got {workers}")
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dd-image-writer") if workers else None
        # Enough waiting images to cover one batch being rendered while the last is written.
        self._slots = threading.BoundedSemaphore(max_pending or max(4, 4 * workers))
        self._futures: list[Future] = []

    def save(self, path: Path, image: Any) -> None:
        if self._pool is None:
            atomic_save_image(path, image)
            return
        self._raise_failed()
        self._slots.acquire()  # blocks while max_pending images wait: the disk sets the pace
        try:
            future = self._pool.submit(atomic_save_image, path, image)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        self._futures.append(future)

    def _raise_failed(self) -> None:
        """Forget the finished writes; raise the first failed one's error (once)."""
        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
        failed = next((f for f in self._futures if f.done()), None)
        if failed is not None:
            self._futures.remove(failed)
            raise failed.exception()

    def close(self) -> None:
        """Wait for every submitted image; raise the first write error."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._raise_failed()

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, exc_type, *exc: Any) -> None:
        if exc_type is None:
            self.close()
            return
        # Already failing (Ctrl-C, a render error): the images rendered so far still reach
        # the disk, and the original error is the one the user sees.
        try:
            self.close()
        except Exception:
            pass
