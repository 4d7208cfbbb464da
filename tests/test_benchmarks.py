"""benchmarks/gpu.sh --smoke: every benchmark script and flag the GPU run uses still works (on the
CPU, tiny model, one repeat) and writes its JSON. Timings are not asserted: speed is measured by
the scripts, never by tests."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ratio_values(record: dict, inside: bool = False):
    """Every ``ratio_*`` value (and every value under a ``ratios`` key), at any depth."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from ratio_values(value, inside=key == "ratios")
        elif (inside or key.startswith("ratio_")) and not isinstance(value, (list, str)):
            yield value


@pytest.mark.slow
def test_the_gpu_script_runs_every_benchmark_in_smoke_mode(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--smoke", "--out", str(tmp_path),
                             "--python", sys.executable], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = {"adapter_training", "generation", "cls_adapter_swap", "shortcuts", "inversion", "classifier"}
    assert {p.stem for p in tmp_path.glob("*.json")} == names
    for name in names:
        record = json.loads((tmp_path / f"{name}.json").read_text())
        assert record["benchmark"] == name and record["device"] == "cpu" and record["env"]
        ratios = list(ratio_values(record))
        assert ratios and all(isinstance(r, float) and math.isfinite(r) and r > 0 for r in ratios), (name, record)
    generation = json.loads((tmp_path / "generation.json").read_text())
    assert generation["writers_off"]["ratio_time_median"] > 0  # the writer-threads comparison ran
    shortcuts = json.loads((tmp_path / "shortcuts.json").read_text())
    assert len(shortcuts["ratios"]) == 4 and all(0 < row["mean_abs_pixel_difference"] < 1
                                                   for row in shortcuts["rows"][1:])


def test_the_gpu_script_refuses_unknown_flags():
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--fast"], capture_output=True, text=True)
    assert result.returncode == 2 and "usage: bash benchmarks/gpu.sh" in result.stderr
