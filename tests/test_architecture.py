"""The shape of the code: the import contracts, the public API, the old import paths."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    """pyproject's [tool.importlinter] contracts: the core's layers import downwards only, the
    core imports no plugin and no CLI, the built-in plugins use only ddcore.api."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.count("KEPT") == 3
    # The plugins' contract forbids every core module but the API: a new module must be added.
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    forbidden = set(next(c for c in contracts if c.get("source_modules") == ["dd_plugins"])["forbidden_modules"])
    core = {f"ddcore.{p.stem}" for p in (ROOT / "ddcore").iterdir()
            if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("__")}
    assert forbidden == core - {"ddcore.api"}


def test_every_api_name_resolves_and_the_version_is_declared():
    import ddcore.api as api

    assert isinstance(api.API_VERSION, tuple) and len(api.API_VERSION) == 2
    assert all(isinstance(part, int) for part in api.API_VERSION)
    assert set(api._LAZY) <= set(api.__all__) and len(set(api.__all__)) == len(api.__all__)
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        api.nope  # noqa: B018


def test_the_light_part_of_the_api_does_not_import_torch():
    code = "import sys; from ddcore.api import hookimpl, Filter, option, RunContext; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_the_older_import_paths_still_work():
    """What docs/plugins.md taught before ddcore.api: the same objects, not copies."""
    import ddcore.api as api
    from ddcore.errors import ConfigError
    from ddcore.generation import image_seed
    from ddcore.hookspecs import hookimpl
    from ddcore.pipeline import RunContext
    from ddcore.plugins import build_options, parse_value
    from ddcore.records import GenItem
    from ddcore.stages import STAGE_KINDS, TRAIN_ON, Filter
    from ddcore.store import stable_seed

    assert (RunContext, hookimpl, Filter, GenItem, ConfigError) == (
        api.RunContext, api.hookimpl, api.Filter, api.GenItem, api.ConfigError)
    assert image_seed is api.image_seed and stable_seed is api.derive_seed
    assert parse_value("3") == 3 and build_options.__module__ == "ddcore.options"
    assert "adapter" in STAGE_KINDS and "none" in TRAIN_ON


def _ddcore_imports(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ddcore":
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names if a.name.split(".")[0] == "ddcore"}
    return modules


def test_examples_benchmarks_and_the_plugin_guide_use_only_the_api():
    files = [*ROOT.glob("examples/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    assert len(files) >= 5
    for path in files:
        assert _ddcore_imports(path.read_text()) <= {"ddcore.api"}, path
    guide = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    assert blocks
    for block in blocks:
        assert _ddcore_imports(block) <= {"ddcore.api"}, block[:200]


def test_the_core_reads_no_stage_option_by_guessing():
    """Stage capabilities are declared on the base classes (ddcore.stages), not probed with
    getattr/hasattr on a stage's options."""
    pattern = re.compile(r"(getattr|hasattr)\([^)]*options")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "ddcore").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_derived_seeds_live_in_one_module():
    """The seed formulas (ddcore/seeds.py) appear nowhere else."""
    formulas = re.compile(r"1_000_003|\* 7919|default_rng\(\[")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for folder in ("ddcore", "plugins") for p in (ROOT / folder).rglob("*.py")
                 if p.name != "seeds.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if formulas.search(line)]
    assert offenders == []


def test_every_built_in_option_has_a_description():
    import dataclasses

    from ddcore.plugins import Plugins

    plugins = Plugins()
    missing = [f"{kind}.{name}.{f.name}" for kind, registry in plugins.registries.items() if kind != "method"
               for name, entry in registry.items() for f in dataclasses.fields(entry.factory.Options)
               if not f.metadata.get("help")]
    assert missing == []


def test_the_core_names_no_built_in_plugin():
    """Defaults are registered by the plugins (``register(..., default=True)``); the core asks
    for them by role. "none" is exempt: it is also a --train-on value."""
    from ddcore.plugins import Plugins

    names = {name for registry in Plugins().registries.values() for name in registry} - {"none"}
    assert {"datadream-dset", "clip-vitb16", "digits", "txt2img", "template"} <= names
    # Words that are also plugin names but mean something else where they stand.
    other_meanings = {
        ("ddcore/quality_report.py", "clip"),  # the set-quality feature space (--features clip)
        ("ddcore/report.py", "zero-shot"),  # the label of --train-on none in the tables
        ("ddcore/doctor.py", "timm"), ("ddcore/compat.py", "timm"),  # the PyPI package
        ("ddcore/data/digits.py", "digits"),  # the folder the digits are written to
    }
    found = []
    for path in (ROOT / "ddcore").rglob("*.py"):
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
                    and (where, node.value) not in other_meanings):
                found.append(f"{where}:{node.lineno} {node.value!r}")
    assert found == []


def test_defaults_come_from_the_plugins_that_register_them():
    from ddcore.errors import PluginError
    from ddcore.plugins import Plugins
    from ddcore.stages import UNSET, Method

    plugins = Plugins()
    assert (plugins.default("method"), plugins.default("classifier")) == ("datadream-dset", "clip-vitb16")
    assert [plugins.default("dataset", r) for r in ("demo", "folder", "split")] == ["digits", "imagefolder",
                                                                                      "coop-split"]
    # A method naming no stage gets the registered defaults.
    assert Method().adapter == UNSET and plugins.method("issynth").adapter == "none"

    from ddcore.hookspecs import hookimpl

    class Second:
        @hookimpl
        def register_methods(self, register):
            register("mine", Method(), default=True)

    plugins.register(Second(), name="second")
    with pytest.raises(PluginError, match="two plugins register the default method: 'datadream-dset'.*'mine'"):
        plugins.registries  # noqa: B018
