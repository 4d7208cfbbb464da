"""A filter in the style of the plugin guide of ddcore API 0 (before ``ddcore.api``): keeps
every other image by index, so the test knows exactly what must be kept."""

from __future__ import annotations

from dataclasses import dataclass

from ddcore.errors import ConfigError
from ddcore.hookspecs import hookimpl
from ddcore.pipeline import RunContext
from ddcore.records import GenItem
from ddcore.stages import Filter


class EveryOther(Filter):
    """Keep the images whose index has the given parity."""

    @dataclass
    class Options:
        parity: int = 0
        max_attempts_per_class: int = 1000

        def __post_init__(self) -> None:
            if self.parity not in (0, 1):
                raise ConfigError(f"filter.parity must be 0 or 1, not {self.parity}")

    def setup(self, context: RunContext) -> None:
        self.classes = context.dataset.num_classes

    def keep(self, images, items: list[GenItem]) -> list[bool]:
        return [item.index % 2 == self.options.parity for item in items]


@hookimpl
def register_filters(register):
    register("every-other", EveryOther, description="keeps every other image (legacy-style plugin)")
