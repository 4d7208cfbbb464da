"""Every method preset resolves to its protocol table (dd_plugins.fidelity, docs/fidelity.md).

Each method is resolved as `dd run --method M --dataset D --shots K` would, on in-memory data
sets with the benchmarks' real class counts (no image is read), and every row of its protocol,
and of its classifier's, is checked against the resolved value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dd_plugins.benchmark_datasets import BENCHMARKS
from dd_plugins.fidelity import CLASSIFIERS, PROTOCOLS, markdown_tables

from ddcore.config import resolve
from ddcore.explain import MISSING, Case, lookup, protocol_rows
from ddcore.pipeline import Run
from ddcore.plugins import Plugins
from ddcore.records import Dataset, Sample

ROOT = Path(__file__).resolve().parent.parent
CASES = [Case("eurosat", 1, 10), Case("eurosat", 16, 10), Case("fgvc_aircraft", 1, 100), Case("fgvc_aircraft", 2, 100),
         Case("fgvc_aircraft", 16, 100), Case("oxford_pets", 4, 37), Case("imagenet", 1, 1000), Case("imagenet", 16, 1000)]


@pytest.fixture(scope="module")
def plugins():
    return Plugins()


def dataset_for(case: Case) -> Dataset:
    """A benchmark's name, domain, templates and class count, with exactly K (unread) shots a class."""
    bench = BENCHMARKS[case.dataset]
    names = [f"class {c}" for c in range(case.classes)]
    train = [Sample(Path(f"/nowhere/{c}/{k}.jpg"), c, names[c]) for c in range(case.classes) for k in range(case.shots)]
    return Dataset(name=case.dataset, classnames=names, train=train, test=[], domain=bench.domain,
                   templates=[bench.template])


def resolved_run(plugins, method: str, case: Case, classifier: str = "clip-vitb16", **cli) -> tuple[Run, dict]:
    config = resolve({}, {"method": method, "dataset": case.dataset, "shots": case.shots, "classifier": classifier,
                          "device": "cpu", **cli})
    dataset = dataset_for(case)
    run = Run(config, plugins, dataset=dataset)
    run.context.shots = list(dataset.train)
    return run, run.resolved()


@pytest.mark.parametrize("method", sorted(PROTOCOLS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.dataset}-{c.shots}shot")
def test_every_method_resolves_to_its_protocol(plugins, method, case):
    run, resolved = resolved_run(plugins, method, case)
    rows = protocol_rows(run.method, run.stages, resolved)
    keys = [row.setting.key for row in rows]
    assert set(s.key for s in PROTOCOLS[method]) <= set(keys)
    wrong = {row.setting.key: (row.value, row.expected) for row in rows if row.value is MISSING or row.differs}
    assert not wrong, f"{method} on {case}: resolved != protocol: {wrong}"


@pytest.mark.parametrize("classifier", sorted(CLASSIFIERS))
def test_every_classifier_resolves_to_its_protocol(plugins, classifier):
    case = Case("fgvc_aircraft", 16, 100)
    run, resolved = resolved_run(plugins, "datadream-dset", case, classifier=classifier)
    for row in type(run.stages["classifier"]).protocol:
        assert lookup(resolved, row.key) == row.expected(case), row.key
    assert {r.key for r in CLASSIFIERS[classifier]} <= {r.key for r in type(run.stages["classifier"]).protocol}


def test_a_changed_setting_shows_as_differing(plugins):
    run, resolved = resolved_run(plugins, "issynth", Case("eurosat", 16, 10), steps=50, options={"generator": {"strength": 0.5}})
    rows = {row.setting.key: row for row in protocol_rows(run.method, run.stages, resolved)}
    assert rows["steps"].differs and rows["steps"].value == 50 and rows["steps"].expected == 20
    assert rows["generator.strength"].differs and rows["guidance"].value == 8.0 and not rows["guidance"].differs


def test_cls_at_one_shot_reaches_the_peak_learning_rate_and_trains_the_official_steps(plugins):
    """The old default gave each of 100 classes 26 steps inside a 100-step warm-up: the learning
    rate never reached 1e-4 and the cosine never ran."""
    import torch
    from diffusers.optimization import get_scheduler

    def trajectory(group):
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=group.warmup, num_training_steps=group.steps)
        lrs = []
        for _ in range(group.steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return lrs

    case = Case("fgvc_aircraft", 1, 100)
    for options, steps in (({}, 200), ({"cls_steps": "equal-compute"}, 26)):
        run, _ = resolved_run(plugins, "datadream-cls", case, options={"adapter": options})
        groups = run.stages["adapter"].groups(run.context)
        assert len(groups) == 100 and {g.steps for g in groups} == {steps}
        lrs = trajectory(groups[0])
        assert max(lrs) == pytest.approx(1e-4)
        assert lrs[-1] < 0.05 * max(lrs)  # the cosine phase ran to its end


def test_max_steps_is_the_total_in_both_modes(plugins):
    case = Case("eurosat", 16, 10)
    dset, _ = resolved_run(plugins, "datadream-dset", case, options={"adapter": {"max_steps": 1000}})
    cls, _ = resolved_run(plugins, "datadream-cls", case, options={"adapter": {"max_steps": 1000}})
    assert [g.steps for g in dset.stages["adapter"].groups(dset.context)] == [1000]
    assert [g.steps for g in cls.stages["adapter"].groups(cls.context)] == [100] * 10


def test_imagenet_epochs_are_a_per_dataset_preset_a_user_can_override(plugins):
    run, resolved = resolved_run(plugins, "datadream-dset", Case("imagenet", 1, 1000))
    assert resolved["stages"]["adapter"]["options"]["epochs"] == 100
    run, resolved = resolved_run(plugins, "datadream-dset", Case("imagenet", 1, 1000), options={"adapter": {"epochs": 7}})
    assert resolved["stages"]["adapter"]["options"]["epochs"] == 7
    run, resolved = resolved_run(plugins, "datadream-cls", Case("imagenet", 1, 1000))
    assert resolved["stages"]["adapter"]["options"]["epochs"] == 200  # Sec. 4.1: dset only


def test_the_fidelity_doc_is_generated_from_the_rows():
    text = (ROOT / "docs" / "fidelity.md").read_text()
    assert markdown_tables() in text
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "fidelity-table"), "--check"], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.slow
def test_explain_prints_the_resolved_protocol_and_writes_nothing(tmp_path, tiny_folder, run_dd):
    out = tmp_path / "run"
    result = run_dd("run", "--data", str(tiny_folder), "--method", "issynth", "--shots", "2", "--out", str(out),
                    "--explain", env={"COLUMNS": "250"}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for expected in ("Run settings", "Protocol", "DPMSolverMultistepScheduler", "generator.strength", "0.75"):
        assert expected in result.stdout
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_run_json_records_the_resolved_settings(tmp_path, tiny_folder, plugins):
    config = resolve({}, {"method": "issynth", "data": str(tiny_folder), "shots": 2, "out": str(tmp_path / "run"),
                          "device": "cpu"})
    Run(config, plugins).prepare()
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["config"]["steps"] == 20 and recorded["config"]["guidance"] == 8.0
    assert recorded["resolved"]["stages"]["generator"]["options"]["scheduler"] == "DPMSolverMultistepScheduler"
    assert recorded["resolved"]["stages"]["classifier"]["options"]["templates"] == "datadream"
