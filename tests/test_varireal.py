"""VariReal: the ``attributes`` prompt builder (built-in lists, values file, a language model and
its cache), the ``varireal`` generator (supplied and SAM masks, which region changes), the
presets, ``dd run`` and ``dd compare``, and offline model errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dd_plugins.varireal as vr
import dd_plugins.varireal_prompts as vrp
from conftest import FAST, RecordingReporter, config_for
from ddcore.data.images import load_rgb
from ddcore.errors import ConfigError, DataError, DDError, ModelNotFoundError
from ddcore.pipeline import Run
from ddcore.plugins import Plugins
from ddcore.progress import SILENT
from dd_plugins.img2img import square_source
from test_img2img import identity_vae


def prompts_for(tiny_folder, out, *extra, reporter=SILENT):
    run = Run(config_for(tiny_folder, out, "--method", "varireal", *extra), reporter=reporter)
    return run, run.stages["prompt_builder"].build(run.context)


def infos(prompts):
    return {label: [p.info for p in ps] for label, ps in prompts.items()}


# --------------------------------------------------------------------------- the prompt builder


def test_presets_and_feasible_infeasible_mixed_prompts(tiny_folder, tmp_path):
    plugins = Plugins()
    method = plugins.method("varireal")
    assert (method.adapter, method.prompt_builder, method.generator, method.filter, method.train_on) == (
        "none", "attributes", "varireal", "none", "real+synthetic")
    for attribute in ("background", "color", "texture"):
        for feasibility in ("feasible", "infeasible", "mixed"):
            preset = plugins.method(f"varireal-{attribute}-{feasibility}")
            assert preset.options == {"prompt_builder.attribute": attribute, "prompt_builder.feasibility": feasibility}

    run, prompts = prompts_for(tiny_folder, tmp_path / "a")
    names = run.dataset.classnames
    for label, ps in prompts.items():
        assert len(ps) == 10
        assert all(p.info["attribute"] == "background" and p.info["feasible"] is True for p in ps)
        assert all(p.info["value_source"] == "builtin" for p in ps)
        assert len({p.info["value"] for p in ps}) == 10
        assert ps[0].text == f"a photo of a {names[label]} in a grassy park"

    _, prompts = prompts_for(tiny_folder, tmp_path / "b", "--set", "prompt_builder.attribute=colour",
                             "--set", "prompt_builder.feasibility=infeasible", "--set", "prompt_builder.values=4")
    ps = prompts[0]
    assert [p.info["feasible"] for p in ps] == [False] * 4 and {p.info["attribute"] for p in ps} == {"color"}
    assert ps[0].text == f"a photo of a neon pink {names[0]}" and ps[2].text.startswith("a photo of a glowing")
    assert ps[3].text == f"a photo of a polka-dotted purple {names[0]}"
    assert prompts_for(tiny_folder, tmp_path / "b2", "--set", "prompt_builder.attribute=color",
                       "--set", "prompt_builder.feasibility=infeasible",
                       "--set", "prompt_builder.values=5")[1][0][4].text == f"a photo of an electric blue {names[0]}"

    _, prompts = prompts_for(tiny_folder, tmp_path / "c", "--method", "varireal-texture-mixed",
                             "--set", "prompt_builder.values=6")
    for ps in prompts.values():
        flags = [p.info["feasible"] for p in ps]
        assert flags == [True, False] * 3  # alternating, exactly half
        assert all(p.info["attribute"] == "texture" for p in ps)
    assert prompts[0][1].text == f"a photo of a {names[0]} made of glass"


def test_values_file_overrides_for_all_classes_and_per_class(tiny_folder, tmp_path):
    values = tmp_path / "values.json"
    values.write_text(json.dumps({
        "background": {"feasible": ["a meadow", "a barn"], "infeasible": ["a volcano crater"]},
        "green_circle": {"background": {"feasible": ["a pond"]}},
    }))
    _, prompts = prompts_for(tiny_folder, tmp_path / "a", "--set", f"prompt_builder.values_file={values}",
                             "--set", "prompt_builder.values=3")
    by_name = {ps[0].text.split(" in ")[0].replace(" ", "_"): ps for ps in prompts.values()}
    circle = by_name["a_photo_of_a_green_circle"]
    assert [(i["value"], i["value_source"]) for i in (p.info for p in circle)] == [
        ("a pond", "file"), ("a meadow", "file"), ("a barn", "file")]
    square = by_name["a_photo_of_a_red_square"]
    assert [(i["value"], i["value_source"]) for i in (p.info for p in square)] == [
        ("a meadow", "file"), ("a barn", "file"), ("a grassy park", "builtin")]  # filled up
    _, prompts = prompts_for(tiny_folder, tmp_path / "b", "--set", f"prompt_builder.values_file={values}",
                             "--set", "prompt_builder.feasibility=infeasible", "--set", "prompt_builder.values=2")
    assert [p.info["value"] for p in prompts[0]] == ["a volcano crater", "the surface of the moon"]

    values.write_text(json.dumps({"red_sqare": {"background": {"feasible": ["x"]}}}))
    with pytest.raises(ConfigError, match="'red_sqare' is neither an attribute") as error:
        prompts_for(tiny_folder, tmp_path / "c", "--set", f"prompt_builder.values_file={values}")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("option, says", [
    ("prompt_builder.attribute=shape", "prompt_builder.attribute must be one of background, color, texture"),
    ("prompt_builder.feasibility=maybe", "prompt_builder.feasibility must be one of feasible, infeasible, mixed"),
    ("generator.mask=box", "generator.mask must be sam or folder"),
])
def test_bad_options_are_one_line_errors(tiny_folder, tmp_path, option, says):
    with pytest.raises(DDError) as error:
        Run(config_for(tiny_folder, tmp_path, "--method", "varireal", "--set", option))
    assert says in str(error.value) and "\n" not in str(error.value)


def test_tiny_text_model_runs_offline_caches_and_fills_up(tiny_folder, tmp_path, monkeypatch):
    extra = ("--set", "prompt_builder.text_model=tiny", "--set", "prompt_builder.values=4",
             "--set", "prompt_builder.max_new_tokens=30", "--set", "prompt_builder.feasibility=mixed")
    reporter = RecordingReporter()
    run, first = prompts_for(tiny_folder, tmp_path / "a", *extra, reporter=reporter)
    cache = json.loads((tmp_path / "a" / vr.VALUES_CACHE).read_text())["answers"]
    assert len(cache) == 3 * 2  # one question per class and feasibility
    [bar] = reporter.bars  # advanced per question
    assert (bar.description, bar.total, bar.done, bar.closed) == (
        "asking the language model for background values", 6, 6, True)
    assert {(e["feasibility"], e["values"], e["model"]) for e in cache.values()} == {
        ("feasible", 2, "tiny"), ("infeasible", 2, "tiny")}
    for label, ps in first.items():
        assert [p.info["feasible"] for p in ps] == [True, False, True, False]
        assert all(p.info["value_source"] in ("model", "builtin") for p in ps)
        for p in ps:  # a model value is a cleaned part of the cached answer
            if p.info["value_source"] == "model":
                assert any(p.info["value"] in e["answer"] for e in cache.values())

    # A rerun reads the cache: the model is neither loaded nor asked.
    def fail(*a, **k):
        raise AssertionError("the model was asked again")

    monkeypatch.setattr(vrp, "load_text_generator", fail)
    assert infos(prompts_for(tiny_folder, tmp_path / "a", *extra, reporter=reporter)[1]) == infos(first)
    assert len(reporter.bars) == 1  # nothing asked: no bar

    name = run.dataset.class_dirs[0]  # the folder name: "_" for " " is still the class
    # Parsing and fill-up: numbering, bullets, quotes, duplicates and the class name are cleaned away.
    class Fake:
        def ask(self, question, max_new_tokens):
            return f'1. A sunny beach.\n2. a sunny beach\n- "a desert", a {name.upper()} garage\n\n'

    monkeypatch.setattr(vrp, "load_text_generator", lambda *a, **k: Fake())
    _, prompts = prompts_for(tiny_folder, tmp_path / "b", "--set", "prompt_builder.text_model=tiny",
                             "--set", "prompt_builder.values=4")
    assert [(p.info["value"], p.info["value_source"]) for p in prompts[0]] == [
        ("A sunny beach", "model"), ("a desert", "model"), ("a grassy park", "builtin"), ("a city street", "builtin")]
    assert vr.parse_values("1) neon pink; 2) neon pink\n3: a b c d e f g h i", "x") == ["neon pink"]


def test_the_language_model_bar_counts_only_the_questions_asked(tiny_folder, tmp_path, monkeypatch):
    """A class the values file gives enough values is not asked; the model loads before the bar."""
    reporter = RecordingReporter()

    class Fake:
        def ask(self, question, max_new_tokens):
            reporter.events.append("ask")
            return "a desert\na harbour"

    def load(*args, **kwargs):
        reporter.events.append("load")
        return Fake()

    monkeypatch.setattr(vrp, "load_text_generator", load)
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"red_square": {"background": {"feasible": ["a", "b", "c", "d"]}}}))
    prompts_for(tiny_folder, tmp_path / "run", "--set", "prompt_builder.text_model=tiny", "--set",
                "prompt_builder.values=4", "--set", f"prompt_builder.values_file={values}", reporter=reporter)
    assert reporter.events == ["load", "bar: asking the language model for background values", "ask", "ask"]
    [bar] = reporter.bars
    assert (bar.total, bar.done) == (2, 2)


# --------------------------------------------------------------------------- the generator


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory) -> Path:
    """The tiny pipeline with a VAE that returns its input: the output shows what the
    inpainting changed (the tiny random VAE scrambles every pixel)."""
    from ddcore.models import tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    pipe.vae = identity_vae()
    folder = tmp_path_factory.mktemp("identity-vae-sd")
    pipe.save_pretrained(str(folder))
    return folder


def square_masks(tiny_folder: Path, dest: Path) -> Path:
    """One mask per training image: a centred 16 px white square on a 32 px black image."""
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    for image in (tiny_folder / "train").rglob("*.png"):
        target = dest / image.relative_to(tiny_folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(target)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("attribute", ["background", "color"])
def test_folder_masks_edit_the_background_or_the_object(tiny_folder, tmp_path, identity_model, attribute):
    masks = square_masks(tiny_folder, tmp_path / "masks")
    run = Run(config_for(tiny_folder, tmp_path / "run", "--method", f"varireal-{attribute}-feasible",
                         "--base-model", str(identity_model), "--steps", "3", "--set", "generator.mask=folder",
                         "--set", f"generator.mask_dir={masks}", "--set", "generator.dilate=0"))
    run.prepare()
    synthetic = run.generate()
    inside = np.zeros((32, 32), dtype=bool)
    inside[8:24, 8:24] = True
    for row in synthetic.items:
        assert (row["attribute"], row["feasible"], row["mask"], row["dilate"]) == (attribute, True, "folder", 0)
        assert row["edited_fraction"] == (0.75 if attribute == "background" else 0.25)
        out = np.asarray(Image.open(synthetic.root / row["file_name"]).convert("RGB"), dtype=float)
        source = np.asarray(square_source(load_rgb(Path(row["source"])), 32, "crop"), dtype=float)
        diff = np.abs(out - source).mean(axis=2)
        kept, edited = (diff[inside], diff[~inside]) if attribute == "background" else (diff[~inside], diff[inside])
        assert kept.mean() < 3.0 and edited.mean() > 10 * max(kept.mean(), 1.0), (kept.mean(), edited.mean())
    # The mask used for every shot is saved for inspection, as read.
    saved = sorted((tmp_path / "run" / vr.MASKS_DIR).rglob("*.png"))
    assert len(saved) == 6 and all((np.asarray(Image.open(p)) > 127).sum() == 256 for p in saved)

    # A shot without its mask file: one line naming the file expected.
    shot = run.context.shots[0].path
    missing = masks / shot.relative_to(tiny_folder).with_suffix(".png")
    missing.unlink()
    generator = run.stages["generator"]
    generator._masks.clear()
    with pytest.raises(DataError) as error:
        generator.object_mask(shot)
    assert str(missing) in str(error.value) and "\n" not in str(error.value)

    # A mask that covers the whole image (a segmenter that missed the object) is reported.
    Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(missing)
    logged = []
    generator.context.reporter = type("Log", (), {"log": lambda self, message: logged.append(message)})()
    assert generator.object_mask(shot).all()
    assert len(logged) == 1 and "covers 100% of the image" in logged[0] and "change nothing" in logged[0]


@pytest.mark.parametrize(("per_class", "masked"), [(2, 6), (1, 3)])
def test_sam_masks_the_planned_shots_in_setup_under_a_bar(tiny_folder, tmp_path, per_class, masked):
    """Before generation's bar opens, one bar per setup over the shots the planned images start
    from (each class has two shots; one image per class starts from its first only)."""
    reporter = RecordingReporter()
    out = tmp_path / "run"
    run = Run(config_for(tiny_folder, out, "--method", "varireal", "--images-per-class", str(per_class),
                         "--set", "generator.segmenter=tiny"), reporter=reporter)
    run.prepare()
    generator = run.stages["generator"]
    generator.plan_prompts(run.context, run._build_prompts())
    generator.setup(run.context, None)
    [bar] = reporter.bars
    assert (bar.description, bar.total, bar.done, bar.closed) == ("masking shots with SAM", masked, masked, True)
    assert len(list((out / vr.MASKS_DIR).rglob("*.png"))) == masked


@pytest.mark.slow
def test_sam_masks_are_computed_per_shot_and_saved(tiny_folder, tmp_path):
    out = tmp_path / "run"
    reporter = RecordingReporter()
    run = Run(config_for(tiny_folder, out, "--method", "varireal-texture-infeasible", "--set", "generator.segmenter=tiny",
                         "--set", "generator.dilate=1"), reporter=reporter)
    run.prepare()
    synthetic = run.generate()
    # The shots are masked in setup, under their own bar, before generation's opens.
    assert [(b.description, b.done) for b in reporter.bars] == [("masking shots with SAM", 6),
                                                                ("generating images", 6)]
    shots = run.context.shots
    saved = sorted((out / vr.MASKS_DIR).rglob("*.png"))
    assert len(saved) == len(shots) == 6
    assert {p.relative_to(out / vr.MASKS_DIR) for p in saved} == {
        s.path.relative_to(tiny_folder).with_suffix(".png") for s in shots}
    for p in saved:
        with Image.open(p) as mask:
            assert mask.size == (32, 32) and mask.mode == "L"
    for row in synthetic.items:
        assert row["segmenter"] == "tiny" and row["edit_region"] == "object" and row["feasible"] is False
        assert 0.0 <= row["edited_fraction"] <= 1.0
    # The saved masks, given back as a mask folder, give the same edited regions.
    again = Run(config_for(tiny_folder, tmp_path / "again", "--method", "varireal-texture-infeasible",
                           "--set", "generator.mask=folder", "--set", f"generator.mask_dir={out / vr.MASKS_DIR}",
                           "--set", "generator.dilate=1"))
    again.prepare()
    generator = again.stages["generator"]
    generator.setup(again.context, None)
    from ddcore.generation import plan_item

    prompts = generator.plan_prompts(again.context, again._build_prompts())
    fractions = [generator.item_metadata(plan_item(again.dataset, prompts, 0, r["label"], r["index"]))["edited_fraction"]
                 for r in synthetic.items]
    assert fractions == [r["edited_fraction"] for r in synthetic.items]


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_dd_run_varireal_records_attributes_and_reuses_the_set(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "run"
    args = ("run", "--data", str(tiny_folder), "--out", str(out), "--method", "varireal", *FAST,
            "--set", "generator.segmenter=tiny", "--stop-after", "generate")
    result = run_dd(*args)
    assert result.returncode == 0, result.stderr
    (synthetic,) = (out / "synthetic").iterdir()
    rows = [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["generator"] == "varireal" and row["attribute"] == "background" and row["feasible"] is True
        assert row["value"] in vr.BUILTIN_VALUES["background"]["feasible"] and row["value"] in row["prompt"]
        assert Path(row["source"]).is_relative_to(tiny_folder)
    assert [r["value"] for r in rows if r["label"] == 0] == ["a grassy park", "a city street"]
    before = {p: p.stat().st_mtime_ns for p in synthetic.rglob("*.png")}
    rerun = run_dd(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "reusing" in rerun.stderr and "generating" not in rerun.stderr
    assert {p: p.stat().st_mtime_ns for p in synthetic.rglob("*.png")} == before


@pytest.mark.slow
def test_dd_compare_runs_the_feasibility_study(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "cmp"
    methods = "varireal-background-feasible,varireal-background-infeasible"
    result = run_dd("compare", "--methods", methods, "--classifiers", "clip-vitb16", "--seeds", "0",
                    "--settings", "real+synthetic", "--out", str(out), "-q", "--data", str(tiny_folder), *FAST,
                    "--set", "generator.segmenter=tiny")
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "table.json").read_text())
    assert sorted(row["method"] for row in table) == sorted(methods.split(","))
    markdown = (out / "table.md").read_text()
    assert all(m in markdown for m in methods.split(","))
    values = set()
    for meta in (out / "store" / "synthetic").glob("*/metadata.jsonl"):
        values |= {json.loads(line)["feasible"] for line in meta.read_text().splitlines()}
    assert values == {True, False}


# --------------------------------------------------------------------------- models offline


@pytest.mark.parametrize("load, option", [
    (lambda: vr.SamSegmenter("facebook/sam-vit-base", "cpu"), "generator.segmenter"),
    (lambda: vr.load_inpaint_pipeline("stable-diffusion-v1-5/stable-diffusion-inpainting", device="cpu",
                                      dtype=None), "generator.inpaint_model"),
    (lambda: vr.load_text_generator("Qwen/Qwen2.5-0.5B-Instruct"), "prompt_builder.text_model"),
])
def test_unreachable_models_offline_are_one_line_errors(load, option):
    with pytest.raises(ModelNotFoundError) as error:
        load()
    message = str(error.value)
    assert "HF_HUB_OFFLINE=1" in message and f"--set {option}=DIR" in message and "hf download" in message
    assert "\n" not in message


def test_saved_tiny_folders_load_like_downloaded_models(tmp_path):
    from ddcore.models.tiny import save_tiny_sam, save_tiny_text_generator

    segmenter = vr.SamSegmenter(str(save_tiny_sam(tmp_path / "sam")), "cpu")
    assert segmenter.identity == str((tmp_path / "sam").resolve())
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    mask = segmenter.object_mask(image)
    assert mask.shape == (40, 40) and mask.dtype == bool
    tiny = vr.SamSegmenter("tiny", "cpu").object_mask(image)
    assert np.array_equal(mask, tiny)  # the same weights, from a folder
    generator = vr.load_text_generator(str(save_tiny_text_generator(tmp_path / "lm")))
    assert generator.ask("List 3 colours.", 8) == vr.load_text_generator("tiny").ask("List 3 colours.", 8)
    with pytest.raises(ModelNotFoundError, match="no config.json") as error:
        vr.SamSegmenter(str(tmp_path), "cpu")
    assert "\n" not in str(error.value)


def test_editing_a_values_file_or_a_supplied_mask_changes_the_stage_keys(tiny_folder, tmp_path):
    masks = square_masks(tiny_folder, tmp_path / "masks")
    values = tmp_path / "values.json"
    values.write_text(json.dumps({"background": {"feasible": ["a quiet lake"]}}))

    def keys():
        run = Run(config_for(tiny_folder, tmp_path / "run", "--method", "varireal", "--set", "generator.mask=folder",
                             "--set", f"generator.mask_dir={masks}", "--set", f"prompt_builder.values_file={values}"))
        run.prepare()
        return run.keys()["synthetic"]

    first = keys()
    assert keys() == first  # nothing changed: the finished set would be reused
    values.write_text(json.dumps({"background": {"feasible": ["a busy harbour"]}}))
    second = keys()
    assert second != first
    # Only the run's shots' masks count: editing another image's mask changes nothing.
    shots = _shot_masks(tiny_folder, tmp_path)
    other = next(p for p in sorted(masks.rglob("*.png")) if p.relative_to(masks) not in shots)
    Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(other)
    assert keys() == second
    Image.fromarray(np.full((32, 32), 255, dtype=np.uint8)).save(masks / sorted(shots)[0])
    assert keys() != second


def _shot_masks(tiny_folder, tmp_path):
    run = Run(config_for(tiny_folder, tmp_path / "shots", "--method", "varireal"))
    run.prepare()
    return {vr.relative_mask_name(s.path, tiny_folder) for s in run.context.shots}
