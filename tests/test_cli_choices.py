"""The CLI's habits: --version, shell completion, and options whose values are a fixed set."""

from __future__ import annotations

from importlib.metadata import version

import pytest
import typer
from typer.testing import CliRunner

from dd_cli import choices
from dd_cli.app import app

runner = CliRunner()


def test_version_is_the_installed_distributions():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dd {version('datadream')}"


def test_completion_can_be_installed():
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output


@pytest.mark.parametrize("command, option, value, accepted", [
    (["run"], "--stop-after", "trian", "prepare, adapt, generate, train"),
    (["run"], "--train-on", "both", "real+synthetic, synthetic, real, none"),
    (["run"], "--device", "cuda:x", "auto, cpu, cuda, cuda:N, mps"),
    (["quality", "/nonexistent"], "--features", "inception", "clip, clip:SPEC, fid, fid:PATH"),
    (["quality", "/nonexistent"], "--features", "clip:", "clip, clip:SPEC"),
    (["quality", "/nonexistent"], "--real", "validation", "train, val, test, shots"),
    (["compare"], "--quality-features", "pixel", "classifier, clip, clip:SPEC"),
])
def test_a_value_outside_the_set_is_a_usage_error_naming_the_accepted_ones(command, option, value, accepted):
    result = runner.invoke(app, [*command, option, value], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.replace("│", " ").split())  # rich's error box, unwrapped
    assert f"Invalid value for {option}: {value!r} is not one of {accepted}" in text


def test_the_accepted_values_are_in_the_help():
    text = " ".join(runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "One of: real+synthetic, synthetic, real, none." in text
    assert "One of: prepare, adapt, generate, train." in text


def test_open_forms_take_their_argument():
    device = choices._form("--device", choices.DEVICES)
    assert [device(v) for v in ("auto", "cpu", "cuda", "cuda:1", "mps")] == ["auto", "cpu", "cuda", "cuda:1", "mps"]
    features = choices._form("--features", choices.SPACES)
    assert features("clip:ViT-B-32:openai") == "clip:ViT-B-32:openai" and features("fid:/w/pt_inception.pth")
    with pytest.raises(typer.BadParameter):
        features("pixels:16")  # a closed value takes no argument


def _complete(command: str, option: str, incomplete: str) -> list[str]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]
    param = next(p for p in cmd.params if option in p.opts)
    ctx = cmd.make_context(command, [], resilient_parsing=True)
    return [item.value for item in param.shell_complete(ctx, incomplete)]


def test_the_shell_completes_the_values():
    assert _complete("run", "--stop-after", "") == ["prepare", "adapt", "generate", "train"]
    assert _complete("run", "--stop-after", "ge") == ["generate"]
    assert _complete("run", "--train-on", "real") == ["real+synthetic", "real"]
    assert _complete("run", "--device", "cu") == ["cuda", "cuda:"]
    assert _complete("quality", "--features", "f") == ["fid", "fid:"]
