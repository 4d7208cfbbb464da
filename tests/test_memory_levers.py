"""Memory levers for the large families: model CPU offload and VAE tiling in generation,
8-bit AdamW and gradient checkpointing in adapter training."""

from __future__ import annotations

import pytest
import torch

from ddcore.api import FAMILIES, ConfigError
from ddcore.models.speedups import offload_by_default

from conftest import adapter_training_killed_after, config_for

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


@pytest.mark.parametrize("base, train_text_encoder", [("tiny", "false"), ("tiny-sd3", "true"),
                                                      ("tiny-flux", "false")])
def test_training_steps_never_run_the_frozen_modules_offload_frozen_moves(tiny_folder, tmp_path, monkeypatch, base,
                                                                            train_text_encoder):
    """adapter.offload_frozen moves the VAE, T5 and frozen CLIP encoders off the GPU after setup:
    no training step may need them again (every prompt's frozen embedding is cached up front)."""
    from dd_plugins.datadream import DATASET_GROUP, Group
    from dd_plugins.datadream_training import LoraTrainer

    from ddcore.api import Run

    run = Run(config_for(tiny_folder, tmp_path / "r", "--method", "datadream-dset", "--base-model", base,
                         "--set", f"adapter.train_text_encoder={train_text_encoder}",
                         "--set", "adapter.offload_frozen=on", "--set", "adapter.checkpoint_every=1000"))
    run.prepare()
    run._build_prompts()
    trainer = LoraTrainer(run.stages["adapter"].options, run.context, tmp_path / "adapter")
    family = trainer.family
    frozen = [trainer.vae, *family.frozen_modules(trainer.pipe)]
    if train_text_encoder == "false":
        frozen += list(trainer.text_encoders.values())
    assert len(frozen) == {"tiny": 2, "tiny-sd3": 2, "tiny-flux": 3}[base]

    def refuse(*args, **kwargs):
        raise AssertionError("a frozen module ran during training")

    for module in frozen:
        monkeypatch.setattr(module, "forward", refuse)
    monkeypatch.setattr(trainer.vae, "encode", refuse)
    before = [p.detach().clone() for p in trainer.params]
    trainer.train(Group(DATASET_GROUP, list(range(len(run.context.shots))), 3))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))


def test_a_bad_offload_frozen_is_refused_when_the_run_is_configured(tiny_folder, tmp_path):
    from ddcore.api import Run

    with pytest.raises(ConfigError, match="adapter.offload_frozen must be auto, on or off, not 'yes'"):
        Run(config_for(tiny_folder, tmp_path / "r", "--method", "datadream-dset", "--set", "adapter.offload_frozen=yes"))


@pytest.mark.slow
def test_8bit_adamw_keeps_8bit_state_and_a_killed_training_resumes_to_the_same_lora(tiny_folder, tmp_path,
                                                                                   monkeypatch):
    """bitsandbytes' AdamW8bit (its CPU backend here, CUDA on a GPU): the optimizer's moments are
    8-bit, the LoRA lands near AdamW's but not on it (so the option is in the key), and a killed
    training resumes from its checkpoint, 8-bit state included, to the same weights."""
    from safetensors.torch import load_file

    from dd_plugins import datadream_training

    from ddcore.api import Run

    # rank 128: bitsandbytes keeps 32-bit state for tensors under 4096 values (tiny dims are 32)
    flags = ["--method", "datadream-dset", "--set", "adapter.max_steps=6", "--set", "adapter.lr=1e-2", "--set",
             "adapter.warmup_steps=1", "--set", "adapter.batch_size=2", "--set", "adapter.checkpoint_every=3",
             "--set", "adapter.rank=128"]
    optimizers = []
    make = datadream_training.LoraTrainer._optimizer
    monkeypatch.setattr(datadream_training.LoraTrainer, "_optimizer",
                        lambda self: optimizers.append(make(self)) or optimizers[-1])

    def adapted(name: str, *extra: str):
        run = Run(config_for(tiny_folder, tmp_path / name, *flags, *extra))
        run.prepare()
        return run, load_file(str(run.adapt() / "dataset" / "pytorch_lora_weights.safetensors"))

    eight_run, eight = adapted("eight", "--set", "adapter.optimizer=adamw8bit")
    assert type(optimizers[-1]).__name__ == "AdamW8bit"
    moments = [t for state in optimizers[-1].state.values() for name, t in state.items() if name.startswith("state")]
    assert moments and all(t.dtype == torch.uint8 for t in moments)
    full_run, full = adapted("full")
    assert eight_run.keys()["adapter"] != full_run.keys()["adapter"] and eight.keys() == full.keys()
    moved = [k for k in full if "lora_B" in k or "lora.up" in k]
    difference = sum((eight[k] - full[k]).norm() for k in moved) / sum(full[k].norm() for k in moved)
    assert 0 < difference < 0.2, difference  # 8-bit rounding, not another training

    cut = Run(config_for(tiny_folder, tmp_path / "cut", *flags, "--set", "adapter.optimizer=adamw8bit"))
    cut.prepare()
    with adapter_training_killed_after(4), pytest.raises(KeyboardInterrupt):
        cut.adapt()
    again = Run(config_for(tiny_folder, tmp_path / "cut", *flags, "--set", "adapter.optimizer=adamw8bit"))
    again.prepare()
    resumed = load_file(str(again.adapt() / "dataset" / "pytorch_lora_weights.safetensors"))
    for key in eight:
        torch.testing.assert_close(resumed[key], eight[key], rtol=1e-5, atol=1e-7)
