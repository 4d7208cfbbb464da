"""dd compare: the matrix, shared stages, resume, the table and the report."""

from __future__ import annotations

import json

import pytest

from conftest import FAST, FAST_ADAPTER, config_for
from ddcore.compare import CompareSpec, plan, run_matrix, table_rows
from ddcore.errors import ConfigError
from ddcore.plugins import Plugins

ALL_METHODS = "zero-shot,real-finetune,issynth,disef,datadream-dset,datadream-cls"
TINY_DISEF = ["--set", "prompt_builder.model=tiny"]  # its captioner (Table 1's DISEF has no filter)


def _folders(root, kind):
    folder = root / "store" / kind
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_plan_gives_each_method_its_settings():
    spec = CompareSpec(methods=["zero-shot", "real-finetune", "issynth"], classifiers=["clip-vitb16", "clip-rn50"],
                       seeds=[0, 1], base=config_for_defaults(), out=None, scale_images=[4, 8], scale_shots=[1])
    runs = plan(spec, Plugins())
    main = [r for r in runs if not r.study]
    assert len(main) == (1 + 1 + 2) * 2 * 2  # zero-shot, real-finetune, issynth x 2 settings; x classifiers x seeds
    assert {r.setting for r in main if r.method == "zero-shot"} == {"none"}
    assert {r.setting for r in main if r.method == "issynth"} == {"synthetic", "real+synthetic"}
    images = [r for r in runs if r.study == "images_per_class"]
    assert [r.images_per_class for r in images] == [8, 8, 4, 4]  # larger first, issynth only, first classifier
    assert {r.classifier for r in images} == {"clip-vitb16"}
    assert len({r.name for r in runs}) == len(runs)


def config_for_defaults():
    from ddcore.config import resolve

    return resolve({}, {"images_per_class": 2, "shots": 2})


