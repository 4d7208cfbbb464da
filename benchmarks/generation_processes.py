"""How generation scales with processes: `dd generate` in 1 process against `accelerate launch
--num_processes N` on the same run settings, each process with the same number of torch
threads (``--threads``; on a 2-core machine 1 thread each, so 2 processes use both cores).

Each side is a fresh run folder: `dd run --stop-after prepare` (untimed), then the timed
`dd generate RUN` (pipeline load, planning, rendering, writing; N processes deal the image
blocks out, the main one writes metadata.jsonl). The start-up of the interpreter and of
accelerate is part of both; a `dd generate` of a finished set (nothing to render) measures it,
and the table shows the times without it too. Efficiency = T(1) / (N x T(N)).

    python benchmarks/generation_processes.py --model tiny --processes 2 --threads 1
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # first: sets the offline environment before the heavy imports

NAME = "generation_processes"
DEFAULTS = {
    "tiny": {"images_per_class": 64, "classes": 4, "steps": 20, "batch": 4, "resolution": 32},
    "sd21-shapes": {"images_per_class": 16, "classes": 2, "steps": 25, "batch": 8, "resolution": 512},
}


def arguments():
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process, both sides")
    C.generation_arguments(p)
    return C.finish_args(p.parse_args(), NAME, DEFAULTS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dd_command(processes: int, *args: str) -> list[str]:
    bin_dir = Path(sys.executable).parent
    if processes == 1:
        return [str(bin_dir / "dd"), *args]
    return [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "ddcore", *args]


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    a = arguments()
    base = C.base_model_folder(a.model)
    work = C.workdir(a, "dd-bench-procs-")
    data = C.write_image_folder(work / "data", a.classes, train=1)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    settings = ["--data", str(data), "--method", "sd-txt2img", "--base-model", str(base), "--device", a.device,
                "--shots", "1", "--images-per-class", str(a.images_per_class), "--steps", str(a.steps),
                "--batch-size", str(a.batch), "--resolution", str(a.resolution), "--classifier-model", "tiny", "-q"]
    total = a.images_per_class * a.classes
    print(f"{a.model} on {a.device}: {total} images, {a.resolution} px, {a.steps} steps, batch {a.batch}; "
          f"1 vs {a.processes} processes, {a.threads} thread(s) each; {a.repeats} repeats")
    results: dict[int, dict[str, list[float]]] = {1: {"total_s": [], "startup_s": []},
                                                  a.processes: {"total_s": [], "startup_s": []}}
    for r in range(a.repeats):
        for processes in ((1, a.processes) if r % 2 == 0 else (a.processes, 1)):
            out = work / f"run-{processes}-{r}"
            timed(dd_command(1, "run", *settings, "--out", str(out), "--stop-after", "prepare"), env)
            seconds = timed(dd_command(processes, "generate", str(out), "-q"), env)
            startup = timed(dd_command(processes, "generate", str(out), "-q"), env)  # nothing left to render
            results[processes]["total_s"].append(seconds)
            results[processes]["startup_s"].append(startup)
            print(f"  repeat {r + 1}: {processes} process(es) {seconds:.2f} s (start-up and reuse {startup:.2f} s)")
            shutil.rmtree(out, ignore_errors=True)
    summary = {}
    for processes, runs in results.items():
        t = C.summary(runs["total_s"])["median_s"]
        s = C.summary(runs["startup_s"])["median_s"]
        summary[processes] = {"median_s": t, "startup_median_s": s, "images_per_s": total / t,
                              "images_per_s_without_startup": total / max(t - s, 1e-9), **runs}
    one, many = summary[1], summary[a.processes]
    efficiency = one["median_s"] / (a.processes * many["median_s"])
    efficiency_work = (one["median_s"] - one["startup_median_s"]) / (
        a.processes * (many["median_s"] - many["startup_median_s"]))
    C.print_table(f"Generation, 1 vs {a.processes} processes: {a.model}, {a.device}",
                  ["", "1 process", f"{a.processes} processes", "efficiency"],
                  [["images/s (median)", one["images_per_s"], many["images_per_s"], efficiency],
                   ["images/s without start-up", one["images_per_s_without_startup"],
                    many["images_per_s_without_startup"], efficiency_work],
                   ["start-up s (median)", one["startup_median_s"], many["startup_median_s"], float("nan")]],
                  note="efficiency = T(1) / (N x T(N)); 1.0 is perfect scaling")
    C.write_json(a.out, {"benchmark": NAME, "model": a.model, "device": a.device,
                         "settings": {k: getattr(a, k) for k in ("processes", "threads", "images_per_class", "classes",
                                                                 "steps", "batch", "resolution", "repeats")},
                         "env": C.environment(a.device), "one": one, "many": many,
                         "ratio_efficiency": efficiency, "ratio_efficiency_without_startup": efficiency_work})
    C.clean_workdir(a, work)


if __name__ == "__main__":
    main()
