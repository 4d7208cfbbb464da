"""The ``img2img`` generator and the ``issynth`` method: which shot seeds which image, resume,
strength, batch independence, bad settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddcore.data.images import load_rgb
from ddcore.errors import ConfigError
from ddcore.generation import plan_item
from ddcore.pipeline import Run
from ddcore.plugins import Plugins
from ddcore.records import Prompt, Sample
from dd_plugins.img2img import ISSYNTH_STRENGTH, square_source, tie_prompts_to_shots

from conftest import FAST, config_for


def pixels(path_or_image) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def png_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def shots_by_label(out: Path) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for rel, label, _ in json.loads((out / "fewshot.json").read_text())["shots"]:
        grouped.setdefault(label, []).append(rel)
    return grouped


# --------------------------------------------------------------------------- an identity VAE


def identity_vae(bias: float = 1000.0):
    """A real ``AutoencoderKL`` whose decode(encode(x)) is x to about 1e-3, so a pipeline built
    on it shows what the diffusion did to the source (the tiny random VAE scrambles any image).

    One block (no down-sampling), residual blocks and attention zeroed to identities. The one
    non-linear part, GroupNorm + SiLU before each ``conv_out``, is made linear: ``conv_in`` turns
    every colour x into the group (x, -x, bias), whose mean (bias / 3) and spread (about
    bias * sqrt(2) / 3) hardly depend on x; the norm's scale and shift undo them, and
    ``conv_out`` takes SiLU(x) - SiLU(-x) = x. The log-variance is -30 (std 3e-7)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"],
                        up_block_types=["UpDecoderBlock2D"], block_out_channels=[9], layers_per_block=1,
                        latent_channels=4, norm_num_groups=3, sample_size=32, scaling_factor=1.0)
    with torch.no_grad():
        for p in vae.parameters():
            p.zero_()
        for part in (vae.encoder, vae.decoder):
            for c in range(3):
                part.conv_in.weight[3 * c, c, 1, 1], part.conv_in.weight[3 * c + 1, c, 1, 1] = 1.0, -1.0
                part.conv_in.bias[3 * c + 2] = bias
                for j in (3 * c, 3 * c + 1):
                    part.conv_norm_out.weight[j], part.conv_norm_out.bias[j] = bias * 2**0.5 / 3, bias / 3
                part.conv_out.weight[c, 3 * c, 1, 1], part.conv_out.weight[c, 3 * c + 1, 1, 1] = 1.0, -1.0
        vae.encoder.conv_out.bias[4:] = -30.0
        for conv in (vae.quant_conv, vae.post_quant_conv):
            conv.weight[:, :, 0, 0] = torch.eye(conv.weight.shape[0])
    return vae.eval()


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory) -> Path:
    """A local diffusers folder: the tiny pipeline with the identity VAE (``--base-model DIR``)."""
    from ddcore.models import tiny_sd_pipeline

    vae = identity_vae()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert (vae.decode(vae.encode(x).latent_dist.sample()).sample - x).abs().max() < 0.01
    pipe = tiny_sd_pipeline()
    pipe.vae = vae
    folder = tmp_path_factory.mktemp("identity-vae-sd")
    pipe.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------- tests


def test_issynth_preset_and_strength_options(tiny_folder, tmp_path):
    method = Plugins().method("issynth")
    assert (method.adapter, method.prompt_builder, method.generator, method.filter, method.train_on) == (
        "none", "template", "img2img", "none", "real+synthetic")
    assert method.options == {"generator.strength": 0.75, "generator.scheduler": "DPMSolverMultistepScheduler",
                              "generator.source_fit": "pad"} and ISSYNTH_STRENGTH == 0.75
    assert method.settings == {"steps": 20, "guidance": 8.0}
    assert "He et al" in method.description and "ICLR 2023" in method.description
    run = Run(config_for(tiny_folder, tmp_path / "a", "--method", "issynth", "--set", "generator.strength=0.3"))
    assert run.stages["generator"].options.strength == 0.3
    for bad in ("1.5", "0", "-0.2"):
        with pytest.raises(ConfigError) as error:
            Run(config_for(tiny_folder, tmp_path / "b", "--method", "issynth", "--set", f"generator.strength={bad}"))
        message = str(error.value)
        assert "generator.strength must be in (0, 1]" in message and bad in message and "\n" not in message
    # 1 step at strength 0.5 would run int(0.5) = 0 steps: said before anything is rendered.
    run = Run(config_for(tiny_folder, tmp_path / "c", "--method", "issynth", "--steps", "1",
                         "--set", "generator.strength=0.5"))
    run.prepare()
    with pytest.raises(ConfigError, match=r"leaves no denoising step .*raise --steps") as error:
        run.generate()
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "c").rglob("*.png"))


def test_a_wide_source_is_padded_to_a_square_not_cropped():
    """DISEF's code pads (black, centred): a wide aircraft keeps its wing tips."""
    from PIL import Image

    wide = Image.new("RGB", (64, 32), (200, 10, 10))
    wide.paste((10, 200, 10), (0, 0, 8, 32))  # a green "wing tip" at the left edge
    padded = np.asarray(square_source(wide, 32))
    assert padded.shape == (32, 32, 3)
    assert padded[:6].max() < 10 and padded[-6:].max() < 10  # black bands above and below
    assert padded[16, 1, 1] > 150  # the wing tip is still there
    cropped = np.asarray(square_source(wide, 32, "crop"))
    assert cropped[:6].min() > 5 and cropped[16, 1, 1] < 50  # no band; the wing tip is cut off