@pytest.mark.slow
def test_matrix_shares_stages_and_resumes(tiny_folder, tmp_path, monkeypatch):
    base = config_for(tiny_folder, tmp_path / "unused", *FAST_ADAPTER)
    spec = CompareSpec(methods=["zero-shot", "issynth", "datadream-dset"], classifiers=["clip-vitb16"], seeds=[0, 1],
                       base=base, out=tmp_path / "cmp")
    from ddcore.pipeline import Run

    real_train, calls = Run.train, []

    def interrupted_train(self):
        calls.append(self.out.name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_train(self)

    monkeypatch.setattr(Run, "train", interrupted_train)
    with pytest.raises(KeyboardInterrupt):
        run_matrix(spec)
    monkeypatch.setattr(Run, "train", real_train)
    finished = json.loads((spec.out / "results.json").read_text())
    assert len(finished) == 3  # the rows of finished runs are on disk

    from dd_plugins.clip_classifier import ClipClassifier

    fits = []
    real_fit = ClipClassifier.fit
    monkeypatch.setattr(ClipClassifier, "fit", lambda self, *a, **k: (fits.append(1), real_fit(self, *a, **k))[1])
    rows = run_matrix(spec)
    assert len(rows) == 2 * (1 + 2 + 2) and len(fits) == len(rows) - 3  # finished classifiers were reused
    # One adapter per seed (dset), one synthetic set per method and seed, shared by both settings.
    assert len(_folders(spec.out, "adapter")) == 2
    assert len(_folders(spec.out, "synthetic")) == 4
    assert len(_folders(spec.out, "classifier")) == len(rows)
    # A third pass trains nothing.
    fits.clear()
    again = run_matrix(spec)
    assert fits == [] and [r["top1"] for r in again] == [r["top1"] for r in rows]
    table = table_rows(rows)
    assert {(t["setting"], t["method"]) for t in table} == {
        ("none", "zero-shot"), ("synthetic", "issynth"), ("real+synthetic", "issynth"),
        ("synthetic", "datadream-dset"), ("real+synthetic", "datadream-dset")}
    for t in table:
        assert t["seeds"] == [0, 1] and t["top1_std"] >= 0


def test_a_typo_in_a_shared_option_is_an_error(tiny_folder, tmp_path):
    base = config_for(tiny_folder, tmp_path / "x", "--set", "adapter.max_stepz=2")
    spec = CompareSpec(methods=["issynth", "datadream-dset"], classifiers=["clip-vitb16"], seeds=[0], base=base,
                       out=tmp_path / "cmp")
    with pytest.raises(ConfigError, match="adapter.max_stepz"):
        run_matrix(spec)


@pytest.mark.slow
def test_dd_compare_runs_the_paper_matrix_and_writes_table_and_report(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "table1"
    result = run_dd("compare", "--methods", ALL_METHODS, "--classifiers", "clip-vitb16", "--seeds", "0,1,2",
                    "--out", str(out), "-q", "--data", str(tiny_folder), *FAST, *FAST_ADAPTER, *TINY_DISEF)
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "table.json").read_text())
    assert len(table) == 2 + 4 * 2 and all(len(row["seeds"]) == 3 for row in table)
    markdown = (out / "table.md").read_text()
    for method in ALL_METHODS.split(","):
        assert method in markdown
    assert (out / "table.csv").read_text().count("\n") >= len(table)
    assert (out / "report" / "index.html").is_file()
    quality = json.loads((out / "quality.json").read_text())
    assert set(quality) == {"issynth", "disef", "datadream-dset", "datadream-cls"}
    # Shared: one adapter per seed for dset, one per seed for cls; one set per generating method and seed.
    assert len(_folders(out, "synthetic")) == 4 * 3
    page = (out / "report" / "index.html").read_text()
    assert "tiny image features" in page
    # Training curves: each shared adapter once (dset and cls, three seeds; cls has a part per class).
    assert (out / "report" / "training.png").is_file() and 'id="training"' in page
    for seed in (0, 1, 2):
        assert f"<td>datadream-dset seed {seed}</td><td class=\"num\">1</td>" in page
        assert f"<td>datadream-cls seed {seed}</td><td class=\"num\">3</td>" in page
    assert page.count("<tr><td>classifier training</td>") == len(table) * 3 - 3  # zero-shot trains nothing
    rerun = run_dd("compare", "--methods", ALL_METHODS, "--classifiers", "clip-vitb16", "--seeds", "0,1,2",
                   "--out", str(out), "--data", str(tiny_folder), *FAST, *FAST_ADAPTER, *TINY_DISEF,
                   "--quality-features", "pixels")
    assert rerun.returncode == 0, rerun.stderr
    assert "training classifier" not in rerun.stderr and rerun.stderr.count("reusing") >= 30
    # The set-quality measures in another feature space: the rerun's report says which.
    assert "pixels (16x16 RGB)" in (out / "report" / "index.html").read_text()
    assert set(json.loads((out / "quality.json").read_text())) == set(quality)


@pytest.mark.slow
def test_a_class_the_filter_empties_is_reported_not_a_crash(tiny_folder, tmp_path, monkeypatch):
    from dd_plugins.clip_filter import ClipFilter

    monkeypatch.setattr(ClipFilter, "keep", lambda self, images, items: [item.label != 0 for item in items])
    base = config_for(tiny_folder, tmp_path / "x", "--filter", "clip", "--set", "filter.model=tiny",
                      "--set", "filter.max_attempts_per_class=4")
    spec = CompareSpec(methods=["sd-txt2img"], classifiers=["clip-vitb16"], seeds=[0], base=base,
                       out=tmp_path / "cmp", settings=["real+synthetic"])
    rows = run_matrix(spec)
    first_class = rows[0]["per_class"] and sorted(rows[0]["per_class"])[0]
    assert rows[0]["short_classes"] == [first_class]
    assert table_rows(rows)[0]["short_classes"] == [first_class]


