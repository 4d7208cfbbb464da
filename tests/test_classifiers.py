"""Classifiers and their training loop: presets, LoRA targets, the batch plan, resume,
gradient accumulation, Mixup/CutMix, the decoded-image cache, timm, zero-shot, search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CLASSES, FAST, config_for, write_image_folder
from ddcore.errors import ConfigError, DDError, ModelNotFoundError, StageError
from ddcore.models import load_clip, uses_quick_gelu
from ddcore.pipeline import Run
from ddcore.plugins import Plugins
from ddcore.progress import SILENT
from ddcore.records import Sample
from ddcore.stages import TrainingData
from ddcore.training import TrainingOptions, train
from ddcore.training.data import DecodedCache, TrainImages
from ddcore.training.plan import TrainingPlan, mix_batch, soft_targets
from dd_plugins.clip_classifier import PRESETS, ClipModel, merge_lora

# --------------------------------------------------------------------------- presets


@pytest.mark.slow
@pytest.mark.parametrize("preset,arch", [("clip-vitb16", "ViT-B-16"), ("clip-vitl14", "ViT-L-14"), ("clip-rn50", "RN50")])
def test_presets_build_the_quickgelu_architecture(monkeypatch, preset, arch):
    """OpenAI weights need QuickGELU; a wrong activation runs but is silently wrong. The weights
    cannot be downloaded here, so only the download is faked: the architecture is built for real."""
    import open_clip.factory as factory

    monkeypatch.setattr(factory, "download_pretrained", lambda cfg, cache_dir=None: "weights.bin")
    monkeypatch.setattr(factory, "load_checkpoint", lambda model, path, **kw: None)
    spec = PRESETS[preset].Options().model
    assert spec.startswith(arch) and spec.endswith(":openai")
    loaded = load_clip(spec)
    assert uses_quick_gelu(loaded.model)
    assert loaded.model_cfg["quick_gelu"] is True
    # the same architecture under its plain name gets QuickGELU forced
    assert uses_quick_gelu(load_clip(f"{arch}:openai").model)


def test_preset_defaults():
    assert PRESETS["clip-vitb16"].Options().visual == "lora"
    assert PRESETS["clip-vitl14"].Options().visual == "full"  # the paper's App. D
    assert PRESETS["clip-rn50"].Options().visual == "full"
    options = PRESETS["clip-vitb16"].Options()
    assert (options.lora_rank, options.lora_alpha, options.lora_dropout, options.batch_size) == (16, 32, 0.1, 64)


def _clip_model(visual: str, spec: str = "tiny", dropout: float = 0.1) -> ClipModel:
    options = PRESETS["clip-vitb16"].Options(visual=visual, lora_dropout=dropout)
    return ClipModel(load_clip(spec), options, ["a", "b", "c"], ["a photo of a {}."], "cpu", lora=True)


def test_visual_modes_choose_what_trains():
    lora = _clip_model("lora")
    names = [n for n, p in lora.module.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert any(n.startswith("visual.") for n in names) and any(n.startswith("transformer.") for n in names)
    # q and v of every block of both towers: 2 blocks x 2 towers x (q, v) x (A, B)
    assert len(names) == 16 and not any("k_proj" in n or "out_proj" in n for n in names)

    frozen = _clip_model("frozen")
    names = [n for n, p in frozen.module.named_parameters() if p.requires_grad]
    assert names and not any(n.startswith("visual.") for n in names)

    full = _clip_model("full")
    trainable = {n for n, p in full.module.named_parameters() if p.requires_grad}
    assert {n for n, _ in full.module.visual.named_parameters(prefix="visual")} <= trainable
    assert not any(n.startswith("visual.") and "lora_" in n for n in trainable)
    assert set(full.trained_state()) >= {n for n in trainable}


def test_resnet_tower_cannot_take_lora():
    with pytest.raises(ConfigError, match="visual=full"):
        _clip_model("lora", spec="RN50:random")
    full = _clip_model("full", spec="RN50:random")
    state = full.trained_state()
    assert any(k.startswith("visual.") and "running_mean" in k for k in state)  # BatchNorm statistics kept


# --------------------------------------------------------------------------- the batch plan


def test_plan_oversamples_real_shots_evenly_and_is_deterministic():
    plan = TrainingPlan(range(100), range(100, 106), batch_size=8, epochs=2, seed=3)
    assert plan.steps_per_epoch == 13 and plan.total_steps == 26
    seen_primary, seen_real = [], []
    for step in range(plan.steps_per_epoch):
        first, second = plan.batch(step)
        assert len(first) == len(second)
        seen_primary += [i for i, _ in first]
        seen_real += [i for i, _ in second]
    assert sorted(seen_primary) == list(range(100))  # each synthetic image once per epoch
    counts = np.bincount(np.array(seen_real) - 100)
    assert counts.max() - counts.min() <= 1  # every shot equally often
    again = TrainingPlan(range(100), range(100, 106), batch_size=8, epochs=2, seed=3)
    assert [again.batch(s) for s in (20, 5)] == [plan.batch(s) for s in (20, 5)]
    assert TrainingPlan(range(100), [], 8, 2, seed=4).batch(0)[0] != plan.batch(0)[0]


def test_mixup_and_cutmix_targets_match_the_mixed_pixels():
    images = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(4)])
    targets = soft_targets(torch.tensor([0, 1, 2, 3]), 4, 0.0)
    for seed in range(6):
        mixed, soft = mix_batch(images, targets, mixup_alpha=0.0, cutmix_alpha=1.0, seed=seed)
        torch.testing.assert_close(soft.sum(1), torch.ones(4))
        # the share of pixels from each source image equals its target weight
        own = (mixed[0] == 0.0).float().mean()
        torch.testing.assert_close(soft[0, 0], own)
        mixed, soft = mix_batch(images, targets, mixup_alpha=0.8, cutmix_alpha=0.0, seed=seed)
        lam = soft[1, 1]
        torch.testing.assert_close(mixed[1], images[1] * lam + images[0] * (1 - lam))
    a = mix_batch(images, targets, 0.8, 1.0, seed=11)
    b = mix_batch(images, targets, 0.8, 1.0, seed=11)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    smooth = soft_targets(torch.tensor([1]), 4, 0.1)
    torch.testing.assert_close(smooth, torch.tensor([[0.025, 0.925, 0.025, 0.025]]))


def test_mixing_hits_mix_prob_of_the_batches_with_both_kinds():
    """The official code mixes 20 % of batches, CutMix or Mixup at random; the decision must not
    decide the kind (it once shared its draw with the CutMix-or-Mixup coin)."""
    from ddcore.training.loop import _targets

    images = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(4)])
    labels, real = torch.tensor([0, 1, 2, 3]), torch.zeros(4, dtype=torch.bool)
    options = TrainingOptions(mix=True)
    kinds = []
    for seed in range(400):
        mixed, targets, _ = _targets(images, labels, real, 4, options, seed * 4096)
        if not torch.equal(mixed, images):
            flat = mixed[0].flatten().unique()
            kinds.append("cutmix" if len(flat) <= 2 and set(flat.tolist()) <= {0.0, 3.0} else "mixup")
    assert 0.14 < len(kinds) / 400 < 0.26
    assert 0.3 < kinds.count("cutmix") / len(kinds) < 0.7
    never = TrainingOptions(mix=True, mix_prob=0.0)
    assert all(torch.equal(_targets(images, labels, real, 4, never, s)[0], images) for s in range(50))


def test_augmentations_are_the_official_ones_and_the_paper_list_is_an_option():
    from torchvision import transforms as T

    from ddcore.training.data import cache_side, train_transform

    official = [type(t) for t in train_transform(224, (0.5,) * 3, (0.5,) * 3, True).transforms]
    assert official[:3] == [T.RandAugment, T.RandomResizedCrop, T.RandomHorizontalFlip]
    assert T.RandomSolarize in official
    crop = train_transform(224, (0.5,) * 3, (0.5,) * 3, True).transforms[1]
    assert crop.scale == (0.25, 1.0)
    jitter = train_transform(224, (0.5,) * 3, (0.5,) * 3, True).transforms[3].transforms[0]
    assert jitter.saturation == (0.8, 1.2)  # 0.2, the official code's
    simple = [type(t) for t in train_transform(224, (0.5,) * 3, (0.5,) * 3, True, "simple").transforms]
    assert T.RandAugment not in simple and T.RandomResizedCrop in simple
    assert (cache_side(224, True), cache_side(224, True, "simple"), cache_side(224, False)) == (448, 317, 224)
    with pytest.raises(ConfigError, match="augmentations"):
        TrainingOptions(augmentations="heavy")


def test_warm_up_is_counted_in_epochs_unless_steps_are_given():
    assert TrainingOptions().warmup(steps_per_epoch=79) == 237
    assert TrainingOptions(warmup_steps=5).warmup(steps_per_epoch=79) == 5


def test_head_templates_datadream_coop_and_ensemble():
    from dd_plugins.clip_classifier import ClipClassifier, class_templates

    from ddcore.records import Dataset

    eurosat = Dataset(name="eurosat", classnames=["Forest"], train=[], test=[], domain="satellite ",
                      templates=["a centered satellite photo of {}."])
    options = ClipClassifier.Options
    assert class_templates(options(), eurosat) == ["a satellite photo of a {}"]
    assert class_templates(options(templates="coop"), eurosat) == ["a centered satellite photo of {}."]
    assert class_templates(options(templates="single"), eurosat) == ["a centered satellite photo of {}."]
    assert len(class_templates(options(templates="ensemble"), eurosat)) == 80
    with pytest.raises(ConfigError, match="templates"):
        ClipClassifier(options(templates="many"))


# --------------------------------------------------------------------------- the loop


def _data(tiny_folder: Path, per_class: int = 4) -> TrainingData:
    real, synthetic = [], []
    for label, name in enumerate(sorted(CLASSES)):
        files = sorted((tiny_folder / "train" / name).glob("*.png"))
        real += [Sample(p, label, name) for p in files[:2]]
        synthetic += [Sample(p, label, name) for p in files[2:2 + per_class]]
    return TrainingData(real=real, synthetic=synthetic, real_weight=0.8)


class _Stop(Exception):
    pass


class _StopAfter:
    """A reporter whose progress bar raises after ``n`` steps (an interruption)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def task(self, description, total):
        import contextlib

        @contextlib.contextmanager
        def bar():
            done = [0]

            def advance(k=1, **status):
                done[0] += k
                if done[0] > self.n:
                    raise _Stop

            yield advance

        return bar()


