"""DISEF's stages: the ``captions`` prompt builder, the ``clip`` filter and the ``disef`` method."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddcore.errors import ModelNotFoundError
from ddcore.generation import image_is_valid
from ddcore.pipeline import Run
from ddcore.plugins import Plugins
from ddcore.progress import SILENT
from ddcore.records import Dataset, GenItem, Prompt

from conftest import CLASSES, FAST, RecordingReporter, config_for, make_image, write_image_folder

import dd_plugins.captions as captions_mod
from dd_plugins.captions import CaptionPrompts, load_captioner
from dd_plugins.clip_filter import ClipFilter

PREFIX = "a photo of a {classname},"


def pixels_digest(image: Image.Image) -> str:
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()[:10]


class FakeCaptioner:
    """Captions an image by a digest of its pixels, so a caption names the shot it came from."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def caption(self, images, prefix, query, max_new_tokens):
        self.calls.append(len(images))
        return [f"pixels {pixels_digest(image)}" for image in images]

    def close(self):
        pass


def caption_run(data: Path, out: Path, *extra: str, reporter=SILENT) -> Run:
    run = Run(config_for(data, out, "--method", "sd-txt2img", "--prompt-builder", "captions", *extra),
              reporter=reporter)
    run.prepare()
    return run


def expected_text(shot) -> str:
    with Image.open(shot.path) as image:
        return f"{PREFIX.format(classname=shot.classname)} pixels {pixels_digest(image)}"


# --------------------------------------------------------------------------- captions


def test_each_image_starts_from_a_shot_and_borrows_another_shots_caption(tmp_path, monkeypatch):
    data = write_image_folder(tmp_path / "data", train=4, test=1)
    calls: list[int] = []
    monkeypatch.setattr(captions_mod, "load_captioner", lambda *a, **k: FakeCaptioner(calls))
    run = caption_run(data, tmp_path / "run", "--shots", "3")
    prompts = run.stages["prompt_builder"].build(run.context)
    by_class = run.context.shots_by_class()
    assert set(prompts) == {0, 1, 2} and sum(calls) == 9  # every shot captioned once
    for label, shots in by_class.items():
        k = len(shots)
        assert k == 3 and len(prompts[label]) == k * (k - 1)  # every (source, other shot) pair once
        for p, prompt in enumerate(prompts[label]):
            s, o = p % k, 1 + p // k
            assert prompt.source == shots[s].path  # image i (prompt i % len) starts from shot i % K
            assert prompt.text == expected_text(shots[(s + o) % k])  # ... with another shot's caption
            assert prompt.text != expected_text(shots[s])
    # A shot whose file changed is captioned again, and only that one.
    changed = by_class[1][0]
    make_image("green_circle", CLASSES["green_circle"], seed=999).save(changed.path)
    calls.clear()
    again = run.stages["prompt_builder"].build(run.context)
    assert calls == [1]
    assert again[1][len(by_class[1]) - 1].text == expected_text(changed)  # shot K-1 borrows shot 0's caption
    assert again[0] == prompts[0] and again[2] == prompts[2]


@pytest.mark.parametrize("extra, per_class", [(("--shots", "1"), 1),
                                              (("--shots", "3", "--set", "prompt_builder.other_shot=false"), 3)])
def test_one_shot_or_other_shot_off_uses_the_shots_own_caption(tmp_path, monkeypatch, extra, per_class):
    data = write_image_folder(tmp_path / "data", train=3, test=1)
    monkeypatch.setattr(captions_mod, "load_captioner", lambda *a, **k: FakeCaptioner([]))
    run = caption_run(data, tmp_path / "run", *extra)
    prompts = run.stages["prompt_builder"].build(run.context)
    for label, shots in run.context.shots_by_class().items():
        assert [(p.source, p.text) for p in prompts[label]] == [(s.path, expected_text(s)) for s in shots]
        assert len(prompts[label]) == per_class