def test_scaling_study_over_images_per_class_reuses_the_larger_set(tiny_folder, tmp_path):
    from ddcore.compare import scaling_rows

    base = config_for(tiny_folder, tmp_path / "x", "--images-per-class", "3")
    spec = CompareSpec(methods=["issynth"], classifiers=["clip-vitb16"], seeds=[0], base=base, out=tmp_path / "cmp",
                       settings=["synthetic"], scale_images=[1, 3])
    rows = run_matrix(spec)
    assert [(r["study"], r["images_per_class"]) for r in rows] == [("", 3), ("images_per_class", 1)]
    assert len(_folders(spec.out, "synthetic")) == 1  # 1 per class is the first image of the 3-per-class set
    points = scaling_rows(rows, spec)
    assert [(p["study"], p["x"]) for p in points] == [("images_per_class", 1), ("images_per_class", 3)]
    assert json.loads(next((spec.out / "store" / "classifier").glob("*/stage.json")).read_text())["synthetic"] in (3, 9)


# -- the base model as an axis (--base-models) -------------------------------------------------

FAMILY_MODELS = ["tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux"]


def test_plan_runs_the_generators_per_base_model_and_the_others_once(tmp_path):
    from ddcore.compare import run_config

    base = config_for_defaults()
    spec = CompareSpec(methods=["zero-shot", "real-finetune", "sd-txt2img"], classifiers=["clip-vitb16"], seeds=[0, 1],
                       base=base, out=tmp_path, base_models=["tiny", "tiny-sdxl", "tiny", "org/model", "/models/sd15/"],
                       scale_images=[1], scale_shots=[1])
    assert spec.base_models == ["tiny", "tiny-sdxl", "org/model", "/models/sd15/"]  # each once, in order
    runs = plan(spec, Plugins())
    main = [r for r in runs if not r.study]
    assert len(main) == (1 + 1 + 4 * 2) * 2  # zero-shot, real-finetune once; sd-txt2img x 4 models x 2 settings
    assert {r.base_model for r in main if r.method in ("zero-shot", "real-finetune")} == {None}
    generated = [r for r in main if r.method == "sd-txt2img"]
    assert [r.base_model for r in generated if r.setting == "synthetic" and r.seed == 0] == spec.base_models
    assert {r.name for r in generated if r.seed == 0 and r.setting == "synthetic"} == {
        "sd-txt2img@tiny-clip-vitb16-synthetic-seed0", "sd-txt2img@tiny-sdxl-clip-vitb16-synthetic-seed0",
        "sd-txt2img@org--model-clip-vitb16-synthetic-seed0", "sd-txt2img@sd15-clip-vitb16-synthetic-seed0"}
    assert "zero-shot-clip-vitb16-none-seed0" in {r.name for r in main}
    # Both scaling studies per base model for the generator, once for the others.
    images = [r for r in runs if r.study == "images_per_class"]
    assert sorted(r.base_model for r in images if r.seed == 0) == sorted(spec.base_models)
    shots = [r for r in runs if r.study == "shots" and r.seed == 0]
    assert sorted((r.method, r.base_model or "-") for r in shots) == sorted(
        [("zero-shot", "-"), ("real-finetune", "-")] + [("sd-txt2img", m) for m in spec.base_models])
    assert len({r.name for r in runs}) == len(runs)
    # Each run's config has its base model; a run without a generator has the first one's.
    configs = {r.name: run_config(spec, r).base_model for r in runs}
    assert configs["sd-txt2img@tiny-sdxl-clip-vitb16-synthetic-seed0"] == "tiny-sdxl"
    assert configs["sd-txt2img@sd15-clip-vitb16-real_synthetic-seed1"] == "/models/sd15/"
    assert configs["real-finetune-clip-vitb16-real-seed0"] == "tiny"
    # Folder names tell the models apart by their short names: two that agree are an error.
    clash = CompareSpec(methods=["sd-txt2img"], classifiers=["clip-vitb16"], seeds=[0], base=base, out=tmp_path,
                        base_models=["/a/sd15", "/b/sd15"])
    with pytest.raises(ConfigError, match="same short name 'sd15'"):
        plan(clash, Plugins())


