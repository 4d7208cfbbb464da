"""The base model's family, read from its model_index.json (ddcore/models/families.py)."""

from __future__ import annotations

import json

import pytest

from ddcore.api import ConfigError, load_sd_pipeline
from ddcore.models.families import family_of


@pytest.mark.parametrize("class_name, family", [
    ("StableDiffusionPipeline", "sd"), ("StableDiffusionInpaintPipeline", "sd"),
    ("StableDiffusionXLPipeline", "sdxl"), ("StableDiffusion3Pipeline", "sd3"), ("FluxPipeline", "flux"),
    ("KandinskyPipeline", None),
])
def test_the_family_is_the_pipeline_class_the_checkpoint_names(class_name, family):
    assert family_of({"_class_name": class_name, "_diffusers_version": "0.30.0"}) == family


@pytest.mark.parametrize("class_name, says", [("StableDiffusionXLPipeline", "of the SDXL family"),
                                              ("FluxPipeline", "of the FLUX.1 family"),
                                              ("KandinskyPipeline", "pipeline class this project does not know")])
def test_a_checkpoint_of_another_family_is_refused_in_one_line_before_its_weights_load(tmp_path, class_name, says):
    # Named "sd-2-1" on purpose: the family comes from model_index.json, never from the name.
    folder = tmp_path / "sd-2-1"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.30.0",
                                                         "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ConfigError) as caught:
        load_sd_pipeline(str(folder))  # there are no weights: reaching them would fail otherwise
    message = str(caught.value)
    assert says in message and class_name in message and "Stable Diffusion 1.x/2.x" in message
    assert "\n" not in message


def test_a_saved_stable_diffusion_folder_still_loads(tmp_path):
    from ddcore.api import save_tiny_sd

    pipe = load_sd_pipeline(str(save_tiny_sd(tmp_path / "tiny-sd")))
    assert type(pipe).__name__ == "StableDiffusionPipeline"


# --------------------------------------------------------------------------- generation on every family

TINY_FAMILY_MODELS = ["tiny-sdxl", "tiny-sd3", "tiny-flux"]


def set_arrays(made) -> dict:
    import numpy as np
    from PIL import Image

    return {row["file_name"]: np.asarray(Image.open(made.root / row["file_name"]), dtype=np.float64) / 255
            for row in made.items}


def generated(tiny_folder, out, model, *flags, **values):
    from ddcore.api import Run

    from conftest import config_for

    run = Run(config_for(tiny_folder, out, "--base-model", model, *flags, **values))
    run.prepare()
    return run, run.generate()


