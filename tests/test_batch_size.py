"""The generation batch size when --batch-size is left out (ddcore/batch_size.py)."""

from __future__ import annotations

import pytest

from ddcore.batch_size import CPU_BATCH_SIZE, MAX_BATCH_SIZE, batch_size_for, choose_batch_size

GiB = 2**30


def test_the_batch_is_the_usable_share_of_free_memory_over_one_images_cost():
    assert batch_size_for(10 * GiB, 1 * GiB) == 8  # 80 % of 10 GiB holds 8 images of 1 GiB
    assert batch_size_for(10 * GiB, 3 * GiB) == 2
    assert batch_size_for(1 * GiB, 3 * GiB) == 1  # never below one
    assert batch_size_for(1000 * GiB, GiB // 10) == MAX_BATCH_SIZE
    assert batch_size_for(1000 * GiB, 0) == MAX_BATCH_SIZE  # a probe that measured nothing


def test_off_a_gpu_nothing_is_probed_and_on_one_the_probe_renders_one_image():
    rendered = []
    assert choose_batch_size("cpu", lambda: rendered.append(1), count=500)[0] == CPU_BATCH_SIZE
    assert rendered == []

    def probe(device, render_one):
        assert device == "cuda:1"
        render_one()
        return 40 * GiB, 2 * GiB

    size, why = choose_batch_size("cuda:1", lambda: rendered.append(1), count=500, probe=probe)
    assert (size, rendered) == (16, [1])
    assert "2.00 GiB per image" in why and "40.0 GiB free" in why
    # a block never spans classes: more than the images per class buys nothing
    assert choose_batch_size("cuda:1", lambda: None, count=5, probe=probe)[0] == 5


@pytest.mark.slow
def test_a_run_without_batch_size_logs_its_choice_and_makes_the_set(tiny_folder, tmp_path):
    from ddcore.api import Run
    from conftest import RecordingReporter, config_for

    config = config_for(tiny_folder, tmp_path / "r", "--method", "sd-txt2img", batch_size=None)
    reporter = RecordingReporter()
    run = Run(config, reporter=reporter)
    run.prepare()
    made = run.generate()
    assert len(made.items) == 2 * len(run.dataset.classnames)
    assert any("generation batch size 2 (8 off a GPU" in line for line in reporter.messages)
