"""Run benchmark scripts one after another in this one Python process, each as
``python SCRIPT ARGS...`` would run it (as ``__main__``, through runpy). Reads one command per
line on stdin. ``gpu.sh --smoke`` uses it: importing torch, diffusers and open_clip takes about
9 s on 2 CPUs, and the smoke run checks that the scripts and flags work, not what a fresh
process costs (the real run starts a process per script, so no script's timings see another's
warm caches)."""

from __future__ import annotations

import runpy
import shlex
import sys
import time
from pathlib import Path


def run(line: str) -> None:
    script, *args = shlex.split(line)
    folder = str(Path(script).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # as `python SCRIPT` puts the script's folder first
    print(f"== {line}", flush=True)
    start = time.perf_counter()
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise
    print(f"   {Path(script).stem}: {time.perf_counter() - start:.0f} s", flush=True)


def main() -> None:
    for line in sys.stdin.read().splitlines():
        if line.strip():
            run(line)


if __name__ == "__main__":
    main()
