"""Training you can watch and trust: train_log.jsonl, progress lines off a terminal, trackers,
checkpoints that cannot run code, and the fp16 gradient scaler."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from ddcore.api import Reporter, StageError, TrainLog, load_state, read_train_log, save_state, train_logs
from ddcore.errors import ConfigError
from ddcore.train_log import log_path

from conftest import FAST, FAST_ADAPTER, dd_here


def _reporter(interval: float) -> tuple[Reporter, io.StringIO]:
    buffer = io.StringIO()
    return Reporter(Console(file=buffer, force_terminal=False, width=200), interval=interval), buffer


# -- progress off a terminal -------------------------------------------------------------------

def test_a_bar_off_a_terminal_prints_a_line_per_interval_with_its_status():
    reporter, buffer = _reporter(interval=0)  # every advance is "an interval later"
    with reporter.task("training adapter", 4) as advance:
        advance(0)
        for step in range(1, 5):
            advance(1, loss=1.0 / step, lr=1e-4 * step)
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("training adapter: 0/4 (0%)")
    assert lines[1].startswith("training adapter: 1/4 (25%)") and "loss 1  lr 1.00e-04" in lines[1]
    assert lines[-1].startswith("training adapter: 4/4 (100%)") and "loss 0.25  lr 4.00e-04" in lines[-1]
    assert len(lines) == 5  # the end is not printed twice
    assert ", eta " in lines[2] and ", eta " not in lines[-1]


def test_a_bar_off_a_terminal_prints_once_when_the_interval_is_long():
    reporter, buffer = _reporter(interval=3600)
    with reporter.task("generating images", 100) as advance:
        for _ in range(100):
            advance(1)
    assert buffer.getvalue().splitlines() == [buffer.getvalue().splitlines()[0]]
    assert buffer.getvalue().startswith("generating images: 100/100 (100%)")


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DD_PROGRESS_INTERVAL", "7.5")
    assert Reporter().interval == 7.5


# -- train_log.jsonl ---------------------------------------------------------------------------

def test_a_resumed_log_drops_the_steps_trained_again_and_a_cut_line(tmp_path):
    with TrainLog(tmp_path, start=0, stage="classifier") as log:
        for step in range(1, 8):
            log.step(step, loss=float(step), lr=0.1, grad_norm=1.0, images=4)
    with open(log_path(tmp_path), "a") as fh:
        fh.write('{"step": 8, "loss": 8.0, "l')  # a kill in the middle of a line
    with TrainLog(tmp_path, start=5, stage="classifier") as log:  # the checkpoint was at step 5
        for step in range(6, 10):
            log.step(step, loss=float(step) + 0.5, lr=0.1)
    entries = read_train_log(log_path(tmp_path))
    assert [e["step"] for e in entries] == list(range(1, 10))
    assert [e["loss"] for e in entries[4:7]] == [5.0, 6.5, 7.5]  # steps 6 and 7 from the resumed run
    assert entries[0]["images_per_s"] > 0 and entries[0]["grad_norm"] == 1.0 and "images_per_s" not in entries[6]


def test_parts_get_a_file_each_and_send_their_values_to_the_trackers(tmp_path):
    sent = []

    class Recording(Reporter):
        def metrics(self, values, step):
            sent.append((step, values))

    for part in ("red", "blue"):
        with TrainLog(tmp_path, start=0, stage="adapter", part=part, reporter=Recording(enabled=False)) as log:
            status = log.step(1, loss=0.5, lr=1e-3, grad_norm=2.0, images=8)
    assert status == {"loss": 0.5, "lr": 1e-3}
    logs = train_logs(tmp_path)
    assert list(logs) == ["blue", "red"] and logs["red"][0]["part"] == "red"
    assert sent[0][0] == 1 and set(sent[0][1]) == {"adapter/red/loss", "adapter/red/lr", "adapter/red/grad_norm",
                                                    "adapter/red/images_per_s"}
    with TrainLog(tmp_path / "other", start=0, stage="adapter", enabled=False) as log:  # another process
        log.step(1, loss=0.5, lr=1e-3)
    assert not (tmp_path / "other").exists()


# -- checkpoints cannot run code -----------------------------------------------------------------

class _Payload:
    """Unpickling this runs ``Path.touch(marker)``: code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_with_a_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    planted = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "model": _Payload(marker)}, planted)
    with pytest.raises(StageError, match="refusing to resume from checkpoint .*not a plain tensor file"):
        load_state(planted)
    assert not marker.exists()
    # The trusted loader would have run it: the test's payload is real.
    torch.load(planted, weights_only=False)
    assert marker.exists()


def test_plain_checkpoints_round_trip(tmp_path):
    state = {"step": 4, "w": torch.arange(6.0).reshape(2, 3), "opt": {"state": {0: {"exp_avg": torch.ones(2)}},
                                                                     "param_groups": [{"lr": 0.1, "params": [0]}]}}
    save_state(tmp_path / "c.pt", state)
    loaded = load_state(tmp_path / "c.pt")
    assert loaded["step"] == 4 and torch.equal(loaded["w"], state["w"])
    assert loaded["opt"]["param_groups"][0]["lr"] == 0.1


def test_every_torch_load_in_the_code_is_weights_only():
    root = Path(__file__).resolve().parents[1]
    calls = [(path, line) for folder in ("ddcore", "plugins", "cli") for path in (root / folder).rglob("*.py")
             for line in path.read_text().splitlines() if "torch.load(" in line]
    assert calls, "the scan found no torch.load at all"
    assert all("weights_only=True" in line for _, line in calls), calls


