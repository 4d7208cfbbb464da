"""benchmarks/family_memory.py: its real-shape configurations are the published models', its
FLUX extrapolation is a straight line, and one training configuration runs in a child process.
Memory figures are measured by the script, never asserted here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import family_memory  # noqa: E402


def test_the_real_shape_configurations_have_the_published_parameter_counts():
    sdxl, sd3, flux = (family_memory.component_counts(f) for f in ("sdxl", "sd3", "flux"))
    assert sdxl["denoiser"] == 2_567_463_684  # SDXL base 1.0's U-Net
    assert flux["denoiser"] == 11_901_408_320  # FLUX.1-dev's transformer
    assert sd3["t5"] == flux["t5"] == 4_762_310_656  # T5-XXL's encoder
    assert sdxl["clip-l"] == 123_650_304 and sdxl["clip-g"] == 694_659_840  # CLIP ViT-L/14, OpenCLIP bigG (text)
    assert 2.2e9 < sd3["denoiser"] < 2.3e9  # SD 3.5 Medium's MMDiT-X (2 243 171 520 as built)
    assert set(flux) == {"denoiser", "clip-l", "vae", "t5"}  # FLUX.1 has one CLIP encoder


def test_flux_at_full_depth_is_the_line_through_the_two_measured_depths():
    low = {"peak_gb": 3.0, "weights_gb": 2.0, "lora_params": 100, "second_step_s": 1.0}
    high = {"peak_gb": 5.0, "weights_gb": 3.0, "lora_params": 200, "second_step_s": 2.0}
    full = family_memory.extrapolated(low, high, (2, 4))
    assert full == {"peak_gb": 3.0 + 2.0 * 8.5, "weights_gb": 2.0 + 8.5, "lora_params": 100 + 100 * 8.5,
                    "second_step_s": 1.0 + 8.5, "extrapolated": True}
    assert family_memory.extrapolated({"error": "killed"}, high, (2, 4)) == {"error": "killed"}


@pytest.mark.slow
def test_one_configuration_trains_in_a_child_process_and_reports_its_peak():
    result = family_memory.run_probe({"family": "flux", "dtype": "bfloat16", "checkpointing": True,
                                      "resolution": 32, "rank": 4, "units": 1})
    assert "error" not in result, result
    # one double- and two single-stream blocks of FLUX.1's width, in bf16
    assert 1.3 < result["weights_gb"] < 1.45 and result["peak_gb"] >= result["weights_gb"]
    assert result["lora_params"] > 0 and result["second_step_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("tiling", [False, True])
def test_the_vae_probe_decodes_one_image_in_a_child_process(tiling):
    result = family_memory.run_probe({"tiling": tiling, "resolution": 64})
    assert "error" not in result, result
    assert result["peak_gb"] >= result["weights_gb"] > 0.3  # the SDXL VAE's 83.7 M fp32 parameters
