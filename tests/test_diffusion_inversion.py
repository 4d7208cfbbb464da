"""Diffusion Inversion: the embedding adapter (shapes, order, groups, exact resume), the
generator (conditioning and the unconditional mean against plain diffusers, perturbations,
per-image metadata, guidance choices), the method end to end, and the one-line errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from ddcore.api import train_logs
from ddcore.errors import ConfigError, StageError
from ddcore.generation import plan_item
from ddcore.pipeline import Run
from ddcore.plugins import Plugins
from dd_plugins.diffusion_inversion import DiffusionInversionGenerator
from dd_plugins.diffusion_inversion_training import EmbeddingTrainer

from conftest import FAST, config_for

# 3 classes x 2 shots = 6 shots in groups of 4: groups 0 (4 shots) and 1 (2 shots).
ADAPTER = ["--set", "adapter.steps=4", "--set", "adapter.group_size=4", "--set", "adapter.resolution=32",
           "--set", "adapter.checkpoint_every=2", "--set", "adapter.batch_size=3"]
GENERATOR = ["--set", "generator.steps=2"]
DI = ["--method", "diffusion-inversion", *ADAPTER, *GENERATOR]


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def same_but_rounding(a: Image.Image, b: Image.Image) -> bool:
    """Equal up to float rounding (a batch and a single image take different CPU kernels)."""
    diff = np.abs(pixels(a) - pixels(b))
    return diff.max() <= 1 and (diff > 0).mean() < 0.02


@pytest.fixture(scope="module")
def trained(tiny_folder, tmp_path_factory):
    """A run whose embeddings are learned (4 steps per group, checkpoints at step 2)."""
    run = Run(config_for(tiny_folder, tmp_path_factory.mktemp("di") / "run", *DI))
    run.prepare()
    folder = run.adapt()
    return run, folder


def generator_for(run, folder, **options) -> DiffusionInversionGenerator:
    generator = DiffusionInversionGenerator(DiffusionInversionGenerator.Options(**{"steps": 2, **options}))
    generator.setup(run.context, folder)
    return generator


def test_adapter_writes_one_embedding_per_shot_in_shot_order(trained):
    run, folder = trained
    embeddings = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
    assert embeddings.shape == (6, 5, 32) and embeddings.dtype == torch.float32
    info = json.loads((folder / "embeddings.json").read_text())
    assert (info["tokens"], info["dim"], info["resolution"], info["base_model"]) == (5, 32, 32, "tiny")
    assert (info["steps"], info["group_size"], info["options"]["lr"]) == (4, 4, 3e-2)
    shots = json.loads((run.out / "fewshot.json").read_text())["shots"]
    assert [(r["index"], r["path"], r["label"]) for r in info["embeddings"]] == [
        (i, rel, label) for i, (rel, label, _) in enumerate(shots)]
    assert [r["class"] for r in info["embeddings"]] == [run.dataset.classnames[s[1]] for s in shots]
    # Groups of group_size consecutive shots, their rows the final file's.
    groups = [load_file(str(folder / "groups" / f"{k}.safetensors")) for k in (0, 1)]
    assert [g["indices"].tolist() for g in groups] == [[0, 1, 2, 3], [4, 5]]
    assert torch.equal(torch.cat([g["embeddings"] for g in groups]), embeddings)
    assert sorted(p.name for p in (folder / "groups").iterdir()) == ["0.safetensors", "1.safetensors"]
    assert sorted(p.name for p in folder.iterdir()) == ["embeddings.json", "embeddings.safetensors", "groups",
                                                         "stage.json", "train_log"]  # no checkpoint is left
    # The embeddings moved from their start (uniform in +-0.1, seeded per shot).
    trainer = EmbeddingTrainer.__new__(EmbeddingTrainer)
    trainer.options, trainer.context, trainer.dim = run.stages["adapter"].options, run.context, 32
    start = trainer.initial(list(range(6)))
    assert start.abs().max() <= 0.1 and start.abs().max() > 0.09
    assert torch.equal(trainer.initial([4, 5]), start[4:])  # a shot's start does not depend on its group
    moved = (embeddings - start).abs().amax(dim=(1, 2))
    assert (moved > 1e-2).all(), moved  # 4 Adam steps at lr 3e-2 move every embedding


def test_an_interrupted_training_resumes_to_the_same_embeddings(trained, tiny_folder, tmp_path, monkeypatch):
    _, folder = trained
    expected = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
    real_checkpoint, real_train = EmbeddingTrainer._checkpoint, EmbeddingTrainer.train
    calls, trained_groups = [], []

    def checkpoint_then_die(self, path, *args, **kwargs):
        real_checkpoint(self, path, *args, **kwargs)
        calls.append(path.name)
        if len(calls) == 2:  # group 1's checkpoint at step 2
            raise KeyboardInterrupt

    monkeypatch.setattr(EmbeddingTrainer, "_checkpoint", checkpoint_then_die)
    config = config_for(tiny_folder, tmp_path / "run", *DI)
    run = Run(config)
    run.prepare()
    with pytest.raises(KeyboardInterrupt):
        run.adapt()
    stage = run.stage_dir("adapter").path
    assert calls == ["0.pt", "1.pt"]
    assert (stage / "groups" / "0.safetensors").is_file() and not (stage / "groups" / "1.safetensors").exists()
    assert (stage / "checkpoints" / "1.pt").is_file() and not (stage / "embeddings.safetensors").exists()

    monkeypatch.setattr(EmbeddingTrainer, "_checkpoint", real_checkpoint)
    monkeypatch.setattr(EmbeddingTrainer, "train", lambda self, k, idx: (trained_groups.append(k), real_train(self, k, idx)))
    resumed = Run(config)
    resumed.prepare()
    assert resumed.adapt() == stage
    assert trained_groups == [1]  # group 0 was finished and is kept
    logs = train_logs(stage)  # one log per group; group 1's resumed at its checkpoint, no step twice
    assert list(logs) == ["0", "1"]
    steps = run.stages["adapter"].options.steps
    for part, entries in logs.items():
        assert [e["step"] for e in entries] == list(range(1, steps + 1)) and {e["part"] for e in entries} == {part}
        assert all(e["loss"] > 0 and e["lr"] > 0 and e["grad_norm"] >= 0 for e in entries)
    assert torch.equal(load_file(str(stage / "embeddings.safetensors"))["embeddings"], expected)
    assert not list(stage.rglob("*.pt"))


def test_generator_is_plain_diffusers_with_the_embedding_and_the_mean_as_unconditional(trained):
    from diffusers import StableDiffusionPipeline

    from ddcore.models import tiny_sd_pipeline

    run, folder = trained
    embeddings = load_file(str(folder / "embeddings.safetensors"))["embeddings"]
    exact = generator_for(run, folder, noise=0.0, interpolation=0.0, guidance=3.0)
    prompts = exact.plan_prompts(run.context, run.context.prompts)
    item = plan_item(run.dataset, prompts, 0, 1, 3)  # class 1, image 3: shot 3 % 2 = 1 of class 1
    row = [i for i, s in enumerate(run.context.shots) if s.label == 1][1]
    assert item.prompt.source == run.context.shots[row].path
    assert exact.item_metadata(item)["embedding"] == row
    image = exact.generate([item])[0]
    assert image.size == (32, 32)

    pipe = tiny_sd_pipeline()
    assert isinstance(pipe, StableDiffusionPipeline) and type(pipe.scheduler).__name__ == "DDIMScheduler"
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(prompt_embeds=embeddings[row][None], negative_prompt_embeds=embeddings.mean(0)[None],
                     guidance_scale=3.0, num_inference_steps=2, height=32, width=32, output_type="pil", eta=1.0,
                     generator=torch.Generator("cpu").manual_seed(item.seed)).images[0]
    assert np.abs(pixels(image) - pixels(reference)).max() <= 1
    # Another unconditional embedding (zeros) gives another image: the mean is the one used.
    zeros = pipe(prompt_embeds=embeddings[row][None], negative_prompt_embeds=torch.zeros(1, 5, 32),
                 guidance_scale=3.0, num_inference_steps=2, height=32, width=32, output_type="pil", eta=1.0,
                 generator=torch.Generator("cpu").manual_seed(item.seed)).images[0]
    assert np.abs(pixels(image) - pixels(zeros)).max() > 3
    # Gaussian noise changes the image.
    noisy = generator_for(run, folder, guidance=3.0, noise=0.5, interpolation=0.0).generate([item])[0]
    assert np.abs(pixels(noisy) - pixels(image)).mean() > 1
    # interpolation is the partner's weight: at 1 the image is the partner's embedding alone.
    partner = generator_for(run, folder, guidance=3.0, noise=0.0, interpolation=1.0)
    other_row = [i for i, s in enumerate(run.context.shots) if s.label == 1][0]
    assert partner.item_metadata(item)["partner"] == str(run.context.shots[other_row].path)
    reference = pipe(prompt_embeds=embeddings[other_row][None], negative_prompt_embeds=embeddings.mean(0)[None],
                     guidance_scale=3.0, num_inference_steps=2, height=32, width=32, output_type="pil", eta=1.0,
                     generator=torch.Generator("cpu").manual_seed(item.seed)).images[0]
    from_partner = partner.generate([item])[0]
    assert np.abs(pixels(from_partner) - pixels(reference)).max() <= 1
    assert np.abs(pixels(from_partner) - pixels(image)).max() > 1


@pytest.mark.slow
def test_item_metadata_partner_and_guidance_choices(trained):
    run, folder = trained
    generator = generator_for(run, folder, guidance_choices="2,3,4", noise=0.2)
    prompts = generator.plan_prompts(run.context, run.context.prompts)
    shots = run.context.shots
    label_of = {str(s.path): s.label for s in shots}
    chosen = []
    for label in range(3):
        own = [i for i, s in enumerate(shots) if s.label == label]
        for index in range(6):
            item = plan_item(run.dataset, prompts, 0, label, index)
            meta = generator.item_metadata(item)
            assert meta == generator.item_metadata(item)  # derived from the item alone
            assert meta["embedding"] == own[index % 2] and item.prompt.source == shots[meta["embedding"]].path
            assert label_of[meta["partner"]] == label  # same class, and not the base (K = 2)
            assert meta["partner"] == str(shots[own[(index + 1) % 2]].path)  # recorded like `source`
            assert (meta["noise"], meta["interpolation"]) == (0.2, 0.1)
            chosen.append(meta["guidance"])
    assert set(chosen) == {2.0, 3.0, 4.0}
    # An image is the same alone or in a batch (rendered in sub-batches per guidance value).
    items = [plan_item(run.dataset, prompts, 0, 2, i) for i in range(4)]
    assert len({generator.item_metadata(i)["guidance"] for i in items}) > 1
    batch = generator.generate(items)
    alone = [generator.generate([item])[0] for item in items]
    assert all(same_but_rounding(batch[k], alone[k]) for k in range(4))
    assert not same_but_rounding(batch[0], batch[2])  # same base shot, other seed


@pytest.mark.slow
def test_dd_run_diffusion_inversion_records_each_image_and_reuses_stages(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "run"
    args = ["run", "--data", str(tiny_folder), "--out", str(out), *FAST, *DI]
    result = run_dd(*args)
    assert result.returncode == 0, result.stderr
    (adapter,) = (out / "adapter").iterdir()
    (synthetic,) = (out / "synthetic").iterdir()
    rows = [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()]
    assert sorted((r["label"], r["index"]) for r in rows) == [(c, i) for c in range(3) for i in range(2)]
    info = json.loads((adapter / "embeddings.json").read_text())
    for row in rows:
        assert (row["generator"], row["adapter"], row["steps"], row["resolution"]) == (
            "diffusion-inversion", "diffusion-inversion", 2, 32)
        assert (row["noise"], row["interpolation"], row["guidance"]) == (0.1, 0.1, 2.0)
        base = info["embeddings"][row["embedding"]]
        assert base["label"] == row["label"] and row["source"] == str(tiny_folder / base["path"])
        assert row["partner"] != row["source"]
        assert row["partner"].startswith(str(tiny_folder / "train" / base["class"].replace(" ", "_")))
        assert "text encoder bypassed" in row["conditioning"]
    assert (out / "metrics.json").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in [adapter / "embeddings.safetensors", *synthetic.rglob("*.png")]}
    again = run_dd(*args)
    assert again.returncode == 0, again.stderr
    assert "reusing finished adapter 'diffusion-inversion'" in " ".join(again.stderr.split())
    assert "reusing finished synthetic set" in " ".join(again.stderr.split())
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


@pytest.mark.slow
def test_dd_compare_has_a_diffusion_inversion_row(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "cmp"
    result = run_dd("compare", "--methods", "diffusion-inversion,real-finetune", "--classifiers", "clip-vitb16",
                    "--seeds", "0", "--settings", "real+synthetic", "--out", str(out), "-q", "--data", str(tiny_folder),
                    *FAST, *DI[2:])
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "table.json").read_text())
    assert {(row["setting"], row["method"]) for row in table} == {
        ("real+synthetic", "diffusion-inversion"), ("real", "real-finetune")}
    assert "diffusion-inversion" in (out / "table.md").read_text()


def test_one_line_errors_for_the_wrong_adapter_or_generator(trained, tiny_folder, tmp_path):
    run, folder = trained
    method = Plugins().method("diffusion-inversion")
    assert (method.adapter, method.prompt_builder, method.generator, method.filter, method.train_on) == (
        "diffusion-inversion", "template", "diffusion-inversion", "none", "real+synthetic")
    assert "Zhou et al" in method.description
    # txt2img cannot use the embeddings, and the generator needs its adapter: both pairings fail
    # when the run is built, before any training (Adapter.generators / Generator.adapters).
    with pytest.raises(ConfigError) as error:
        Run(config_for(tiny_folder, tmp_path / "t2i", "--method", "diffusion-inversion", *ADAPTER,
                       "--generator", "txt2img"))
    assert "--generator diffusion-inversion, not 'txt2img'" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ConfigError) as error:
        Run(config_for(tiny_folder, tmp_path / "bare", "--method", "diffusion-inversion", *GENERATOR,
                       "--adapter", "none"))
    assert "--adapter diffusion-inversion, not 'none'" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "t2i").exists() and not (tmp_path / "bare").exists()
    # A stage used on its own still refuses with a line of its own.
    with pytest.raises(ConfigError, match="--generator diffusion-inversion"):
        run.stages["adapter"].load_into(run.context, None, folder)
    # Embeddings learned on another base model.
    other = dataclasses.replace(run.context, config=dataclasses.replace(run.config, base_model=str(tmp_path / "sd")))
    with pytest.raises(StageError, match="learned on base model 'tiny'") as error:
        DiffusionInversionGenerator().setup(other, folder)
    assert "\n" not in str(error.value)
    # A bad option is one line too.
    with pytest.raises(ConfigError, match="guidance_choices") as error:
        DiffusionInversionGenerator.Options(guidance_choices="2,x")
    assert "\n" not in str(error.value)
    assert not list(Path(tmp_path / "bare").rglob("*.png"))