def test_without_base_models_the_plan_and_the_table_are_as_before(tmp_path):
    from ddcore.compare import run_config
    from ddcore.report import table_csv, table_markdown

    base = config_for_defaults()
    spec = CompareSpec(methods=["zero-shot", "issynth"], classifiers=["clip-vitb16"], seeds=[0], base=base, out=tmp_path)
    assert spec.base_models == [base.base_model] and not spec.faceted
    runs = plan(spec, Plugins())
    assert [r.name for r in runs] == ["zero-shot-clip-vitb16-none-seed0", "issynth-clip-vitb16-synthetic-seed0",
                                      "issynth-clip-vitb16-real_synthetic-seed0"]
    assert {r.base_model for r in runs} == {None} and {run_config(spec, r).base_model for r in runs} == {base.base_model}
    # One base model given with --base-models is the same as --base-model: no axis.
    single = CompareSpec(methods=["issynth"], classifiers=["clip-vitb16"], seeds=[0], base=base, out=tmp_path,
                         base_models=["tiny-sdxl"])
    assert [r.name for r in plan(single, Plugins())][0] == "issynth-clip-vitb16-synthetic-seed0"
    assert run_config(single, plan(single, Plugins())[0]).base_model == "tiny-sdxl"

    def result(method, setting, seed, top1, base_model=None):
        return {"method": method, "classifier": "clip-vitb16", "setting": setting, "seed": seed, "study": "",
                "top1": top1, "mean_per_class": top1, "short_classes": [], "base_model": base_model}

    rows = [result("zero-shot", "none", 0, 0.5), result("issynth", "synthetic", 0, 0.6),
            result("issynth", "synthetic", 1, 0.8)]
    table = table_rows(rows)
    assert all("base_model" not in t for t in table)  # table.json's rows as before
    assert table_markdown(table).splitlines()[0] == (
        "| setting | method | classifier | training data | top-1 (%) | mean per-class (%) | per-seed top-1 (%) "
        "| seeds | warnings |")
    # With base models: a column after the method, "-" for the row that does not depend on one.
    faceted = table_rows([result("zero-shot", "none", 0, 0.5), result("issynth", "synthetic", 0, 0.6, "tiny"),
                          result("issynth", "synthetic", 0, 0.7, "/m/my|model")])
    assert [t["base_model"] for t in faceted] == [None, "tiny", "/m/my|model"]
    lines = table_markdown(faceted).splitlines()
    assert lines[0].startswith("| setting | method | base model | classifier | training data |")
    assert lines[1].count("|") == lines[0].count("|") == lines[2].count("|") - lines[2].count("\\|")
    assert [line.split(" | ")[2] for line in lines[2:]] == ["-", "tiny", "my\\|model"]
    assert "| **70.0 ± 0.0** |" in lines[4]  # the best of its group, bold as before
    csv_lines = table_csv(faceted).splitlines()
    assert csv_lines[0].startswith("group,setting,method,base_model,classifier,")
    assert csv_lines[1].split(",")[3] == "" and csv_lines[2].split(",")[3] == "tiny"


