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
