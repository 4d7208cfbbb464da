"""Several processes through `accelerate launch` (gloo on the CPU) give the same results as one."""

from __future__ import annotations

import pytest

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import FAST, dd_here

ARGS = [*FAST, "--images-per-class", "3", "--batch-size", "2",
        "--set", "adapter.max_steps=4", "--set", "adapter.batch_size=4", "--set", "adapter.warmup_steps=1"]


def free_port() -> int:
    """A port no one listens on now (a fixed one clashes between parallel test workers)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, out: Path, tiny_folder: Path, method: str,
           flags: tuple[str, ...] = ("-q",), dd_args: list[str] | None = None) -> subprocess.CompletedProcess:
    """``dd`` on ``processes`` processes through ``accelerate launch``; one process runs in this
    one (a subprocess would only import torch again), with one torch thread as each launched
    process has (OMP_NUM_THREADS=1): the same threads, the same float sums."""
    dd_args = dd_args or ["run", "--data", str(tiny_folder), "--out", str(out), "--method", method, *flags, *ARGS]
    if processes == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            result = dd_here(*dd_args)
        finally:
            torch.set_num_threads(threads)
    else:
        command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port()), "-m", "ddcore", *dd_args]
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def png_digests(out: Path) -> dict[str, str]:
    root = next(out.glob("synthetic/*"))
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def lora(out: Path, group: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(next(out.glob(f"adapter/*/{group}/pytorch_lora_weights.safetensors"))))


@pytest.mark.slow
def test_cls_adapters_and_generation_split_across_two_processes_match_one(tiny_folder, tmp_path):
    """cls mode splits the classes over the processes: rank 0 trains classes 0 and 2, rank 1
    class 1. The adapters and the set are those of one process; without --verbose only rank 0's
    messages and bars reach the log."""
    launch(1, tmp_path / "one", tiny_folder, "datadream-cls")
    log = launch(2, tmp_path / "two", tiny_folder, "datadream-cls", flags=()).stderr
    one_set, two_set = png_digests(tmp_path / "one"), png_digests(tmp_path / "two")
    assert len(one_set) == 9 and one_set == two_set  # byte for byte
    for group in ("blue_stripes", "green_circle", "red_square"):
        a, b = lora(tmp_path / "one", group), lora(tmp_path / "two", group)
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "two" / "metrics.json").is_file()
    assert log.count("training adapter 'datadream-cls'") == 1
    assert "training adapter blue_stripes:" in log and "training adapter red_square:" in log
    assert "training adapter green_circle" not in log  # rank 1's class trained, silently
    assert log.count("generating images:") >= 1 and "loss" in log
    assert next((tmp_path / "two").glob("adapter/*/train_log/green_circle.jsonl")).is_file()


def test_verbose_shows_every_processs_progress(monkeypatch):
    from dd_cli.app import _reporter

    monkeypatch.setenv("RANK", "1")
    assert not _reporter(quiet=False).enabled and _reporter(quiet=False, verbose=True).enabled
    monkeypatch.setenv("RANK", "0")
    assert _reporter(quiet=False).enabled and not _reporter(quiet=True).enabled


@pytest.mark.slow
def test_dset_adapter_trains_data_parallel_to_the_single_process_weights(tiny_folder, tmp_path):
    launch(1, tmp_path / "one", tiny_folder, "datadream-dset")
    launch(2, tmp_path / "two", tiny_folder, "datadream-dset")
    a, b = lora(tmp_path / "one", "dataset"), lora(tmp_path / "two", "dataset")
    assert a.keys() == b.keys()
    for key in a:  # the same maths; only the order of float sums differs
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)
    assert any(a[k].abs().max() > 0 for k in a if "lora_B" in k or "lora.up" in k)  # it trained


@pytest.mark.slow
def test_a_single_stage_command_runs_under_accelerate_launch(tiny_folder, tmp_path):
    """`dd generate RUN` on 2 processes: only the main one takes the run's lock (each used to,
    and the second was refused), and the set equals one process's."""
    for name in ("one", "two"):
        launch(1, tmp_path / name, tiny_folder, "", dd_args=[
            "run", "--data", str(tiny_folder), "--out", str(tmp_path / name), "--method", "sd-txt2img", "-q",
            "--stop-after", "prepare", *FAST, "--images-per-class", "3", "--batch-size", "2"])
    launch(1, tmp_path / "one", tiny_folder, "", dd_args=["generate", str(tmp_path / "one"), "-q"])
    launch(2, tmp_path / "two", tiny_folder, "", dd_args=["generate", str(tmp_path / "two"), "-q"])
    one_set, two_set = png_digests(tmp_path / "one"), png_digests(tmp_path / "two")
    assert len(one_set) == 9 and one_set == two_set


@pytest.mark.slow
def test_a_transformer_familys_set_is_the_same_on_two_processes(tiny_folder, tmp_path):
    """The per-image seeds hold on the other families too (SD3: a transformer, guidance, T5): 2
    processes make the same bytes as one."""
    for processes, name in ((1, "one"), (2, "two")):
        launch(processes, tmp_path / name, tiny_folder, "", dd_args=[
            "run", "--data", str(tiny_folder), "--out", str(tmp_path / name), "--method", "sd-txt2img", "-q",
            "--stop-after", "generate", *FAST, "--images-per-class", "3", "--batch-size", "2",
            "--base-model", "tiny-sd3"])
    one_set, two_set = png_digests(tmp_path / "one"), png_digests(tmp_path / "two")
    assert len(one_set) == 9 and one_set == two_set
