"""An example DataDream plugin: the ``min-contrast`` filter.

A filter sees each batch of generated images with their items (class, index, seed, prompt)
and says which to keep. The core retries with new seeds until each class has its count or
``max_attempts_per_class`` attempts were made, and records kept/dropped counts per class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddcore.api import Filter, hookimpl, option


class MinContrast(Filter):
    """Drop images whose grey-level standard deviation is below ``min_std``."""

    @dataclass
    class Options:
        min_std: float = option(8.0, "keep an image only if its grey-level standard deviation (0-255) is at least this")
        max_attempts_per_class: int = option(1000, "most images tried per class before the class stays short")

    def keep(self, images, items):
        return [float(np.asarray(image.convert("L"), dtype=np.float32).std()) >= self.options.min_std
                for image in images]


@hookimpl
def register_filters(register):
    register("min-contrast", MinContrast)
