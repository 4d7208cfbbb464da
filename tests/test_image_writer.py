"""The image writer: PNGs encoded and written on threads, bounded, nothing lost on errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from ddcore import image_writer
from ddcore.image_writer import ImageWriter
from ddcore.store import atomic_save_image

from test_pipeline import EvenOnly, SeedColour, folder_bytes, job


def noise_image(seed: int, size: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_threads_write_the_same_files_as_the_render_thread(tmp_path):
    images = [noise_image(i) for i in range(12)]
    for workers in (0, 3):
        with ImageWriter(workers) as writer:
            for i, image in enumerate(images):
                writer.save(tmp_path / str(workers) / f"{i:02d}.png", image)
    plain = tmp_path / "plain"
    for i, image in enumerate(images):
        atomic_save_image(plain / f"{i:02d}.png", image)
    assert folder_bytes(tmp_path / "0") == folder_bytes(tmp_path / "3") == folder_bytes(plain)
    assert len(folder_bytes(plain)) == 12
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporary file left behind


def test_at_most_max_pending_images_wait(tmp_path, monkeypatch):
    waiting, most = 0, 0
    lock = threading.Lock()

    def slow_save(path, image):
        nonlocal waiting
        time.sleep(0.02)
        atomic_save_image(path, image)
        with lock:
            waiting -= 1

    monkeypatch.setattr(image_writer, "atomic_save_image", slow_save)
    with ImageWriter(workers=2, max_pending=3) as writer:
        for i in range(12):
            writer.save(tmp_path / f"{i}.png", noise_image(i, 8))
            with lock:
                waiting += 1
                most = max(most, waiting)
    assert len(list(tmp_path.glob("*.png"))) == 12
    assert 2 <= most <= 3  # the render loop overlapped the writes, and never ran ahead of the bound


def test_a_write_error_is_raised_and_the_other_images_are_written(tmp_path):
    (tmp_path / "blocked").write_text("a file where a folder should be")
    writer = ImageWriter(workers=2)
    writer.save(tmp_path / "ok" / "a.png", noise_image(0))
    writer.save(tmp_path / "blocked" / "b.png", noise_image(1))
    with pytest.raises(OSError):  # from a later save, or from the close at the latest
        for i in range(20):
            time.sleep(0.01)
            writer.save(tmp_path / "ok" / f"{i}.png", noise_image(2))
        writer.close()
    writer.close()  # what was submitted before the error reached the disk
    assert "a.png" in {p.name for p in (tmp_path / "ok").iterdir()}
    assert not (tmp_path / "blocked" / "b.png").exists()


def test_an_interruption_waits_for_the_submitted_images_and_keeps_its_error(tmp_path, monkeypatch):
    def slow_save(path, image):
        time.sleep(0.05)
        atomic_save_image(path, image)

    monkeypatch.setattr(image_writer, "atomic_save_image", slow_save)
    with pytest.raises(KeyboardInterrupt):
        with ImageWriter(workers=2) as writer:
            for i in range(5):
                writer.save(tmp_path / f"{i}.png", noise_image(i, 8))
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{i}.png" for i in range(5)]


@pytest.mark.parametrize("filtered", [False, True])
def test_a_generated_set_is_the_same_with_and_without_writer_threads(tmp_path, filtered):
    sets = []
    for writers in (0, 2):
        root = tmp_path / str(writers)
        j = job(root, SeedColour(), filt=EvenOnly() if filtered else None, count=6, batch=4, writers=writers)
        j.run()
        rows = j.finish({}).items
        sets.append((folder_bytes(root), rows))
    assert sets[0] == sets[1] and len(sets[0][0]) == 18