def test_an_unsupported_method_and_base_model_pair_is_refused_before_any_run(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "cmp"
    result = run_dd("compare", "--methods", "real-finetune,diffusion-inversion,varireal,sd-txt2img",
                    "--base-models", "tiny,tiny-sdxl,tiny-flux", "--classifiers", "clip-vitb16", "--seeds", "0",
                    "--out", str(out), "-q", "--data", str(tiny_folder), *FAST)
    assert result.returncode == 1, result.stderr
    error = " ".join(result.stderr.split())
    assert error.startswith("error: dd compare: 4 (method, base model) pairs cannot run:"), error
    for method in ("diffusion-inversion", "varireal"):
        for model in ("tiny-sdxl", "tiny-flux"):
            assert f"{method} with {model} (" in error
    assert "varireal with tiny-sdxl (SDXL; its generator works with Stable Diffusion 1.x/2.x only)" in error
    assert "with tiny (" not in error and "sd-txt2img with" not in error  # SD and every-family pairs are fine
    assert not out.exists()  # nothing ran: no run folder, no store


@pytest.mark.slow
def test_dd_compare_over_base_models_of_every_family(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "families"
    generators = ["sd-txt2img", "datadream-dset"]
    result = run_dd("compare", "--methods", "zero-shot,real-finetune," + ",".join(generators),
                    "--base-models", ",".join(FAMILY_MODELS), "--classifiers", "clip-vitb16", "--seeds", "0",
                    "--settings", "synthetic", "--out", str(out), "-q", "--data", str(tiny_folder), *FAST,
                    *FAST_ADAPTER, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    expected = [("zero-shot", None), ("real-finetune", None)] + [(g, m) for g in generators for m in FAMILY_MODELS]
    table = json.loads((out / "table.json").read_text())
    assert sorted((t["method"], t["base_model"] or "-") for t in table) == sorted(
        (method, model or "-") for method, model in expected)  # a row per generator and base model, others once
    assert all(t["seeds"] == [0] and 0 <= t["top1_mean"] <= 1 for t in table)
    lines = (out / "table.md").read_text().splitlines()
    assert lines[0].startswith("| setting | method | base model | classifier | training data |")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert sorted((c[1], c[2]) for c in cells) == sorted((method, model or "-") for method, model in expected)
    shown = {(c[1], c[2]): c for c in cells}
    for t in table:  # the markdown shows table.json's numbers
        assert shown[t["method"], t["base_model"] or "-"][5].strip("*").startswith(f"{100 * t['top1_mean']:.1f} ±")
    assert (out / "table.csv").read_text().startswith("group,setting,method,base_model,classifier,")
    # A run folder per generating run and base model, the others once; stages per base model.
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        ["zero-shot-clip-vitb16-none-seed0", "real-finetune-clip-vitb16-real-seed0"]
        + [f"{g}@{m}-clip-vitb16-synthetic-seed0" for g in generators for m in FAMILY_MODELS])
    for model in FAMILY_MODELS:
        run = json.loads((out / "runs" / f"datadream-dset@{model}-clip-vitb16-synthetic-seed0" / "run.json").read_text())
        assert run["config"]["base_model"] == model
    assert len(_folders(out, "adapter")) == 4  # a DataDream adapter per base model
    assert len(_folders(out, "synthetic")) == 2 * 4 and len(_folders(out, "classifier")) == 2 + 2 * 4
    compare = json.loads((out / "compare.json").read_text())
    assert compare["base_models"] == FAMILY_MODELS and len(compare["runs"]) == len(expected)
    # Set quality per base model, then generator; every set against the same real images.
    quality = json.loads((out / "quality.json").read_text())
    assert sorted(quality) == sorted(FAMILY_MODELS) and all(set(q) == set(generators) for q in quality.values())
    measured = [q[g]["all"] for q in quality.values() for g in generators]
    assert len({m["n_real"] for m in measured}) == 1 and all(m["fd"] is not None for m in measured)
    page = (out / "report" / "index.html").read_text()
    for generator in generators:
        for model in FAMILY_MODELS:  # its table row, its grid column, its quality row
            assert page.count(f"{generator} @ {model}<") >= 3
    assert "base models: tiny, tiny-sdxl, tiny-sd3, tiny-flux" in page
    assert (out / "report" / "table.md").read_text() == (out / "table.md").read_text()
    assert "datadream-dset @ tiny-flux" in result.stdout and "real-finetune " in result.stdout  # the console table
