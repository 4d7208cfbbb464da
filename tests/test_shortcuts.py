"""The sampling shortcuts that change the images (step caching, token merging, fewer
DPM-Solver++ steps): off by default, in the stage key and metadata.jsonl when on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ddcore.api import option
from ddcore.options import keyed_options

from conftest import config_for


def test_an_if_set_option_enters_the_key_only_off_its_default():
    @dataclass
    class Options:
        steps: int = option(50, "keyed")
        compile: str = option("off", "speed only", keyed=False)
        shortcut: int = option(0, "keyed when set", keyed="if-set")

    assert keyed_options(Options()) == {"steps": 50}  # an old stage's key is unchanged by the new option
    assert keyed_options(Options(shortcut=3, compile="on")) == {"steps": 50, "shortcut": 3}
    with pytest.raises(ValueError, match="if-set"):
        option(0, "typo", keyed="when-set")


def synthetic(run):
    from PIL import Image

    run.prepare()
    made = run.generate()
    return made, {row["file_name"]: np.asarray(Image.open(made.root / row["file_name"]), dtype=np.float64) / 255
                  for row in made.items}


@pytest.mark.slow
def test_each_shortcut_changes_the_key_records_itself_and_stays_near_the_default(tiny_folder, tmp_path):
    from ddcore.api import Run

    def run(name, *flags):
        return Run(config_for(tiny_folder, tmp_path / name, "--method", "sd-txt2img", *flags))

    default = run("default")
    made, reference = synthetic(default)
    assert made.items[0]["step_cache"] == 0 and made.items[0]["token_merging"] == 0.0
    shortcuts = {
        "step_cache": run("cache", "--set", "generator.step_cache=3"),
        "token_merging": run("tome", "--set", "generator.token_merging=0.5"),
        "dpm": run("dpm", "--set", "generator.scheduler=DPMSolverMultistepScheduler", "--steps", "4"),
    }
    keys = {default.keys()["synthetic"]}
    for name, shortcut in shortcuts.items():
        made, images = synthetic(shortcut)
        keys.add(shortcut.keys()["synthetic"])
        row = made.items[0]
        if name == "dpm":
            assert (row["scheduler"], row["steps"]) == ("DPMSolverMultistepScheduler", 4)
        else:
            assert row[name] == {"step_cache": 3, "token_merging": 0.5}[name]
        assert images.keys() == reference.keys()
        difference = np.mean([np.abs(images[f] - reference[f]).mean() for f in reference])
        assert 0 < difference < 0.05, (name, difference)  # another seed's set differs by ~0.17
    assert len(keys) == 4  # each its own set: never mistaken for the default one
    assert shortcuts["step_cache"].stages["generator"].step_cache.cached_steps > 0


@pytest.mark.parametrize("flags, says", [
    (["generator.step_cache=3", "generator.compile=on"], "step_cache cannot be combined with generator.compile"),
    (["generator.step_cache=-1"], "step_cache must be 0"),
    (["generator.token_merging=1.5"], r"token_merging \(ToMe's ratio\) must be in \[0, 1\)"),
])
def test_a_bad_shortcut_is_refused_when_the_run_is_configured(tiny_folder, tmp_path, flags, says):
    from ddcore.api import ConfigError, Run

    with pytest.raises(ConfigError, match=says):
        Run(config_for(tiny_folder, tmp_path / "r", "--method", "sd-txt2img",
                       *[part for flag in flags for part in ("--set", flag)]))
