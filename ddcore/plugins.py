"""The plugin manager: entry-point discovery, per-kind registries, name lookup.

Every stage, data set and method, built-in or not, comes from a plugin registered through the
``ddcore`` entry-point group. Loading is isolated per plugin: one that fails to import (or
registers badly) is reported by name and the others keep working.

Environment variables:

``DD_DISABLE_PLUGINS``
    Comma-separated entry-point names not to load (``dd plugins`` shows the names).
``DD_BUILTIN_PLUGINS_ONLY``
    When set to 1, only the plugins of the ``datadream`` distribution itself load; the test
    suite uses this so installed third-party plugins never leak into a test run.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from ddcore import hookspecs
from ddcore.errors import PluginError
from ddcore.kinds import ALL_KINDS, DEFAULT, KINDS, STAGE_KINDS
from ddcore.options import build_options, parse_value  # noqa: F401  (parse_value: an older import path)
from ddcore.stages import BASES, UNSET, Method, Stage

ENTRY_POINT_GROUP = hookspecs.PROJECT
DISABLE_ENV = "DD_DISABLE_PLUGINS"
BUILTINS_ONLY_ENV = "DD_BUILTIN_PLUGINS_ONLY"
OWN_DISTRIBUTION = "datadream"

@dataclass
class PluginInfo:
    """One plugin (an entry point, or an object registered directly)."""

    name: str
    distribution: str
    version: str
    status: str = "ok"  # ok | broken | disabled
    error: str = ""
    hooks: list[str] = field(default_factory=list)


@dataclass
class Entry:
    """One registered name of one kind."""

    kind: str
    name: str
    factory: Any  # a Stage subclass, or a Method for kind "method"
    plugin: str
    distribution: str
    version: str
    description: str = ""


def _disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def _normalise(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


class Plugins:
    """Loads plugins and answers "which stage is called NAME"."""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, Entry]] | None = None
        self._defaults: dict[str, dict[str, Entry]] = {}  # kind -> role -> the entry registered for it
        if load_entry_points:
            self._load_entry_points()

    # -- loading ----------------------------------------------------------------------------

    def _load_entry_points(self) -> None:
        disabled = _disabled_names()
        builtins_only = os.environ.get(BUILTINS_ONLY_ENV, "") not in ("", "0")
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "(unknown)"
            version = ep.dist.version if ep.dist is not None else ""
            if builtins_only and _normalise(dist) != OWN_DISTRIBUTION:
                continue
            if ep.name in disabled:
                self.infos[ep.name] = PluginInfo(ep.name, dist, version, status="disabled")
                continue
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self.infos[ep.name] = PluginInfo(
                    ep.name, dist, version, status="broken", error=f"{type(exc).__name__}: {exc}"
                )
                continue
            self.register(module, name=ep.name, distribution=dist, version=version)

    def register(self, obj: Any, *, name: str, distribution: str = "(local)", version: str = "") -> None:
        """Register a plugin object (a module or an instance with ``@hookimpl`` methods)."""
        if name in self.infos and self.infos[name].status == "ok":
            raise PluginError(
                f"two plugins are called '{name}' ({self.infos[name].distribution} and {distribution}); "
                f"uninstall one or switch one off with {DISABLE_ENV}={name}"
            )
        info = PluginInfo(name, distribution, version)
        try:
            self.pm.register(obj, name=name)
            self.pm.check_pending()  # a misspelt hook name fails here, loudly
        except Exception as exc:
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            info.status, info.error = "broken", f"{type(exc).__name__}: {exc}"
        else:
            info.hooks = sorted(impl_name for impl_name, impls in self._hookimpls_of(name))
        self.infos[name] = info
        self._registries = None

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)
        self._registries = None

    def _hookimpls_of(self, plugin_name: str):
        for hook_name in dir(self.pm.hook):
            caller = getattr(self.pm.hook, hook_name)
            if not isinstance(caller, pluggy.HookCaller):
                continue
            impls = [i for i in caller.get_hookimpls() if i.plugin_name == plugin_name]
            if impls:
                yield hook_name, impls

    @property
    def hook(self):
        return self.pm.hook

    @property
    def broken(self) -> list[PluginInfo]:
        return [i for i in self.infos.values() if i.status == "broken"]

    # -- registries -------------------------------------------------------------------------

    @property
    def registries(self) -> dict[str, dict[str, Entry]]:
        if self._registries is None:
            self._registries = self._collect()
        return self._registries

    def _collect(self) -> dict[str, dict[str, Entry]]:
        registries: dict[str, dict[str, Entry]] = {kind: {} for kind in ALL_KINDS}
        self._defaults = {kind: {} for kind in ALL_KINDS}
        for kind in ALL_KINDS:
            hook_name = KINDS[kind].hook
            # Each implementation is called on its own, so every name knows its plugin.
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = self.infos[impl.plugin_name]
                register = self._register_callback(kind, registries[kind], info)
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    info.status, info.error = "broken", f"{hook_name} raised {type(exc).__name__}: {exc}"
        # A method that leaves a stage to the default gets the registered one, now that all are in.
        defaults = {kind: self._defaults[kind][DEFAULT].name for kind in STAGE_KINDS if DEFAULT in self._defaults[kind]}
        for entry in registries["method"].values():
            entry.factory = entry.factory.with_defaults(defaults)
        return registries

    def _register_callback(self, kind: str, registry: dict[str, Entry], info: PluginInfo) -> Callable:
        def register(name: str, factory: Any, description: str = "", default: bool | str = False) -> None:
            _check_factory(kind, name, factory, info)
            role = DEFAULT if default is True else default or None
            if role is not None and role not in KINDS[kind].roles:
                raise PluginError(f"plugin '{info.name}' registered {kind} '{name}' with default={default!r}; "
                                  f"a {kind} can be the default for {', '.join(map(repr, KINDS[kind].roles))}")
            if name in registry:
                other = registry[name]
                raise PluginError(
                    f"{kind} '{name}' is registered twice: by plugin '{other.plugin}' "
                    f"({other.distribution}) and plugin '{info.name}' ({info.distribution}); "
                    f"uninstall one, or switch one off with {DISABLE_ENV}=<plugin name>"
                )
            doc = description or _first_doc_line(factory)
            registry[name] = Entry(kind, name, factory, info.name, info.distribution, info.version, doc)
            if role is not None:
                if role in self._defaults[kind]:
                    other = self._defaults[kind][role]
                    raise PluginError(
                        f"two plugins register the {role} {kind}: '{other.name}' (plugin '{other.plugin}', "
                        f"{other.distribution}) and '{name}' (plugin '{info.name}', {info.distribution}); "
                        f"uninstall one, or switch one off with {DISABLE_ENV}=<plugin name>")
                self._defaults[kind][role] = registry[name]

        return register

    # -- lookup -----------------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        return sorted(self.registries[kind])

    def get(self, kind: str, name: str) -> Entry:
        registry = self.registries[kind]
        if name in registry:
            return registry[name]
        if name == UNSET:  # a method left the stage to a default no installed plugin provides
            self.default(kind)
        available = ", ".join(sorted(registry)) or "none"
        close = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        broken = [i.name for i in self.broken]
        broken_note = f" (plugins that failed to load: {', '.join(broken)}; see `dd plugins`)" if broken else ""
        raise PluginError(f"unknown {KINDS[kind].label} '{name}'; available: {available}{hint}{broken_note}")

    def default(self, kind: str, role: str = DEFAULT) -> str:
        """The name a plugin registered as the ``role`` default of ``kind``."""
        self.registries  # noqa: B018  (collects the registrations, and with them the defaults)
        entry = self._defaults[kind].get(role)
        if entry is None:
            raise PluginError(f"no installed plugin provides the {role} {kind}; name one with {KINDS[kind].flag} "
                              f"(see `dd plugins`)")
        return entry.name

    def method(self, name: str) -> Method:
        return self.get("method", name).factory

    def create(self, kind: str, name: str, options: dict[str, Any] | None = None) -> Stage:
        """Build the stage ``name`` of ``kind`` with validated options."""
        entry = self.get(kind, name)
        stage = entry.factory(build_options(entry.factory.Options, options or {}, f"{kind} '{name}'", kind))
        stage.name = name
        return stage


def _check_factory(kind: str, name: str, factory: Any, info: PluginInfo) -> None:
    if kind == "method":
        ok = isinstance(factory, Method)
        expected = "a ddcore.stages.Method"
    else:
        ok = isinstance(factory, type) and issubclass(factory, BASES[kind])
        expected = f"a subclass of ddcore.stages.{BASES[kind].__name__}"
    if not ok:
        raise PluginError(f"plugin '{info.name}' registered {kind} '{name}' as {factory!r}, which is not {expected}")


def _first_doc_line(obj: Any) -> str:
    if isinstance(obj, Method):
        return obj.description
    doc = (getattr(obj, "__doc__", "") or "").strip()
    return doc.splitlines()[0] if doc else ""