def test_tiny_captioner_writes_a_cache_that_a_rerun_reuses(tiny_folder, tmp_path, monkeypatch):
    reporter = RecordingReporter()
    run = caption_run(tiny_folder, tmp_path / "run", "--set", "prompt_builder.model=tiny",
                      "--set", "prompt_builder.max_new_tokens=6", "--set", "prompt_builder.batch_size=1",
                      reporter=reporter)
    builder = run.stages["prompt_builder"]
    prompts = builder.build(run.context)
    # One bar over the images captioned, advanced per image (batches of one).
    [bar] = reporter.bars
    assert (bar.description, bar.total, bar.done, bar.closed) == ("captioning real shots", 6, 6, True)
    cache_files = list((tmp_path / "run" / "captions").glob("*.json"))
    assert cache_files == [builder.cache_path(run.context)]
    cache = json.loads(cache_files[0].read_text())
    assert cache["settings"] == {"model": "tiny", "max_new_tokens": 6, "dtype": "auto"}
    by_class = run.context.shots_by_class()
    for label, shots in by_class.items():
        name = run.dataset.classnames[label]
        captions = [cache["captions"][str(s.path)]["caption"] for s in shots]
        assert all(captions) and len(set(captions)) == len(shots)  # real (tiny) captions, one per shot
        for s, shot in enumerate(shots):
            entry = cache["captions"][str(shot.path)]
            assert entry["sha256"] == hashlib.sha256(shot.path.read_bytes()).hexdigest()
            assert entry["prefix"] == f"a photo of a {name},"
            other = captions[(s + 1) % len(shots)]
            assert prompts[label][s] == Prompt(f"a photo of a {name}, {other}", source=shot.path)
    # A second builder on the same run folder loads no model and returns the same prompts.
    loads = []

    def load(*args, **kwargs):
        loads.append(args)
        reporter.events.append("load")
        return FakeCaptioner([])

    monkeypatch.setattr(captions_mod, "load_captioner", load)
    assert Plugins().create("prompt_builder", "captions", {"model": "tiny", "max_new_tokens": 6}).build(
        run.context) == prompts
    assert loads == [] and len(reporter.bars) == 1  # nothing to caption: no bar either
    # Other settings are another cache file (and are captioned anew, the model loaded before the bar).
    Plugins().create("prompt_builder", "captions", {"model": "tiny", "max_new_tokens": 5}).build(run.context)
    assert len(loads) == 1 and len(list((tmp_path / "run" / "captions").glob("*.json"))) == 2
    assert reporter.events[-2:] == ["load", "bar: captioning real shots"] and reporter.bars[-1].done == 6


def test_a_saved_captioner_folder_loads_like_a_downloaded_model(tmp_path):
    from ddcore.models.tiny import save_tiny_captioner

    folder = save_tiny_captioner(tmp_path / "tiny-blip")
    images = [make_image(name, colour, seed=3) for name, colour in CLASSES.items()]
    from_folder = load_captioner(str(folder)).caption(images, "a photo of a dog,", "", 5)
    assert from_folder == load_captioner("tiny").caption(images, "a photo of a dog,", "", 5)
    assert all(text and not text.startswith("a photo") for text in from_folder)  # the prefix is not repeated


