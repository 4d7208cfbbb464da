"""The stages that do nothing: adapter ``none`` and filter ``none``."""

from __future__ import annotations

from ddcore.api import Adapter, Filter, hookimpl


class NoAdapter(Adapter):
    """Use the base generator as it is."""

    trains = False


class KeepAll(Filter):
    """Keep every generated image."""

    passes_all = True

    def keep(self, images, items):
        return [True] * len(images)


@hookimpl
def register_adapters(register):
    register("none", NoAdapter, default=True)


@hookimpl
def register_filters(register):
    register("none", KeepAll, default=True)