def test_prompts_are_tied_to_the_shot_each_image_starts_from():
    shots = [Sample(Path(f"/shots/{i}.png"), 0, "x") for i in range(3)]
    prompts = [Prompt("a"), Prompt("b", source=Path("/captioned.png"))]
    tied = tie_prompts_to_shots(prompts, shots)
    assert len(tied) == 6
    for i in range(30):  # the core plans image i with prompts[i % len(prompts)]
        expected_source = Path("/captioned.png") if i % 2 else shots[i % 3].path
        assert tied[i % len(tied)] == Prompt("ab"[i % 2], expected_source)
    sourced = [Prompt("c", source=Path("/s.png"))]
    assert tie_prompts_to_shots(sourced, shots) is sourced


@pytest.mark.slow
def test_dd_run_issynth_records_each_source_and_resumes_byte_identical(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "run"
    result = run_dd("run", "--data", str(tiny_folder), "--out", str(out), "--method", "issynth", *FAST,
                    "--stop-after", "generate")
    assert result.returncode == 0, result.stderr
    (synthetic,) = (out / "synthetic").iterdir()
    rows = [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    shots = shots_by_label(out)
    for row in rows:
        assert (row["generator"], row["strength"], row["steps"], row["resolution"]) == ("img2img", 0.75, 2, 32)
        assert row["prompt"] == f"a photo of a {row['class']}"
        source = Path(row["source"]).relative_to(tiny_folder).as_posix()
        # Shot index % K of the image's own class, in fewshot.json order (K = 2).
        assert source == shots[row["label"]][row["index"] % 2]
        with Image.open(synthetic / row["file_name"]) as image:
            assert image.size == (32, 32)
    assert sorted((r["label"], r["index"]) for r in rows) == [(c, i) for c in range(3) for i in range(2)]

    # An interrupted run: some images and the metadata missing, the stage not marked finished.
    before = png_bytes(synthetic)
    (synthetic / "red_square" / "00001.png").unlink()
    (synthetic / "blue_stripes" / "00000.png").unlink()
    (synthetic / "metadata.jsonl").unlink()
    (synthetic / "stage.json").unlink()
    run = Run(config_for(tiny_folder, out, "--method", "issynth"))
    run.prepare()
    again = run.generate()
    assert again.root == synthetic
    assert png_bytes(synthetic) == before
    assert [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()] == rows


def same_but_rounding(a: Image.Image, b: Image.Image) -> bool:
    """Equal up to float rounding: a batch of 4 and a batch of 1 take different CPU kernels, which
    can move a pixel by one level (txt2img alike); a batch-dependent seed, noise, source or prompt
    changes most pixels by far more."""
    diff = np.abs(pixels(a) - pixels(b))
    return diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.slow
def test_near_zero_strength_returns_the_recorded_source_and_full_strength_does_not(tiny_folder, tmp_path,
                                                                                   identity_model):
    distances, runs = {}, {}
    for strength, steps in ((0.05, 20), (1.0, 2)):  # 0.05 of 20 steps: only the least noisy step
        out = tmp_path / f"s{strength}"
        # The checkpoint's scheduler, whose last of 20 steps is at t = 1: DPM-Solver's (the preset's)
        # ends at t = 50, where the random tiny U-Net's noise estimate still moves pixels by ~20.
        run = runs[strength] = Run(config_for(tiny_folder, out, "--method", "issynth", "--base-model",
                                              str(identity_model), "--steps", str(steps),
                                              "--set", f"generator.strength={strength}", "--set", "generator.scheduler="))
        run.prepare()
        synthetic = run.generate()
        shots = shots_by_label(out)
        own, other = [], []
        for row in synthetic.items:
            assert row["source"] == str(tiny_folder / shots[row["label"]][row["index"] % 2])
            image = pixels(synthetic.root / row["file_name"])
            for rel in shots[row["label"]]:
                distance = np.abs(image - pixels(square_source(load_rgb(tiny_folder / rel), 32))).mean()
                (own if str(tiny_folder / rel) == row["source"] else other).append(distance)
        distances[strength] = (np.array(own), np.array(other))
    own, other = distances[0.05]
    assert own.max() < 8.0, own  # pixel values 0..255; the other shot of the class is ~20 away
    assert (own < other / 2).all(), (own, other)
    assert distances[1.0][0].min() > 40.0, distances[1.0][0]

    # Image k depends only on its item: alone, in a batch, or in a batch in another order.
    run = runs[0.05]
    generator, context = run.stages["generator"], run.context
    shots = context.shots_by_class()[2]
    prompts = generator.plan_prompts(context, context.prompts)
    items = [plan_item(run.dataset, prompts, 0, 2, i) for i in range(4)]
    assert [item.prompt.source for item in items] == [shots[i % 2].path for i in range(4)]
    batch = generator.generate(items)
    alone = [generator.generate([item])[0] for item in items]
    backwards = generator.generate(items[::-1])[::-1]
    assert all(same_but_rounding(batch[k], alone[k]) and same_but_rounding(batch[k], backwards[k])
               for k in range(4))
    assert not same_but_rounding(batch[0], batch[2])  # same shot, other seed
    # A prompt's own source (as a captions builder sets it) wins over the shot rule: image 0
    # given shot 1 is image "1" (no source: shot 1 % 2) drawn with image 0's seed.
    text = items[0].prompt.text
    given = dataclasses.replace(items[0], prompt=Prompt(text, source=shots[1].path))
    by_rule = dataclasses.replace(items[0], index=1, prompt=Prompt(text))
    from_given, from_rule = generator.generate([given, by_rule])
    assert same_but_rounding(from_given, from_rule)
    assert np.abs(pixels(from_given) - pixels(square_source(load_rgb(shots[1].path), 32))).mean() < 8.0
    assert not same_but_rounding(from_given, batch[0])
