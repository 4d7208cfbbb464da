"""Memory levers for the large families: model CPU offload and VAE tiling in generation,
8-bit AdamW and gradient checkpointing in adapter training."""

from __future__ import annotations

import pytest

from ddcore.api import FAMILIES, ConfigError
from ddcore.models.speedups import offload_by_default

from conftest import config_for

GiB = 2**30


def test_offload_is_on_by_default_only_where_the_family_does_not_fit():
    assert offload_by_default(FAMILIES["flux"], "cuda:0", total_bytes=24 * GiB)  # FLUX.1 on a 24 GB card
    assert not offload_by_default(FAMILIES["flux"], "cuda:0", total_bytes=80 * GiB)
    assert not offload_by_default(FAMILIES["sd"], "cuda:0", total_bytes=24 * GiB)
    assert offload_by_default(FAMILIES["sdxl"], "cuda", total_bytes=12 * GiB)
    assert not offload_by_default(FAMILIES["flux"], "cpu", total_bytes=1 * GiB)  # nothing to offload to


def test_offload_on_the_cpu_is_refused_in_one_line(tiny_folder, tmp_path):
    from ddcore.api import Run

    run = Run(config_for(tiny_folder, tmp_path / "r", "--method", "sd-txt2img", "--set", "generator.offload=on"))
    run.prepare()
    with pytest.raises(ConfigError, match="generator.offload=on needs a GPU"):
        run.generate()


def test_vae_tiling_is_in_the_key_and_the_metadata(tiny_folder, tmp_path):
    from ddcore.api import Run

    default = Run(config_for(tiny_folder, tmp_path / "a", "--method", "sd-txt2img"))
    tiled = Run(config_for(tiny_folder, tmp_path / "b", "--method", "sd-txt2img", "--set", "generator.vae_tiling=true"))
    assert default.keys()["synthetic"] != tiled.keys()["synthetic"]
    assert default.keys()["data"] == tiled.keys()["data"]
    tiled.prepare()
    made = tiled.generate()
    assert made.items[0]["vae_tiling"] is True and tiled.stages["generator"].base.vae.use_tiling


def test_8bit_adamw_without_bitsandbytes_is_refused_before_anything_loads(tiny_folder, tmp_path, monkeypatch):
    import importlib.util

    from ddcore.api import Run

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match="adamw8bit needs bitsandbytes.*pip install bitsandbytes"):
        Run(config_for(tiny_folder, tmp_path / "r", "--method", "datadream-dset", "--set", "adapter.optimizer=adamw8bit"))


@pytest.mark.parametrize("value, resolved", [("true", "on"), ("false", "off"), ("auto", "auto")])
def test_gradient_checkpointing_takes_auto_on_off_and_the_old_true_false(value, resolved, tiny_folder, tmp_path):
    from ddcore.api import Run

    run = Run(config_for(tiny_folder, tmp_path / "r", "--method", "datadream-dset", "--set",
                         f"adapter.gradient_checkpointing={value}"))
    assert run.stages["adapter"].options.gradient_checkpointing == resolved
