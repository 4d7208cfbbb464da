"""DataDream adapters: training, the diffusers LoRA format, resume, per-class switching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddcore.api import train_logs
from ddcore.errors import StageError
from ddcore.models import save_tiny_sd
from ddcore.pipeline import Run

from conftest import adapter_training_killed_after
from test_pipeline import config_for

ADAPTER = ["--set", "adapter.max_steps=12", "--set", "adapter.lr=0.01", "--set", "adapter.warmup_steps=1",
           "--set", "adapter.batch_size=2"]


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory) -> Path:
    return save_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


def plain_image(base: Path, lora: Path | None, prompt: str, seed: int, steps=2, guidance=2.0, size=32) -> np.ndarray:
    """What a user gets from plain diffusers, no DataDream code involved."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(base), safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if lora is not None:
        # the file named: offline (as here), diffusers before 0.42 will not guess it in a local folder
        pipe.load_lora_weights(str(lora), weight_name="pytorch_lora_weights.safetensors")
    image = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                 generator=torch.Generator().manual_seed(seed)).images[0]
    return np.asarray(image).astype(int)


def run_for(tiny_folder, out, base, method, *extra):
    return Run(config_for(tiny_folder, out, "--method", method, "--base-model", str(base), *ADAPTER, *extra))


