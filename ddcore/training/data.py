"""Images for classifier training and inference: transforms, and a cache of decoded images.

Decoding a 512-pixel PNG costs more than the augmentations that follow it, and every epoch
decodes every image again. :class:`DecodedCache` keeps each image decoded, already shrunk to
the smallest size the random crop never has to upsample from, in one shared-memory buffer that
the data-loading worker processes fill and read together.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ddcore.data import load_rgb
from ddcore.records import Sample

# The training augmentations, by name. "datadream": the official DataDream classifier's
# (classify/data.py): RandAugment, a random resized crop of 25-100 % of the area, flip, colour
# jitter (saturation 0.2), greyscale, Gaussian blur and solarization. "simple": the four the
# paper's Appendix B lists (crop of 50-100 %, flip, jitter, greyscale).
AUGMENTATIONS = ("datadream", "simple")
CROP_SCALES = {"datadream": (0.25, 1.0), "simple": (0.5, 1.0)}  # RandomResizedCrop's area range


def train_transform(size: int, mean, std, augment: bool, augmentations: str = "datadream") -> Callable:
    """The training transform: ``augmentations`` (see ``AUGMENTATIONS``), or none at all."""
    from torchvision import transforms as T

    normalize = [T.ToTensor(), T.Normalize(mean, std)]
    if not augment:
        return eval_transform(size, mean, std)
    crop = T.RandomResizedCrop(size, scale=CROP_SCALES[augmentations], interpolation=T.InterpolationMode.BICUBIC)
    if augmentations == "simple":
        return T.Compose([crop, T.RandomHorizontalFlip(), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                          T.RandomGrayscale(p=0.2), *normalize])
    # The official blur is PIL's with a radius drawn from U(0.1, 2); torchvision's sigma range is
    # the same, on a kernel wide enough for sigma 2 (23 px, as BYOL's and DINO's at 224 px).
    return T.Compose([
        T.RandAugment(),  # before the crop, as in the official code
        crop,
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.2),
        T.RandomSolarize(128, p=0.2),
        *normalize,
    ])


def eval_transform(size: int, mean, std) -> Callable:
    """Resize the shorter side (bicubic) and centre-crop: open_clip's own test transform."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(mean, std)])


def cache_side(size: int, augment: bool, augmentations: str = "datadream") -> int:
    """The shorter side to keep: a crop of the smallest allowed area, resized to ``size``,
    is then never upsampled."""
    return math.ceil(size / math.sqrt(CROP_SCALES[augmentations][0])) if augment else size


class DecodedCache:
    """Decoded RGB images, shorter side shrunk to ``side``, in one uint8 buffer.

    Slots are laid out from the image headers (cheap to read) up to ``budget_bytes``; images
    past the budget, or whose decoded size differs from their header (EXIF rotation), are
    decoded each time. With ``shared=True`` the buffer lives in shared memory, so worker
    processes fill it for each other.
    """

    def __init__(self, paths: list[Path], side: int, budget_bytes: int, shared: bool) -> None:
        self.paths, self.side = paths, side
        shapes, offsets, used, full = [], [], 0, False
        for path in paths:
            # Once the budget is spent, no more headers are read: with a large set that would
            # be a start-up cost for nothing.
            shape = None if full else self._shape(path)
            need = shape[0] * shape[1] * 3 if shape else 0
            if shape is not None and used + need > budget_bytes:
                shape, full = None, True
            if shape is None:
                shapes.append(None)
                offsets.append(0)
                continue
            shapes.append(shape)
            offsets.append(used)
            used += need
        self.shapes, self.offsets = shapes, offsets
        self.pixels = torch.empty(max(used, 1), dtype=torch.uint8)
        self.filled = torch.zeros(len(paths), dtype=torch.bool)
        if shared:
            self.pixels.share_memory_()
            self.filled.share_memory_()
        self.cached_images = sum(s is not None for s in shapes)
        self.nbytes = used

    def _shape(self, path: Path) -> tuple[int, int] | None:
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception:  # noqa: BLE001 - load_rgb reports unreadable files properly later
            return None
        return self._scaled(w, h)

    def _scaled(self, w: int, h: int) -> tuple[int, int]:
        """(height, width) once the shorter side is at most ``side``."""
        if min(w, h) <= self.side:
            return (h, w)
        scale = self.side / min(w, h)
        return (max(1, round(h * scale)), max(1, round(w * scale)))

    def get(self, i: int) -> Image.Image:
        shape = self.shapes[i]
        if shape is not None and bool(self.filled[i]):
            h, w = shape
            start = self.offsets[i]
            return Image.fromarray(self.pixels[start:start + h * w * 3].view(h, w, 3).numpy())
        image = load_rgb(self.paths[i])
        if shape is None:
            return image
        h, w = shape
        if self._scaled(*image.size) != shape:
            return image  # rotated by its EXIF tag: the slot has the wrong shape
        if image.size != (w, h):
            image = image.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
        start = self.offsets[i]
        self.pixels[start:start + h * w * 3] = torch.from_numpy(np.array(image, dtype=np.uint8).reshape(-1))
        self.filled[i] = True
        return image


class TrainImages(torch.utils.data.Dataset):
    """Training images addressed by ``(index, seed)``: the seed fixes the augmentation, so it
    does not depend on which worker loads the image or on an earlier interruption."""

    def __init__(self, samples: list[Sample], is_real: list[bool], transform: Callable,
                 cache: DecodedCache | None) -> None:
        self.samples, self.is_real, self.transform, self.cache = samples, is_real, transform, cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        image = self.cache.get(index) if self.cache is not None else load_rgb(self.samples[index].path)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also seeds CUDA, at ~0.3 ms a call.
            torch.default_generator.manual_seed(seed)
            pixels = self.transform(image)
        return pixels, self.samples[index].label, self.is_real[index]


class EvalImages(torch.utils.data.Dataset):
    def __init__(self, samples: list[Sample], transform: Callable) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.transform(load_rgb(self.samples[i].path)), self.samples[i].label


def shared_memory_free() -> int:
    """Bytes free in /dev/shm (small in many containers), or a large number where it is absent."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return 1 << 40
    return stat.f_bavail * stat.f_frsize