@pytest.mark.parametrize("model", TINY_FAMILY_MODELS)
def test_txt2img_on_each_family_makes_what_plain_pipe_makes(tiny_folder, tmp_path, model):
    """Our generator (each distinct prompt encoded once, its pooled and negative embeddings
    handed to the pipeline) renders what a plain ``pipe(prompt=...)`` with the same seeds does."""
    import numpy as np
    import torch

    from ddcore.api import load_pipeline

    run, made = generated(tiny_folder, tmp_path / "run", model, "--method", "sd-txt2img")
    images = set_arrays(made)
    assert len(images) == 6 and made.items[0]["base_model"] == model
    pipe = load_pipeline(model)
    for row in made.items[:3]:
        plain = pipe(prompt=row["prompt"], generator=torch.Generator().manual_seed(row["seed"]), num_inference_steps=2,
                     guidance_scale=run.config.guidance, height=32, width=32, output_type="np").images[0]
        assert np.abs(images[row["file_name"]] - plain).mean() < 1 / 255, row["file_name"]


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY_FAMILY_MODELS)
def test_a_set_on_each_family_is_the_same_across_batch_sizes_and_a_rerun(tiny_folder, tmp_path, model):
    import numpy as np

    _, one = generated(tiny_folder, tmp_path / "b1", model, "--method", "sd-txt2img", batch_size=1)
    _, four = generated(tiny_folder, tmp_path / "b4", model, "--method", "sd-txt2img", batch_size=4)
    a, b = set_arrays(one), set_arrays(four)
    # at most one level of 255 apart (the kernels sum in another order; docs/scaling.md)
    assert a.keys() == b.keys() and max(np.abs(a[f] - b[f]).max() for f in a) < 1.5 / 255
    # a kill before the stage finished: one image not written, no stage.json; the rerun renders it, the same
    (one.root / one.items[1]["file_name"]).unlink()
    (one.root / "stage.json").unlink()
    _, again = generated(tiny_folder, tmp_path / "b1", model, "--method", "sd-txt2img", batch_size=1)
    assert np.array_equal(set_arrays(again)[one.items[1]["file_name"]], a[one.items[1]["file_name"]])


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY_FAMILY_MODELS)
def test_issynth_img2img_runs_on_each_family(tiny_folder, tmp_path, model):
    _, made = generated(tiny_folder, tmp_path / "run", model, "--method", "issynth")
    row = made.items[0]
    assert len(made.items) == 6 and row["source"] and row["strength"] == 0.75
    # DISEF's DPM-Solver is for SD's noise schedule: a flow-matching model keeps its own
    flow = model in ("tiny-sd3", "tiny-flux")
    assert row["scheduler"] == ("FlowMatchEulerDiscreteScheduler" if flow else "DPMSolverMultistepScheduler")


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_a_folder_saved_by_plain_diffusers_works_as_the_base_model(tmp_path, family):
    from ddcore.api import load_pipeline
    from ddcore.models.tiny import save_tiny_family

    folder = save_tiny_family(family, tmp_path / f"my-{family}")
    pipe = load_pipeline(str(folder))
    assert pipe.dd_family.name == family and pipe.dd_model_id == str(folder.resolve())
    assert type(pipe).__name__ == pipe.dd_family.text_to_image


@pytest.mark.parametrize("method, stage", [("diffusion-inversion", "adapter 'diffusion-inversion'"),
                                           ("varireal", "generator 'varireal'")])
def test_a_stage_written_for_sd_refuses_another_family_before_any_work(tiny_folder, tmp_path, method, stage):
    from ddcore.api import Run

    from conftest import config_for

    run = Run(config_for(tiny_folder, tmp_path / "run", "--method", method, "--base-model", "tiny-sdxl"))
    with pytest.raises(ConfigError) as caught:
        run.prepare()
    message = str(caught.value)
    assert stage in message and "works with Stable Diffusion 1.x/2.x base models" in message and "SDXL" in message
    assert not (tmp_path / "run" / "run.json").exists()  # nothing recorded, nothing trained


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-flux"])  # the family furthest from SD; issynth covers img2img on each
def test_disef_captions_img2img_and_clip_filter_run_on_another_family(tiny_folder, tmp_path, model):
    _, made = generated(tiny_folder, tmp_path / "run", model, "--method", "disef-original", "--set",
                        "prompt_builder.model=tiny",
                        "--set", "prompt_builder.max_new_tokens=4", "--set", "filter.model=tiny",
                        "--set", "filter.max_attempts_per_class=3")
    assert made.items and all(row["family"] == model.removeprefix("tiny-") and row["source"] for row in made.items)


@pytest.mark.parametrize("flag, says", [("generator.step_cache=3", "step_cache works on U-Net models"),
                                        ("generator.negative_prompt=blurry", "FLUX.1 has no negative branch")])
def test_a_generator_option_the_family_cannot_take_is_refused_in_one_line(tiny_folder, tmp_path, flag, says):
    from ddcore.api import Run

    from conftest import config_for

    run = Run(config_for(tiny_folder, tmp_path / "r", "--method", "sd-txt2img", "--base-model", "tiny-flux",
                         "--set", flag))
    run.prepare()
    with pytest.raises(ConfigError, match=says):
        run.generate()