def _train(model, data, out_dir, reporter=SILENT, **options):
    settings = TrainingOptions(**{"epochs": 2, "batch_size": 4, "warmup_steps": 1, "lr": 1e-3, **options})
    return train(model, data, settings, num_classes=3, seed=0, device="cpu", out_dir=out_dir, reporter=reporter)


def test_interrupted_training_resumes_to_the_same_weights(tiny_folder, tmp_path):
    data = _data(tiny_folder)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = _clip_model("lora")
    _train(whole, data, tmp_path / "a", checkpoint_every=2, mix=True)
    resumed = _clip_model("lora")
    with pytest.raises(_Stop):
        _train(resumed, data, tmp_path / "b", reporter=_StopAfter(3), checkpoint_every=2, mix=True)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    fresh = _clip_model("lora")  # a new process: nothing in memory survives
    _train(fresh, data, tmp_path / "b", checkpoint_every=2, mix=True)
    for key, value in whole.trained_state().items():
        torch.testing.assert_close(fresh.trained_state()[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gradient_accumulation_equals_the_whole_batch(tiny_folder, tmp_path):
    data = _data(tiny_folder)
    states = []
    for i, micro in enumerate((0, 3)):
        model = _clip_model("lora", dropout=0.0)
        (tmp_path / str(i)).mkdir()
        _train(model, data, tmp_path / str(i), epochs=1, micro_batch=micro)
        states.append(model.trained_state())
    changed = 0
    for key in states[0]:
        # Adam's first steps are about +-lr (1e-3) per weight, so a wrong gradient shows far above 1e-4
        torch.testing.assert_close(states[1][key], states[0][key], rtol=1e-4, atol=1e-4)
        changed += int(not torch.equal(states[0][key], _clip_model("lora", dropout=0.0).trained_state()[key]))
    assert changed > 0  # training moved the LoRA weights


@pytest.mark.slow
def test_real_weight_sets_the_loss_balance(tiny_folder, tmp_path):
    """lambda = 1 ignores the synthetic images entirely: the same weights as training with
    different synthetic images."""
    data = _data(tiny_folder)
    other = TrainingData(real=data.real, synthetic=list(reversed(data.synthetic)), real_weight=1.0)
    same = TrainingData(real=data.real, synthetic=data.synthetic, real_weight=1.0)
    states = []
    for i, d in enumerate((same, other)):
        model = _clip_model("lora", dropout=0.0)
        (tmp_path / str(i)).mkdir()
        _train(model, d, tmp_path / str(i), epochs=1, augment=False)
        states.append(model.trained_state())
    # Same real batches only if the plan's secondary draw is unchanged; it is (same real list).
    for key in states[0]:
        torch.testing.assert_close(states[1][key], states[0][key], rtol=1e-4, atol=1e-6)


def test_decoded_cache_is_filled_by_workers_and_matches_decoding(tiny_folder):
    from PIL import Image

    from ddcore.data import load_rgb

    paths = sorted((tiny_folder / "train").rglob("*.png"))
    big = Image.open(paths[0]).resize((96, 64))
    big_path = tiny_folder.parent / "big.png"
    big.save(big_path)
    paths = [big_path] + paths
    cache = DecodedCache(paths, side=40, budget_bytes=1 << 20, shared=True)
    assert cache.shapes[0] == (40, 60)  # shorter side shrunk to 40, aspect kept
    assert cache.shapes[1] == (32, 32)  # never enlarged
    samples = [Sample(p, 0, "x") for p in paths]
    dataset = TrainImages(samples, [False] * len(paths), lambda im: torch.from_numpy(np.array(im)), cache)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=[[(i, 0)] for i in range(len(paths))], num_workers=2)
    for _ in loader:
        pass
    assert bool(cache.filled.all())  # written by the worker processes, seen here
    assert np.array_equal(np.array(cache.get(1)), np.array(load_rgb(paths[1])))
    expected = np.array(load_rgb(big_path).resize((60, 40), Image.Resampling.BICUBIC, reducing_gap=3.0))
    assert np.array_equal(np.array(cache.get(0)), expected)
    small = DecodedCache(paths, side=40, budget_bytes=40 * 60 * 3, shared=False)
    assert small.cached_images == 1 and small.shapes[1] is None  # over budget: decoded each time


# --------------------------------------------------------------------------- runs


def test_zero_shot_equals_open_clip(tiny_folder, tmp_path):
    """Predictions of the zero-shot method equal open_clip's own zero-shot classifier with the
    same model, class names and templates (an ensemble of three)."""
    import open_clip
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    from ddcore.data import load_rgb

    templates = ["a photo of a {}.", "itap of a {}.", "a drawing of a {}."]
    run = Run(config_for(tiny_folder, tmp_path / "zs", "--set", "classifier.templates=ensemble", method="zero-shot"))
    run.dataset.templates = templates  # as a data set plugin would give them
    metrics = run.run_all()
    info = json.loads(next((tmp_path / "zs" / "classifier").glob("*/classifier.json")).read_text())
    assert info["templates"] == templates
    assert info["prompts"]["red square"] == [t.format("red square") for t in templates]

    loaded = load_clip("tiny")
    head = build_zero_shot_classifier(loaded.model, loaded.tokenizer, run.dataset.classnames, templates)
    preprocess = open_clip.image_transform(loaded.image_size, is_train=False, mean=loaded.mean, std=loaded.std)
    test = run.dataset.test
    with torch.no_grad():
        images = torch.stack([preprocess(load_rgb(s.path)) for s in test])
        features = loaded.model.encode_image(images, normalize=True)
        theirs = (features @ head).argmax(1).tolist()
    lines = [json.loads(x) for x in (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()]
    assert [run.dataset.classnames.index(x["predicted"]) for x in lines] == theirs
    assert metrics["top1"] == pytest.approx(np.mean([t == s.label for t, s in zip(theirs, test)]))


@pytest.mark.slow
def test_search_selects_on_validation_never_on_test(tiny_folder, tmp_path, monkeypatch):
    from dd_plugins.clip_classifier import ClipClassifier

    seen: list[set] = []
    original = ClipClassifier.predict

    def spy(self, context, samples):
        seen.append({s.path for s in samples})
        return original(self, context, samples)

    monkeypatch.setattr(ClipClassifier, "predict", spy)
    config = config_for(tiny_folder, tmp_path / "s", method="real-finetune", shots=6, search=True,
                        search_grid={"lr": [1e-3, 1e-6], "mix": [False, True]})
    run = Run(config)

    class Recorder:  # stands in for the run's trackers (--log-with): the names they get
        names: set[str] = set()

        def log(self, values, step):
            self.names |= set(values)

    run.reporter.trackers = Recorder()
    run.prepare()
    run.adapt(), run.generate()
    run.train()
    # Each trial's curves have their own names; the final classifier's are classifier/*.
    trial_names = {n.rsplit("/classifier/", 1)[0] for n in Recorder.names if n.startswith("search/")}
    assert trial_names == {"search/lr=0.001,mix=False", "search/lr=0.001,mix=True",
                           "search/lr=1e-06,mix=False", "search/lr=1e-06,mix=True"}
    assert {"classifier/loss", "classifier/lr"} <= Recorder.names
    test_paths = {s.path for s in run.dataset.test}
    assert len(seen) == 4 and all(not (paths & test_paths) for paths in seen)
    # no val split and no train images beyond the 6 shots: shots were held out for the search
    record = json.loads((run.stage_dir("classifier").path / "search.json").read_text())
    assert record["validation"].endswith("held out of training during the search")
    assert not record["final_equals_trial"] and len(record["trials"]) == 4
    best = max(record["trials"], key=lambda t: t["val_top1"])
    assert record["setting"] == best["setting"]
    info = json.loads((run.stage_dir("classifier").path / "classifier.json").read_text())
    assert {k: info["options"][k] for k in ("lr", "mix")} == record["setting"]
    assert run.stage_dir("classifier").info()["real"] == 18  # the final classifier saw every shot
    metrics = run.evaluate()
    assert metrics["search"]["setting"] == record["setting"]
    # a second run reuses every trial
    seen.clear()
    rerun = Run(config)
    rerun.prepare()
    assert rerun.train() == run.stage_dir("classifier").path and seen == []


def test_search_grid_must_name_classifier_options(tiny_folder, tmp_path):
    run = Run(config_for(tiny_folder, tmp_path / "g", method="real-finetune", search=True, search_grid={"lrr": [1]}))
    run.prepare()
    with pytest.raises(ConfigError, match="lrr.*not options of classifier"):
        run.train()


@pytest.mark.slow
def test_timm_classifier_trains_and_evaluates(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "timm"
    result = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *FAST, "--method", "real-finetune",
                    "--classifier", "timm", "--set", "classifier.image_size=32", "--set", "classifier.epochs=2", "-q")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["classifier"] == "timm" and metrics["num_test"] == 12
    info = json.loads(next((out / "classifier").glob("*/classifier.json")).read_text())
    assert info["model"] == "tiny" and info["training"]["steps"] == 2
    # predict with the saved classifier reproduces the evaluation
    predicted = run_dd("predict", str(out), str(tiny_folder / "test"), "--out", str(tmp_path / "p.jsonl"), "-q")
    assert predicted.returncode == 0, predicted.stderr
    ours = [json.loads(x)["predicted"] for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    evaluated = {json.loads(x)["file"]: json.loads(x)["predicted"] for x in (out / "predictions.jsonl").read_text().splitlines()}
    files = [json.loads(x)["file"] for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert ours == [evaluated[f"test/{f}"] for f in files]


def test_timm_errors_are_one_line():
    from dd_plugins.timm_classifier import create_timm_model

    with pytest.raises(ModelNotFoundError, match="unknown timm model 'resnet5O'.*resnet50"):
        create_timm_model("resnet5O", 3, "cpu")
    with pytest.raises(ModelNotFoundError) as info:
        create_timm_model("resnet18.a1_in1k", 3, "cpu")
    message = str(info.value)
    assert "\n" not in message and "timm/resnet18.a1_in1k" in message and "local-dir:" in message


@pytest.mark.slow
def test_predict_export_round_trip(tiny_folder, tmp_path, run_dd):
    """A trained CLIP classifier exported with its LoRA merged loads as a plain open_clip
    local-dir model and gives the same scores."""
    from safetensors.torch import load_file

    from ddcore.inference import image_samples, open_classifier

    out = tmp_path / "clip"
    result = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *FAST, "--method", "real-finetune",
                    "--set", "classifier.epochs=3", "--set", "classifier.lr=1e-2", "-q")
    assert result.returncode == 0, result.stderr
    exported = run_dd("export", str(out), str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    loaded = open_classifier(out, Plugins(), "cpu")
    samples = image_samples(tiny_folder / "test", loaded.context.dataset)
    assert [s.label for s in samples] == sorted(s.label for s in samples) and samples[0].label == 0
    ours = loaded.classifier.predict(loaded.context, samples)

    plain = load_clip(f"local-dir:{tmp_path / 'export'}")
    assert not any("lora" in n for n, _ in plain.model.named_parameters())
    head = load_file(str(tmp_path / "export" / "dd_head.safetensors"))["head"]
    import open_clip

    from ddcore.data import load_rgb

    preprocess = open_clip.image_transform(plain.image_size, is_train=False, mean=plain.mean, std=plain.std)
    with torch.no_grad():
        features = plain.model.encode_image(torch.stack([preprocess(load_rgb(s.path)) for s in samples]), normalize=True)
        theirs = plain.model.logit_scale.exp() * features @ head.t()
    np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-3, atol=1e-3)
    # the LoRA changed the model: the exported weights differ from the base model's
    base = load_clip("tiny").model.state_dict()
    merged = plain.model.state_dict()
    assert any(not torch.equal(base[k], merged[k]) for k in base if "in_proj_weight" in k)
    assert json.loads((tmp_path / "export" / "classifier.json").read_text())["classnames"] == [c.replace("_", " ") for c in sorted(CLASSES)]
    again = run_dd("export", str(out), str(tmp_path / "export"))
    assert again.returncode == 1 and "not empty" in again.stderr


def test_merge_lora_folds_back_into_fused_attention():
    model = _clip_model("lora", dropout=0.0)
    with torch.no_grad():
        for name, param in model.module.named_parameters():
            if "lora_B" in name:
                param.normal_()
    images = torch.randn(2, 3, 32, 32)
    before = model.logits(images)
    assert merge_lora(model.module) == 8
    after = model.logits(images)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert isinstance(model.module.transformer.resblocks[0].attn, torch.nn.MultiheadAttention)


# --------------------------------------------------------------------------- evaluation files and bad input


def test_evaluation_writes_table_and_confusion_image(tiny_folder, tmp_path):
    import csv

    from PIL import Image

    run = Run(config_for(tiny_folder, tmp_path / "e", method="zero-shot"))
    metrics = run.run_all()
    rows = list(csv.DictReader((tmp_path / "e" / "per_class.csv").open()))
    assert [r["class"] for r in rows] == run.dataset.classnames
    for row in rows:
        assert float(row["accuracy"]) == pytest.approx(metrics["per_class"][row["class"]], abs=1e-4)
        assert int(row["test_images"]) == 4
    with Image.open(tmp_path / "e" / "confusion.png") as image:
        assert image.format == "PNG" and min(image.size) >= 300


def test_classifier_trained_on_other_classes_is_refused(tiny_folder, tmp_path):
    run = Run(config_for(tiny_folder, tmp_path / "c", method="zero-shot"))
    run.run_all()
    run.dataset.classnames = ["cat", "dog", "red_square"]
    with pytest.raises(StageError, match="other classes.*cat, dog"):
        run.stages["classifier"].load(run.context, run.stage_dir("classifier").path)


@pytest.mark.slow
def test_synthetic_folder(tiny_folder, tmp_path, run_dd):
    good = tmp_path / "syn"
    for name in CLASSES:
        (good / name).mkdir(parents=True)
        for p in sorted((tiny_folder / "train" / name).glob("*.png"))[:3]:
            (good / name / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "with-syn"
    result = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *FAST, "--method", "real-finetune",
                    "--train-on", "real+synthetic", "--synthetic", str(good), "-q")
    assert result.returncode == 0, result.stderr
    stage = json.loads(next((out / "classifier").glob("*/stage.json")).read_text())
    assert stage["synthetic"] == 6 and stage["real"] == 6  # --images-per-class 2 caps the folder's 3
    assert not (out / "synthetic").exists()

    (good / "purple_star").mkdir()
    bad = run_dd("run", "--data", str(tiny_folder), "--out", str(tmp_path / "bad"), *FAST, "--method", "real-finetune",
                 "--train-on", "synthetic", "--synthetic", str(good))
    assert bad.returncode == 1
    assert "class(es) the data set lacks (purple_star)" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bad_classifier_options(tiny_folder, tmp_path):
    with pytest.raises(DDError, match="visual must be one of"):
        Run(config_for(tiny_folder, tmp_path / "v", "--set", "classifier.visual=partly"))
    run = Run(config_for(tiny_folder, tmp_path / "t", "--classifier", "timm", method="zero-shot"))
    run.prepare()
    with pytest.raises(ConfigError, match="no zero-shot head"):
        run.train()


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["clip-vitb16", "clip-rn50"])
def test_named_classifiers_train_on_real_and_synthetic(preset, tmp_path):
    """The presets' real architectures (random weights: none can be downloaded here) train one
    step on real + synthetic images at 224 px and evaluate (few images: these are big on a CPU).
    ViT-L/14 (a minute on 2 CPUs) is left out: it is ViT-B/16's code path with the whole tower
    trained, as RN50's is; test_presets_build_the_quickgelu_architecture builds it."""
    data = write_image_folder(tmp_path / "data", train=2, test=1)
    arch = PRESETS[preset].Options().model.replace(":openai", ":random")
    synthetic = data / "train"  # any folder of class folders serves as a synthetic set
    run = Run(config_for(data, tmp_path / preset, "--set", "classifier.batch_size=3", method="real-finetune",
                         classifier=preset, classifier_model=arch, train_on="real+synthetic",
                         synthetic=str(synthetic), images_per_class=1, shots=1))
    metrics = run.run_all()
    stage = run.stage_dir("classifier")
    assert (stage.info()["real"], stage.info()["synthetic"]) == (3, 3)
    info = json.loads((stage.path / "classifier.json").read_text())
    assert info["training"]["steps"] == 1 and info["model"] == arch and info["model_cfg"]["quick_gelu"] is True
    assert info["visual"] == PRESETS[preset].Options().visual
    assert metrics["num_test"] == 3 and metrics["classifier"] == preset