@pytest.mark.slow
def test_dset_adapter_loads_in_plain_diffusers_and_matches_our_images(tiny_folder, tiny_sd_folder, tmp_path):
    run = run_for(tiny_folder, tmp_path / "run", tiny_sd_folder, "datadream-dset")
    run.prepare()
    adapter_dir = run.adapt()
    synthetic = run.generate()
    weights = adapter_dir / "dataset" / "pytorch_lora_weights.safetensors"
    assert weights.is_file()
    info = json.loads((adapter_dir / "dataset" / "datadream.json").read_text())
    assert info["base_model"] == str(tiny_sd_folder.resolve()) and info["steps"] == 12
    assert info["prompts"]["red square"] == "a photo of a red square"
    from safetensors.torch import load_file

    keys = load_file(str(weights))
    assert any(k.startswith("unet.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    assert any("to_out" in k for k in keys) and any("out_proj" in k for k in keys)
    row = synthetic.items[0]
    ours = np.asarray(Image.open(synthetic.root / row["file_name"])).astype(int)
    theirs = plain_image(tiny_sd_folder, adapter_dir / "dataset", row["prompt"], row["seed"])
    assert np.abs(ours - theirs).max() <= 1  # the same image, up to rounding
    base = plain_image(tiny_sd_folder, None, row["prompt"], row["seed"])
    assert np.abs(ours - base).max() > 5  # and the adapter really changed it
    assert row["adapter"] == "datadream-dset"


@pytest.mark.slow
def test_interrupted_adapter_training_resumes_to_the_same_weights(tiny_folder, tiny_sd_folder, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from dd_plugins import datadream_training

    extra = ["--set", "adapter.checkpoint_every=5"]
    whole = run_for(tiny_folder, tmp_path / "whole", tiny_sd_folder, "datadream-dset", *extra)
    whole.prepare()
    reference = load_file(str(whole.adapt() / "dataset" / "pytorch_lora_weights.safetensors"))

    run = run_for(tiny_folder, tmp_path / "cut", tiny_sd_folder, "datadream-dset", *extra)
    run.prepare()
    with adapter_training_killed_after(7), pytest.raises(KeyboardInterrupt):
        run.adapt()
    checkpoint = next((tmp_path / "cut").glob("adapter/*/checkpoints/dataset.pt"))
    assert torch.load(checkpoint, weights_only=True)["step"] == 5
    assert [e["step"] for e in train_logs(run.stage_dir("adapter").path)[None]] == [1, 2, 3, 4, 5, 6, 7]
    original = datadream_training.LoraTrainer._loss
    resumed_steps = {"n": 0}

    def counted(self, group, step):
        resumed_steps["n"] += 1
        return original(self, group, step)

    monkeypatch.setattr(datadream_training.LoraTrainer, "_loss", counted)
    again = run_for(tiny_folder, tmp_path / "cut", tiny_sd_folder, "datadream-dset", *extra)
    again.prepare()
    resumed = load_file(str(again.adapt() / "dataset" / "pytorch_lora_weights.safetensors"))
    assert resumed_steps["n"] == 7  # steps 5..11, not 0..11
    assert not checkpoint.exists()
    # The log: steps 1..12, each once, although steps 6 and 7 were logged before the kill too.
    logs = train_logs(again.stage_dir("adapter").path)
    assert list(logs) == [None]
    assert [e["step"] for e in logs[None]] == list(range(1, 13))
    uncut = train_logs(whole.stage_dir("adapter").path)[None]
    assert [e["lr"] for e in logs[None]] == [e["lr"] for e in uncut]
    assert [e["loss"] for e in logs[None]] == pytest.approx([e["loss"] for e in uncut], rel=1e-4)
    assert reference.keys() == resumed.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_cls_trains_one_adapter_per_class_and_switches_them(tiny_folder, tiny_sd_folder, tmp_path):
    run = run_for(tiny_folder, tmp_path / "run", tiny_sd_folder, "datadream-cls", "--set", "adapter.max_steps=0",
                  "--set", "adapter.epochs=4")
    run.prepare()
    adapter_dir = run.adapt()
    folders = sorted(p.name for p in adapter_dir.iterdir() if (p / "pytorch_lora_weights.safetensors").is_file())
    assert folders == ["blue_stripes", "green_circle", "red_square"]
    # The official per-class epochs: 4 epochs * ceil(2 shots / batch 2) = 4 steps for each class.
    for name in folders:
        assert json.loads((adapter_dir / name / "datadream.json").read_text())["steps"] == 4
    synthetic = run.generate()
    for row in (synthetic.items[0], synthetic.items[-1]):
        ours = np.asarray(Image.open(synthetic.root / row["file_name"])).astype(int)
        lora = adapter_dir / row["file_name"].split("/")[0]
        assert np.abs(ours - plain_image(tiny_sd_folder, lora, row["prompt"], row["seed"])).max() <= 1


@pytest.mark.slow
def test_a_missing_class_adapter_is_named(tiny_folder, tiny_sd_folder, tmp_path):
    run = run_for(tiny_folder, tmp_path / "run", tiny_sd_folder, "datadream-cls", "--set", "adapter.max_steps=2")
    run.prepare()
    adapter_dir = run.adapt()
    (adapter_dir / "green_circle" / "pytorch_lora_weights.safetensors").unlink()
    with pytest.raises(StageError, match="adapter of class 'green_circle' is missing"):
        run.generate()


@pytest.mark.slow
def test_an_adapter_from_another_base_model_is_refused(tiny_folder, tiny_sd_folder, tmp_path):
    run = run_for(tiny_folder, tmp_path / "run", tiny_sd_folder, "datadream-dset", "--set", "adapter.max_steps=2")
    run.prepare()
    adapter_dir = run.adapt()
    from ddcore.models import load_sd_pipeline

    pipe = load_sd_pipeline("tiny")
    with pytest.raises(StageError, match=r"trained on base model '.*tiny-sd' but the generator uses 'tiny'"):
        run.stages["adapter"].load_into(run.context, pipe, adapter_dir)


@pytest.mark.slow
def test_ablation_switches_text_encoder_and_preservation(tiny_folder, tiny_sd_folder, tmp_path):
    from safetensors.torch import load_file

    run = run_for(tiny_folder, tmp_path / "run", tiny_sd_folder, "datadream-dset", "--set", "adapter.max_steps=3",
                  "--set", "adapter.train_text_encoder=false", "--set", "adapter.prior_loss_weight=1.0",
                  "--set", "adapter.prior_images=2", "--set", "adapter.rank=4")
    run.prepare()
    keys = load_file(str(run.adapt() / "dataset" / "pytorch_lora_weights.safetensors"))
    assert keys and not any(k.startswith("text_encoder.") for k in keys)
    assert all(t.shape[0] == 4 or t.shape[1] == 4 for k, t in keys.items() if "lora" in k)


@pytest.mark.slow
def test_v_prediction_checkpoints_train_on_velocity(tiny_folder, tmp_path, monkeypatch):
    from diffusers import DDPMScheduler

    base = save_tiny_sd(tmp_path / "tiny-v")
    config = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    (base / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    used = []
    original = DDPMScheduler.get_velocity
    monkeypatch.setattr(DDPMScheduler, "get_velocity", lambda self, *a: used.append(1) or original(self, *a))
    run = run_for(tiny_folder, tmp_path / "run", base, "datadream-dset", "--set", "adapter.max_steps=2")
    run.prepare()
    run.adapt()
    assert len(used) == 2