def test_the_classifier_loop_refuses_a_planted_checkpoint(tiny_folder, tmp_path):
    marker = tmp_path / "payload-ran"
    out = tmp_path / "run"
    torch.save({"step": 1, "model": _Payload(marker)}, tmp_path / "planted.pt")
    from ddcore.pipeline import Run

    from test_pipeline import config_for

    run = Run(config_for(tiny_folder, out, "--method", "real-finetune"))
    run.prepare()
    stage = run.stage_dir("classifier").path
    stage.mkdir(parents=True)
    (tmp_path / "planted.pt").replace(stage / "checkpoint.pt")
    with pytest.raises(StageError, match="refusing to resume"):
        run.train()
    assert not marker.exists()


# -- the fp16 gradient scaler --------------------------------------------------------------------

def test_the_grad_scaler_skips_a_step_with_inf_gradients_and_trains_the_others(tmp_path):
    from dd_plugins.step_loop import train_steps

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    seen = []

    def loss_at(step):
        seen.append(weight.detach().clone())
        loss = (weight ** 2).sum()
        return loss * float("inf") if step == 1 else loss  # step 2 overflows

    train_steps(loss_at, [weight], optimizer, scheduler, steps=4, checkpoint=tmp_path / "c.pt", restore=lambda s: None,
                save=lambda step, **loop: None, checkpoint_every=100, max_grad_norm=1.0,
                reporter=Reporter(enabled=False), task="t", resuming="t", log_dir=tmp_path, grad_scaler=True)
    assert not torch.equal(seen[1], seen[0])  # step 1 trained
    assert torch.equal(seen[2], seen[1])  # step 2 was skipped: no inf reached the weights
    assert torch.isfinite(weight).all() and not torch.equal(weight.detach(), seen[2])  # steps 3 and 4 trained
    entries = read_train_log(log_path(tmp_path))
    assert [e["step"] for e in entries] == [1, 2, 3, 4] and entries[1]["grad_norm"] == float("inf")


def test_the_grad_scaler_state_is_checkpointed_and_restored(tmp_path):
    from dd_plugins.step_loop import save_checkpoint, train_steps

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    path = tmp_path / "c.pt"

    def loss_at(step):
        loss = (weight ** 2).sum()
        return loss * float("inf") if step == 0 else loss

    train_steps(loss_at, [weight], optimizer, scheduler, steps=3, checkpoint=path, restore=lambda s: None,
                save=lambda step, **loop: save_checkpoint(path, step, optimizer, scheduler, **loop),
                checkpoint_every=2, max_grad_norm=0.0, reporter=Reporter(enabled=False), task="t", resuming="t",
                log_dir=tmp_path, grad_scaler=True)
    scaler = load_state(path)["scaler"]
    assert scaler["scale"] == 65536.0 / 2  # halved once, by the inf step


# -- a run end to end: logs, progress lines, TensorBoard ---------------------------------------

def test_unknown_and_missing_trackers_fail_in_one_line(tiny_folder, tmp_path, monkeypatch):
    from ddcore import tracking
    from ddcore.pipeline import Run

    from test_pipeline import config_for

    with pytest.raises(ConfigError, match="unknown tracker 'tensorbored'; choose from .*tensorboard"):
        Run(config_for(tiny_folder, tmp_path / "a", "--method", "zero-shot", log_with="tensorbored"))
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match="--log-with wandb needs the 'wandb' package.*pip install wandb"):
        Run(config_for(tiny_folder, tmp_path / "b", "--method", "zero-shot", log_with="wandb"))
    assert tracking.flat_config({"a": {"b": None, "c": [1]}, "d": 2}) == {"a.b": "", "a.c": "[1]", "d": 2}


@pytest.mark.slow
def test_a_run_logs_every_training_step_to_files_progress_lines_and_tensorboard(tiny_folder, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    monkeypatch.setenv("DD_PROGRESS_INTERVAL", "0")
    result = dd_here("run", "--data", str(tiny_folder), "--out", str(out), "--method", "datadream-dset", *FAST,
                     *FAST_ADAPTER, "--set", "classifier.epochs=2", "--log-with", "tensorboard")
    assert result.returncode == 0, result.stderr[-2000:]
    adapter = train_logs(next(out.glob("adapter/*")))[None]
    classifier = train_logs(next(out.glob("classifier/*")))[None]
    assert [e["step"] for e in adapter] == [1, 2, 3, 4]
    assert [e["step"] for e in classifier] == list(range(1, len(classifier) + 1)) and len(classifier) >= 2
    assert all(e["loss"] > 0 and e["seconds"] > 0 for e in adapter + classifier)
    # Off a terminal, the bars are lines that carry the loss.
    lines = [l for l in result.stderr.splitlines() if l.startswith("training adapter: ")]
    assert len(lines) == 5 and "loss" in lines[-1] and lines[-1].startswith("training adapter: 4/4 (100%)")
    # TensorBoard's own reader reads what the run wrote.
    events = EventAccumulator(str(next(out.glob("logs/*"))), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"adapter/loss", "adapter/lr", "classifier/loss", "classifier/lr"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("adapter/loss")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("adapter/loss")] == pytest.approx([e["loss"] for e in adapter])
    assert sorted(t for t in tags["images"]) == ["samples/blue stripes", "samples/green circle", "samples/red square"]
    # dd report: the run's page with its result and the two stages' curves.
    report = dd_here("report", str(out))
    assert report.returncode == 0, report.stderr
    page = (out / "report" / "index.html").read_text()
    assert (out / "report" / "training.png").is_file() and page.count("<tr><td>") >= 2
    assert "<td>adapter (diffusion) training</td>" in page and "<td>classifier training</td>" in page
    assert '<td class="num">4</td>' in page  # the adapter's 4 steps
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["config"]["log_with"] == "tensorboard"
    assert "log_with" not in json.dumps(run_json["keys"])
