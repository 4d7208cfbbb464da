"""DataDream's LoRA adapters on every model family (tiny SDXL, SD3, FLUX saved with plain
diffusers): trained end to end, saved in the family's diffusers LoRA format, reproduced by a
plain ``Pipeline.from_pretrained(base).load_lora_weights(dir)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import FAST_ADAPTER, adapter_training_killed_after, config_for

FAMILIES = ["sdxl", "sd3", "flux"]
WEIGHTS = "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def base_folders(tmp_path_factory):
    from ddcore.models.tiny import save_tiny_family

    root = tmp_path_factory.mktemp("bases")
    return {family: save_tiny_family(family, root / family) for family in FAMILIES}


def trained_run(tiny_folder, out, base, method, *flags):
    from ddcore.api import Run

    # lr 1e-2: a few steps move the tiny LoRA far enough to see in the images
    run = Run(config_for(tiny_folder, out, "--method", method, "--base-model", str(base), *FAST_ADAPTER,
                         "--set", "adapter.lr=1e-2", *flags))
    run.prepare()
    run.adapt()
    return run, run.generate()


def image(made, row) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(made.root / row["file_name"]), dtype=np.float64) / 255


def plain_render(pipe, run, row) -> np.ndarray:
    return pipe(prompt=row["prompt"], generator=torch.Generator().manual_seed(row["seed"]),
                num_inference_steps=run.config.steps, guidance_scale=run.config.guidance, height=32, width=32,
                output_type="np").images[0]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_a_dset_lora_on_each_family_loads_in_plain_diffusers_and_makes_the_same_images(tiny_folder, tmp_path,
                                                                                       base_folders, family):
    from ddcore.api import FAMILIES as KNOWN

    run, made = trained_run(tiny_folder, tmp_path / "run", base_folders[family], "datadream-dset")
    folder = run.adapter_dir() / "dataset"
    keys = set(load_file(folder / WEIGHTS))
    known = KNOWN[family]
    # the denoiser's LoRA, and the CLIP encoders' (paper: text encoder too); never T5's
    assert any(k.startswith(f"{known.denoiser}.") for k in keys)
    for encoder in known.text_encoders:
        assert any(k.startswith(f"{encoder}.") for k in keys), encoder
    assert known.t5 is None or not any(k.startswith(f"{known.t5}.") for k in keys)
    if known.context_projections:  # the joint blocks' text stream is adapted too
        assert any("add_q_proj" in k for k in keys)

    cls = getattr(__import__("diffusers"), known.text_to_image)
    pipe = cls.from_pretrained(str(base_folders[family]), **known.init_arguments(loading=True))
    base_images = [plain_render(pipe, run, row) for row in made.items[:2]]
    pipe.load_lora_weights(str(folder), weight_name=WEIGHTS)
    for row, before in zip(made.items[:2], base_images):
        ours, plain = image(made, row), plain_render(pipe, run, row)
        assert np.abs(ours - plain).mean() < 1 / 255, row["file_name"]
        assert np.abs(ours - before).mean() > 1 / 255  # the LoRA learned something


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_cls_mode_swaps_each_classes_lora_on_one_base(tiny_folder, tmp_path, base_folders, family):
    from ddcore.api import FAMILIES as KNOWN

    run, made = trained_run(tiny_folder, tmp_path / "run", base_folders[family], "datadream-cls")
    known = KNOWN[family]
    cls = getattr(__import__("diffusers"), known.text_to_image)
    pipe = cls.from_pretrained(str(base_folders[family]), **known.init_arguments(loading=True))
    by_class = {}
    for row in made.items:
        by_class.setdefault(row["label"], row)
    assert len(by_class) == 3
    for label, row in sorted(by_class.items()):  # each class's images come from its own LoRA
        pipe.load_lora_weights(str(run.adapter_dir() / run.dataset.class_dirs[label]), weight_name=WEIGHTS,
                               adapter_name=f"class{label}")
        pipe.set_adapters([f"class{label}"])
        assert np.abs(image(made, row) - plain_render(pipe, run, row)).mean() < 1 / 255, row["file_name"]
        pipe.delete_adapters(f"class{label}")


@pytest.mark.slow
def test_an_interrupted_flux_adapter_training_resumes_to_the_same_lora(tiny_folder, tmp_path, base_folders):
    """Checkpoints of a transformer family's LoRA (and its text encoder's) restore exactly."""
    from ddcore.api import Run

    def adapter(out):
        run = Run(config_for(tiny_folder, out, "--method", "datadream-dset", "--base-model",
                             str(base_folders["flux"]), "--set", "adapter.max_steps=6", "--set", "adapter.batch_size=4",
                             "--set", "adapter.warmup_steps=1", "--set", "adapter.checkpoint_every=3"))
        run.prepare()
        return run.adapt() / "dataset"

    reference = load_file(adapter(tmp_path / "whole") / WEIGHTS)
    with adapter_training_killed_after(4), pytest.raises(KeyboardInterrupt):
        adapter(tmp_path / "cut")
    checkpoint = next((tmp_path / "cut").glob("adapter/*/checkpoints/dataset.pt"))
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["step"] == 3 and set(saved["lora"]) == {"transformer", "text_encoder"}
    resumed = load_file(adapter(tmp_path / "cut") / WEIGHTS)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)