def save_tiny_llava(dest: Path) -> Path:
    """A tiny random LLaVA (CLIP vision tower, Llama text model) with a chat template."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    from ddcore.models.tiny import _tiny_caption_vocab, wordpiece_tokenizer

    vocab = _tiny_caption_vocab()
    vocab["<image>"] = len(vocab)
    # no token_type_ids, as a real LLaVA's Llama tokenizer (generate() in transformers 4 rejects them)
    tokenizer = wordpiece_tokenizer(vocab, model_input_names=["input_ids", "attention_mask"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    template = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
                "{% if add_generation_prompt %}assistant:{% endif %}")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                       image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=2,
                                eos_token_id=3, max_position_embeddings=256, initializer_range=0.5),
        image_token_id=vocab["<image>"], vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(str(dest))
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                   tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default", chat_template=template,
                   num_additional_image_tokens=1).save_pretrained(str(dest))
    return dest


def save_tiny_vit_gpt2(dest: Path) -> Path:
    """A tiny random ViT-GPT2 ``VisionEncoderDecoderModel`` saved without a processor (as
    nlpconnect/vit-gpt2-image-captioning is): an image processor and a tokenizer."""
    from transformers import GPT2Config, ViTConfig, ViTImageProcessor, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    from ddcore.models.tiny import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
        ViTConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8, initializer_range=0.5),
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.5,
                   bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    config.decoder_start_token_id, config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    VisionEncoderDecoderModel(config).save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(dest))
    return dest


@pytest.mark.parametrize("build, chat", [(save_tiny_llava, True), (save_tiny_vit_gpt2, False)])
def test_chat_and_processor_less_captioners_return_only_new_text(tmp_path, build, chat):
    captioner = load_captioner(str(build(tmp_path / "model")))
    assert captioner.chat is chat and captioner.conditional is False
    images = [make_image(name, colour, seed=3) for name, colour in CLASSES.items()]
    texts = captioner.caption(images, "a photo of a dog,", "describe the dog in the image", 4)
    assert len(texts) == 3 and all(texts) and len(set(texts)) > 1
    # at most the 4 new tokens: neither the question nor the chat roles come back
    assert all("describe" not in t and "assistant" not in t and "user" not in t for t in texts)
    if chat:
        assert all(len(t.split()) <= 4 for t in texts)


@pytest.mark.parametrize("spec, says", [
    ("someorg/no-such-captioner", "not available from the Hugging Face hub"),
    ("./no/such/folder", "no such folder"),
])
def test_a_missing_captioner_is_a_one_line_error(spec, says):
    with pytest.raises(ModelNotFoundError) as info:
        load_captioner(spec)
    message = str(info.value)
    assert "\n" not in message and says in message and spec.strip("./") in message
    assert "--set prompt_builder.model=" in message


def test_a_folder_that_is_no_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json") as info:
        load_captioner(str(tmp_path))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- the clip filter


def test_clip_filter_keeps_an_image_only_for_its_zero_shot_class():
    from ddcore.models import load_clip
    from ddcore.training import eval_transform

    names = ["red square", "green circle", "blue stripes"]
    dataset = Dataset(name="shapes", classnames=names, train=[], test=[])
    filt = ClipFilter(ClipFilter.Options(model="tiny", batch_size=4))
    filt.setup(SimpleNamespace(dataset=dataset, device="cpu"))
    images = [make_image(kind, colour, seed=s) for s in range(4) for kind, colour in CLASSES.items()]
    # The zero-shot prediction computed independently: one prompt per class, cosine similarity.
    clip = load_clip("tiny")
    transform = eval_transform(clip.image_size, clip.mean, clip.std)
    with torch.no_grad():
        text = F.normalize(clip.model.encode_text(clip.tokenizer([f"a photo of a {n}." for n in names])), dim=-1)
        feats = F.normalize(clip.model.encode_image(torch.stack([transform(i) for i in images])), dim=-1)
    expected = (feats @ text.T).argmax(dim=-1).tolist()
    assert filt.logits(images).argmax(dim=-1).tolist() == expected
    for label in range(3):
        items = [GenItem(label, names[label], names[label], i, 0, Prompt("x")) for i in range(len(images))]
        assert filt.keep(images, items) == [e == label for e in expected]


@pytest.mark.slow
def test_filtered_run_records_counts_and_survives_a_class_that_never_passes(tiny_folder, tmp_path, monkeypatch):
    real_logits = ClipFilter.logits
    never = 2  # "red square": zero-shot CLIP is made never to pick it

    def logits(self, images):
        out = real_logits(self, images).clone()
        out[:, never] = float("-inf")
        return out

    monkeypatch.setattr(ClipFilter, "logits", logits)
    run = Run(config_for(tiny_folder, tmp_path / "run", "--method", "sd-txt2img", "--filter", "clip",
                         "--set", "filter.model=tiny", "--set", "filter.max_attempts_per_class=4"))
    metrics = run.run_all()
    assert 0.0 <= metrics["top1"] <= 1.0  # training and evaluation go on with a short class
    root = run.synthetic().root
    counts = json.loads((root / "counts.json").read_text())
    names = run.dataset.classnames
    assert counts[names[never]] == {"kept": 0, "dropped": 4}
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    assert Counter(r["class"] for r in rows) == Counter({n: c["kept"] for n, c in counts.items() if c["kept"]})
    dropped = [json.loads(line) for line in (root / "dropped-0.jsonl").read_text().splitlines()]
    assert len(dropped) == sum(c["dropped"] for c in counts.values())
    for name, c in counts.items():
        assert c["kept"] <= 2 and c["kept"] + c["dropped"] <= 4
        assert c["kept"] == 2 or c["kept"] + c["dropped"] == 4  # full, or the bound was reached
    # What was kept is what (patched) zero-shot CLIP assigns to its class; what was dropped is not on disk.
    filt = run.stages["filter"]
    kept_images = [Image.open(root / r["file_name"]).convert("RGB") for r in rows]
    if kept_images:
        assert filt.logits(kept_images).argmax(dim=-1).tolist() == [r["label"] for r in rows]
    for d in dropped:
        assert not (root / run.dataset.class_dirs[d["label"]] / f"{d['index']:05d}.png").exists()


# --------------------------------------------------------------------------- the disef method


def test_disef_presets_name_their_stages_and_settings():
    """disef: as DataDream's Table 1 ran it (unfiltered); disef-original: as DISEF's paper (filtered)."""
    table, original = Plugins().method("disef"), Plugins().method("disef-original")
    assert (table.adapter, table.prompt_builder, table.generator, table.filter) == ("none", "captions", "img2img", "none")
    assert original.filter == "clip" and original.options == table.options and original.settings == table.settings
    assert table.options == {"generator.strength": 0.75, "generator.scheduler": "DPMSolverMultistepScheduler",
                             "generator.source_fit": "pad", "prompt_builder.model": "llava-hf/llava-1.5-7b-hf",
                             "prompt_builder.prefix": "", "prompt_builder.max_new_tokens": 77}
    assert table.settings == {"steps": 20, "guidance": 8.0}
    assert "unfiltered" in table.description and "ViT-H/14" in original.description
    assert CaptionPrompts.Options().model == "Salesforce/blip-image-captioning-large"  # the builder's own default


@pytest.mark.slow
def test_dd_run_disef_end_to_end_on_tiny_models(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "run"
    result = run_dd("run", "--data", str(tiny_folder), "--out", str(out), "--method", "disef-original", *FAST,
                    "--set", "prompt_builder.model=tiny", "--set", "prompt_builder.max_new_tokens=4",
                    "--set", "filter.model=tiny", "--set", "filter.max_attempts_per_class=3", "--stop-after", "generate")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped after generate" in result.stdout
    stages = json.loads((out / "run.json").read_text())["stages"]
    assert stages == {"adapter": "none", "prompt_builder": "captions", "generator": "img2img", "filter": "clip",
                      "classifier": "clip-vitb16"}
    [synthetic] = [p for p in (out / "synthetic").iterdir() if p.is_dir()]
    counts = json.loads((synthetic / "counts.json").read_text())
    assert set(counts) == {"red square", "green circle", "blue stripes"}
    assert all(c["kept"] + c["dropped"] >= 1 for c in counts.values())
    [cache] = (out / "captions").glob("*.json")
    captions = {path: e["caption"] for path, e in json.loads(cache.read_text())["captions"].items()}
    assert len(captions) == 6  # two shots of each of three classes
    rows = [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == sum(c["kept"] for c in counts.values())
    for row in rows:
        assert row["strength"] == 0.75 and row["scheduler"] == "DPMSolverMultistepScheduler"
        assert image_is_valid(synthetic / row["file_name"])
        source = row["source"]
        assert source in captions and Path(source).parent.name == run_dir_of(row["class"])
        others = [c for p, c in captions.items() if p != source and Path(p).parent == Path(source).parent]
        # K=2: the other shot's caption, alone (the preset's empty prefix, as DISEF's code)
        assert row["prompt"] == (others[0] or f"a photo of a {row['class']}")


def run_dir_of(classname: str) -> str:
    return classname.replace(" ", "_")
