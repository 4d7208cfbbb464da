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
