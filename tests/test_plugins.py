"""The plugin system: discovery, registries, name errors, broken and disabled plugins."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from ddcore.errors import ConfigError, PluginError
from ddcore.hookspecs import hookimpl
from ddcore.plugins import Plugins
from ddcore.stages import Filter, Method

BUILTINS = {
    "adapter": {"none", "datadream-dset", "datadream-cls"},
    "prompt_builder": {"template", "captions"},
    "generator": {"txt2img", "img2img"},
    "filter": {"none", "clip"},
    "classifier": {"clip-vitb16", "clip-vitl14", "clip-rn50", "timm"},
    "dataset": {"imagefolder", "coop-split", "digits", "imagenet", "caltech101", "dtd", "eurosat", "fgvc_aircraft",
                "oxford_pets", "stanford_cars", "sun397", "food101", "flowers102"},
    "method": {"sd-txt2img", "real-finetune", "zero-shot", "datadream-dset", "datadream-cls", "issynth", "disef"},
}


def fake_distribution(root: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """A real installed-looking distribution: a dist-info folder plus modules, on ``root``."""
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[ddcore]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    return root


class Sharp(Filter):
    """Keeps sharp images."""

    @dataclass
    class Options:
        threshold: float = 0.5
        passes: int = 1
        label: str = "x"
        enabled: bool = True

    def keep(self, images, items):
        return [True] * len(images)


class SharpPlugin:
    def __init__(self, name="sharp"):
        self.filter_name = name

    @hookimpl
    def register_filters(self, register):
        register(self.filter_name, Sharp)


def test_every_builtin_is_registered_by_the_datadream_distribution():
    plugins = Plugins()
    for kind, names in BUILTINS.items():
        assert names <= set(plugins.names(kind)), kind
        for name in names:
            entry = plugins.get(kind, name)
            assert entry.distribution == "datadream"
            assert entry.version
    assert all(info.status == "ok" for info in plugins.infos.values())


def test_unknown_name_lists_what_exists_and_the_closest_match():
    plugins = Plugins()
    with pytest.raises(PluginError) as info:
        plugins.get("generator", "txt2imgg")
    message = str(info.value)
    assert "unknown generator 'txt2imgg'" in message
    assert "available: diffusion-inversion, img2img, txt2img, varireal" in message
    assert "did you mean 'txt2img'?" in message
    assert "\n" not in message


def test_same_name_from_two_plugins_names_both_distributions():
    plugins = Plugins()
    plugins.register(SharpPlugin(), name="one", distribution="dd-sharp-a")
    plugins.register(SharpPlugin(), name="two", distribution="dd-sharp-b")
    with pytest.raises(PluginError) as info:
        plugins.get("filter", "sharp")
    assert "dd-sharp-a" in str(info.value) and "dd-sharp-b" in str(info.value)
    assert "registered twice" in str(info.value)


def test_a_plugin_may_not_reuse_a_builtin_name():
    plugins = Plugins()
    plugins.register(SharpPlugin(name="none"), name="shadow", distribution="dd-shadow")
    with pytest.raises(PluginError, match="dd-shadow"):
        plugins.names("filter")


def test_a_misspelt_hook_marks_only_that_plugin_broken():
    class Misspelt:
        @hookimpl
        def register_filtres(self, register):  # typo on purpose
            register("bad", Sharp)

    plugins = Plugins()
    plugins.register(Misspelt(), name="misspelt", distribution="dd-typo")
    assert plugins.infos["misspelt"].status == "broken"
    assert "register_filtres" in plugins.infos["misspelt"].error
    assert "txt2img" in plugins.names("generator")  # the others still work


def test_registering_something_that_is_not_a_stage_is_an_error():
    class Wrong:
        @hookimpl
        def register_filters(self, register):
            register("wrong", object)

    plugins = Plugins()
    plugins.register(Wrong(), name="wrong", distribution="dd-wrong")
    with pytest.raises(PluginError, match="not a subclass of ddcore.stages.Filter"):
        plugins.names("filter")


def test_entry_point_plugins_load_and_a_broken_one_is_reported_by_name(tmp_path, monkeypatch):
    fake_distribution(
        tmp_path,
        "dd-fake",
        {
            "dd_fake_good": """
                from ddcore.hookspecs import hookimpl
                from ddcore.stages import Method

                @hookimpl
                def register_methods(register):
                    register("fake-method", Method(train_on="real", generator=None))
            """,
            "dd_fake_broken": "raise ImportError('needs a package that is not installed')\n",
        },
        {"fake-good": "dd_fake_good", "fake-broken": "dd_fake_broken"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DD_BUILTIN_PLUGINS_ONLY")
    plugins = Plugins()
    assert plugins.get("method", "fake-method").distribution == "dd-fake"
    broken = plugins.infos["fake-broken"]
    assert broken.status == "broken" and "needs a package" in broken.error
    with pytest.raises(PluginError, match="fake-broken"):
        plugins.get("filter", "whatever")  # the unknown-name error points at the broken plugin
    # Hermetic mode skips third-party entry points entirely.
    monkeypatch.setenv("DD_BUILTIN_PLUGINS_ONLY", "1")
    assert "fake-method" not in Plugins().names("method")


def test_disable_variable_switches_named_plugins_off(monkeypatch):
    monkeypatch.setenv("DD_DISABLE_PLUGINS", "txt2img, builtin-methods, captions, img2img")
    plugins = Plugins()
    assert plugins.infos["txt2img"].status == "disabled"
    assert "txt2img" not in plugins.names("generator")
    # the methods left are those of plugins still on: the datadream plugin and the related methods
    assert {"datadream-cls", "datadream-dset", "diffusion-inversion", "varireal"} <= set(plugins.names("method"))
    assert not {"sd-txt2img", "issynth", "disef"} & set(plugins.names("method"))
    assert "clip-vitb16" in plugins.names("classifier")


def test_options_are_validated_and_converted():
    plugins = Plugins()
    plugins.register(SharpPlugin(), name="sharp", distribution="dd-sharp")
    stage = plugins.create("filter", "sharp", {"threshold": "2", "passes": 3, "label": 7, "enabled": "false"})
    assert stage.options == Sharp.Options(threshold=2.0, passes=3, label="7", enabled=False)
    assert isinstance(stage.options.threshold, float)
    with pytest.raises(ConfigError, match=r"unknown option filter.treshold .*filter.threshold"):
        plugins.create("filter", "sharp", {"treshold": 1})
    with pytest.raises(ConfigError, match="filter.passes must be int"):
        plugins.create("filter", "sharp", {"passes": "many"})


def test_method_presets_are_methods():
    plugins = Plugins()
    assert isinstance(plugins.method("zero-shot"), Method)
    assert plugins.method("zero-shot").train_on == "none"
    assert plugins.method("real-finetune").generator is None


@pytest.mark.slow
def test_dd_plugins_json_lists_every_builtin(run_dd):
    result = run_dd("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    found = {(row["kind"], row["name"]) for row in rows}
    for kind, names in BUILTINS.items():
        for name in names:
            assert (kind, name) in found
    assert all({"kind", "name", "plugin", "version"} <= set(row) for row in rows)
    assert {row["plugin"] for row in rows} == {"datadream"}


@pytest.mark.slow
def test_plugin_commands_and_broken_plugins_through_the_cli(tmp_path, dd_process):
    fake_distribution(
        tmp_path,
        "dd-hello",
        {
            "dd_hello": """
                from ddcore.hookspecs import hookimpl

                @hookimpl
                def register_commands(app):
                    @app.command()
                    def hello(name: str = "world"):
                        print(f"hello {name}")
            """,
            "dd_hello_broken": "import this_module_does_not_exist\n",
        },
        {"hello": "dd_hello", "hello-broken": "dd_hello_broken"},
    )
    env = {"PYTHONPATH": str(tmp_path), "DD_BUILTIN_PLUGINS_ONLY": "0"}
    result = dd_process("hello", "--name", "plugins", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello plugins"
    assert "plugin 'hello-broken' (dd-hello) failed to load" in result.stderr
    listing = dd_process("plugins", "--json", env=env)
    rows = json.loads(listing.stdout)
    assert {"kind": "plugin", "name": "hello-broken", "status": "broken"}.items() <= next(
        r for r in rows if r["name"] == "hello-broken").items()
    disabled = dd_process("plugins", "--json", env={**env, "DD_DISABLE_PLUGINS": "hello-broken"})
    assert "failed to load" not in disabled.stderr
    assert any(r["name"] == "hello-broken" and r["status"] == "disabled" for r in json.loads(disabled.stdout))


def test_dd_plugins_name_shows_every_option_with_its_description_in_80_columns():
    import dataclasses
    import io

    from rich.console import Console

    from dd_cli.render import plugin_detail, plugins_table

    plugins = Plugins()
    console = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    for part in plugin_detail(plugins, "clip-vitb16"):
        console.print(part, highlight=False)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    options = dataclasses.fields(plugins.get("classifier", "clip-vitb16").factory.Options)
    assert len(options) > 20
    flat = " ".join(text.split())
    for f in options:
        assert f"classifier.{f.name} (" in text
        assert " ".join(f.metadata["help"].split()) in flat, f.name
    # The presets that change an option are named (the ViT-L/14 preset is another classifier;
    # a method preset's per-data-set option shows on the adapter).
    adapter = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    for part in plugin_detail(plugins, "datadream-dset"):
        adapter.print(part, highlight=False)
    assert "set by presets: datadream-dset on imagenet=100" in adapter.export_text()
    with pytest.raises(PluginError, match="no plugin registers 'clip-vit16'; did you mean 'clip-vitb16'"):
        plugin_detail(plugins, "clip-vit16")
    # The list of plugins keeps its descriptions readable when piped (80 columns).
    table = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    table.print(plugins_table(plugins, 80))
    listing = table.export_text()
    assert all(len(line) <= 80 for line in listing.splitlines())
    assert "Text-to-image with the prompt" in listing  # several words per line
