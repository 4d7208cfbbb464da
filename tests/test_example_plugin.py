"""The example third-party plugin, installed by pip and found through its entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAST

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dd-example-filter"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> Path:
    """pip-install the example into a private folder (not the test environment itself)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-cache-dir", "--target", str(target), str(EXAMPLE)], check=True, capture_output=True)
    assert list(target.glob("dd_example_filter-*.dist-info"))
    return target


@pytest.mark.slow
def test_the_example_plugin_is_listed_with_its_distribution(installed_example, dd_process):
    env = {"PYTHONPATH": str(installed_example), "DD_BUILTIN_PLUGINS_ONLY": "0"}
    rows = json.loads(dd_process("plugins", "--json", env=env).stdout)
    row = next(r for r in rows if r["name"] == "min-contrast")
    assert (row["kind"], row["plugin"], row["version"]) == ("filter", "dd-example-filter", "0.1.0")
    # The hermetic test setting hides it again.
    rows = json.loads(dd_process("plugins", "--json", env={"PYTHONPATH": str(installed_example)}).stdout)
    assert all(r["name"] != "min-contrast" for r in rows)


@pytest.mark.slow
def test_dd_run_selects_the_example_filter(installed_example, tiny_folder, tmp_path, dd_process):
    env = {"PYTHONPATH": str(installed_example), "DD_BUILTIN_PLUGINS_ONLY": "0"}
    base = ["run", "--data", str(tiny_folder), "--method", "sd-txt2img", *FAST, "--filter", "min-contrast"]
    keep = dd_process(*base, "--out", str(tmp_path / "keep"), "--set", "filter.min_std=0", env=env)
    assert keep.returncode == 0, keep.stderr
    counts = json.loads(next((tmp_path / "keep").glob("synthetic/*/counts.json")).read_text())
    assert counts == {name: {"kept": 2, "dropped": 0} for name in ("blue stripes", "green circle", "red square")}
    # A threshold nothing passes: every attempt up to the bound is dropped and recorded, and
    # the run still finishes (on the real shots).
    drop = dd_process(*base, "--out", str(tmp_path / "drop"), "--set", "filter.min_std=1e9",
                  "--set", "filter.max_attempts_per_class=3", env=env)
    assert drop.returncode == 0, drop.stderr
    counts = json.loads(next((tmp_path / "drop").glob("synthetic/*/counts.json")).read_text())
    assert all(c == {"kept": 0, "dropped": 3} for c in counts.values())
    assert not list((tmp_path / "drop").glob("synthetic/*/*/*.png"))


LEGACY = Path(__file__).resolve().parent / "legacy-plugin"


@pytest.mark.slow
def test_a_plugin_written_before_the_api_installs_and_runs_unchanged(tiny_folder, tmp_path, dd_process):
    """ddcore.api's promise: the old import paths (hookspecs, stages, records, errors,
    pipeline.RunContext) keep working for plugins already written against them."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-cache-dir", "--target", str(target), str(LEGACY)], check=True, capture_output=True)
    env = {"PYTHONPATH": str(target), "DD_BUILTIN_PLUGINS_ONLY": "0"}
    result = dd_process("run", "--data", str(tiny_folder), "--method", "sd-txt2img", *FAST, "--filter", "every-other",
                    "--set", "filter.parity=1", "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 0, result.stderr
    synthetic = next((tmp_path / "run").glob("synthetic/*"))
    counts = json.loads((synthetic / "counts.json").read_text())
    # Two kept per class need attempts 0..3; the even ones (0, 2) are dropped.
    assert counts == {name: {"kept": 2, "dropped": 2} for name in ("blue stripes", "green circle", "red square")}
    rows = [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()]
    assert sorted({r["index"] for r in rows}) == [1, 3]
    bad = dd_process("run", "--data", str(tiny_folder), "--method", "sd-txt2img", *FAST, "--filter", "every-other",
                 "--set", "filter.parity=2", "--out", str(tmp_path / "bad"), env=env)
    assert bad.returncode != 0 and "filter.parity must be 0 or 1" in bad.stderr
