"""The Typer application. Commands parse their options, call ddcore, and render; no logic."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Optional

import click
import typer
from rich.console import Console
from rich.panel import Panel

from ddcore.config import load_toml, parse_set, resolve
from ddcore.search import parse_grid
from ddcore.errors import DDError, PluginError
from ddcore.plugins import Plugins
from ddcore.progress import Reporter

from dd_cli import choices
from dd_cli.render import (compare_table, doctor_tables, entries_named, explain_tables, option_rows, plugin_detail,
                           plugin_rows, plugins_table, predictions_table, print_json, quality_table, results_table,
                           results_title)

app = typer.Typer(
    add_completion=True,  # dd --install-completion / --show-completion
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="DataDream: adapt a diffusion model to a few labelled images, generate training data, "
         "train and compare classifiers.",
)
console = Console()
err_console = Console(stderr=True)
_plugins: Plugins | None = None


def get_plugins() -> Plugins:
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
        for info in _plugins.broken:
            err_console.print(f"[yellow]warning:[/] plugin '{info.name}' ({info.distribution}) failed to load: "
                              f"{info.error}", highlight=False, soft_wrap=True)
    return _plugins


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"dd {version('datadream')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Show the version and exit.")) -> None:
    """Global options (handled in main(): --debug)."""


def _reporter(quiet: bool, verbose: bool = False) -> Reporter:
    """Bars and messages on stderr: on the main process only when several run
    (``accelerate launch``), unless ``verbose``; none with ``quiet``."""
    from ddcore.distributed import launched_rank

    if launched_rank() != 0 and not verbose:
        return Reporter(Console(stderr=True, quiet=True), enabled=False)
    return Reporter(err_console, enabled=not quiet)


def _require_compatible() -> None:
    """Before any work: a known-broken combination of libraries fails here, in one line."""
    from ddcore.compat import require_compatible

    require_compatible(warn=lambda line: err_console.print(f"[yellow]warning:[/] {line}", highlight=False,
                                                           soft_wrap=True))


# Options shared by `dd run` and, later, `dd compare`.
Opt = typer.Option


@app.command()
def run(
    data: Optional[Path] = Opt(None, "--data", help="Data root: train/ and test/ class folders, or the root of --split paths."),
    split: Optional[Path] = Opt(None, "--split", help="CoOp split file (JSON) with paths relative to --data."),
    dataset: Optional[str] = Opt(None, "--dataset", help="Data set loader (see `dd plugins`); default from --data/--split."),
    fewshot: Optional[Path] = Opt(None, "--fewshot", help="Reuse this few-shot list (a fewshot.json) instead of sampling."),
    shots: Optional[int] = Opt(None, "--shots", help="Real images per class (K). Default 16."),
    seed: Optional[int] = Opt(None, "--seed", help="Seed for the shots, generation and training. Default 0."),
    method: Optional[str] = Opt(None, "--method", help="Method preset (see `dd plugins`)."),
    adapter: Optional[str] = Opt(None, "--adapter", help="Override the method's adapter."),
    prompt_builder: Optional[str] = Opt(None, "--prompt-builder", help="Override the method's prompt builder."),
    generator: Optional[str] = Opt(None, "--generator", help="Override the method's generator."),
    filter: Optional[str] = Opt(None, "--filter", help="Override the method's filter."),
    classifier: Optional[str] = Opt(None, "--classifier", help="Classifier plugin: clip-vitb16 (default), clip-vitl14, clip-rn50, timm."),
    base_model: Optional[str] = Opt(None, "--base-model", help="Diffusion base: hub id, local diffusers folder, or 'tiny'."),
    classifier_model: Optional[str] = Opt(None, "--classifier-model", help="Override the classifier's weights: open_clip NAME:TAG (or a timm name), local-dir:PATH, hf-hub:ORG/REPO, or 'tiny'."),
    images_per_class: Optional[int] = Opt(None, "--images-per-class", help="Synthetic images per class. Default 500."),
    resolution: Optional[int] = Opt(None, "--resolution", help="Generation (and adapter training) resolution. Default 512."),
    steps: Optional[int] = Opt(None, "--steps", help="Inference steps. Default: the method's protocol (50; IsSynth and DISEF 20)."),
    guidance: Optional[float] = Opt(None, "--guidance", help="Classifier-free guidance scale. Default: the method's protocol (2.0; IsSynth and DISEF 8.0)."),
    batch_size: Optional[int] = Opt(None, "--batch-size", help="Images per generation batch. Default: on a GPU as many as fit in its free memory "
                                    "(a one-image probe measures it), 8 on the CPU."),
    train_on: Optional[str] = choices.train_on_option(),
    real_weight: Optional[float] = Opt(None, "--real-weight", help="lambda in lambda*CE(real) + (1-lambda)*CE(synthetic). Default 0.8."),
    synthetic: Optional[Path] = Opt(None, "--synthetic", help="Train on this synthetic set (a dd set or one folder per class) instead of generating one."),
    search: Optional[bool] = Opt(None, "--search", help="Choose the classifier's lr, weight decay and Mixup/CutMix on validation images (the paper's grid)."),
    search_grid: Optional[str] = Opt(None, "--search-grid", help="The grid to search instead, e.g. 'lr=1e-4,1e-5 mix=false,true' (implies --search)."),
    device: Optional[str] = choices.device_option(None, "Device. Default auto (cuda when there is one)."),
    out: Optional[Path] = Opt(None, "--out", help="Run folder. Default runs/<dataset>-<method>-<K>shot-seed<seed>."),
    config: Optional[Path] = Opt(None, "--config", help="TOML file with any of these settings; flags override it."),
    set_: Optional[list[str]] = Opt(None, "--set", help="Plugin option KIND.OPTION=VALUE, e.g. classifier.epochs=5 (repeatable)."),
    stop_after: Optional[str] = choices.stop_after_option(),
    explain: bool = Opt(False, "--explain", help="Print every setting the run resolves to, against the paper's and the official code's, and stop."),
    log_with: Optional[str] = Opt(None, "--log-with", help="Experiment trackers, comma-separated: tensorboard, wandb, mlflow, ... (accelerate's; files in RUN/logs)."),
    quiet: bool = Opt(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = Opt(False, "--verbose", help="Under `accelerate launch`, every process shows its progress (default: the main one)."),
) -> None:
    """Run every stage: few shots, adapter, generation, classifier training, evaluation.

    With no arguments: the offline demo (scikit-learn digits, tiny random models, CPU).
    """
    run_config = _config_from(locals())
    if explain:
        _explain(run_config)
        return
    _require_compatible()
    _run_stages(run_config, _reporter(quiet, verbose), run_config.demo and run_config.base_model == "tiny", stop_after)


def _config_from(params: dict[str, Any]):
    """A RunConfig from `dd run`'s parameters (also used by `dd compare` for the shared settings)."""
    cli = {k: v for k, v in params.items() if k not in ("config", "set_", "quiet", "verbose", "stop_after", "explain")}
    cli = {k: (str(v) if isinstance(v, Path) else v) for k, v in cli.items()}
    cli["options"] = parse_set(params["set_"] or [])
    if params["search_grid"] is not None:
        cli["search_grid"], cli["search"] = parse_grid(params["search_grid"]), True
    file_values = load_toml(params["config"]) if params["config"] else {}
    try:  # `--dataset NAME` of the demo loader is the demo too
        demo_dataset = get_plugins().default("dataset", "demo")
    except PluginError:
        demo_dataset = None
    return resolve(file_values, cli, demo_dataset)


def _explain(run_config) -> None:
    """Build the run, choose its shots (reading them, writing nothing) and print what it resolves to."""
    from ddcore.explain import protocol_rows
    from ddcore.pipeline import Run

    pipeline = Run(run_config, get_plugins())
    pipeline.choose_shots()
    resolved = pipeline.resolved()
    for table in explain_tables(resolved, protocol_rows(pipeline.method, pipeline.stages, resolved)):
        console.print(table)


def _run_stages(run_config, reporter: Reporter, demo: bool, stop_after: str | None = None) -> None:
    from ddcore.pipeline import Run

    pipeline = Run(run_config, get_plugins(), reporter)
    if demo and reporter.enabled:
        err_console.print(Panel.fit(
            "Offline demo: scikit-learn's digits with [bold]tiny random models[/] on the CPU.\n"
            "It checks the whole pipeline end to end; its accuracy means nothing.\n"
            "A real run: [cyan]dd run --data DIR --method sd-txt2img --device cuda[/]",
            title="dd run", border_style="cyan"))
    metrics = pipeline.run_all(stop_after)
    if metrics is not None:  # None: stopped early, or a helper process of a multi-process run
        _show_results(metrics, pipeline.out)
    elif stop_after and pipeline.process.is_main:
        console.print(f"stopped after {stop_after}; continue with `dd <stage> {pipeline.out}`", highlight=False)


def _show_results(metrics: dict[str, Any], out: Path) -> None:
    console.print(results_title(metrics), highlight=False, soft_wrap=True)
    console.print(results_table(metrics))
    if metrics.get("search"):
        search = metrics["search"]
        console.print(f"search: chose {search['setting']} on {search['validation']} "
                      f"(validation top-1 {100 * search['val_top1']:.2f}%)", highlight=False, soft_wrap=True)
    console.print(f"metrics: {out / 'metrics.json'}   predictions: {out / 'predictions.jsonl'}   "
                  f"confusion matrix: {out / 'confusion.png'}", highlight=False, soft_wrap=True)


def _one_stage(run_dir: Path, stage: str, quiet: bool) -> Any:
    from ddcore.pipeline import load_run
    from ddcore.store import RunLock

    _require_compatible()
    pipeline = load_run(run_dir, get_plugins(), _reporter(quiet))
    # Under `accelerate launch` the processes share the run: the main one holds its lock.
    lock = RunLock(pipeline.out) if pipeline.process.is_main else contextlib.nullcontext()
    with lock, contextlib.closing(pipeline):
        pipeline.prepare()
        result = getattr(pipeline, stage)()
    return pipeline, result


RUN_DIR = typer.Argument(..., help="A run folder made by `dd run` (holds run.json).")


@app.command()
def adapt(run_dir: Path = RUN_DIR, quiet: bool = Opt(False, "--quiet", "-q")) -> None:
    """Train the run's adapter (or reuse it)."""
    _, path = _one_stage(run_dir, "adapt", quiet)
    console.print(f"adapter: {path}" if path else "this run's adapter has nothing to train")


@app.command()
def generate(run_dir: Path = RUN_DIR, quiet: bool = Opt(False, "--quiet", "-q")) -> None:
    """Generate the run's synthetic set (resuming where it stopped)."""
    _, synthetic = _one_stage(run_dir, "generate", quiet)
    console.print(f"synthetic set: {synthetic.root} ({len(synthetic.items)} images)" if synthetic
                  else "this run uses no synthetic data")


@app.command()
def train(run_dir: Path = RUN_DIR, quiet: bool = Opt(False, "--quiet", "-q")) -> None:
    """Train the run's classifier (or reuse it)."""
    _, path = _one_stage(run_dir, "train", quiet)
    console.print(f"classifier: {path}")


@app.command()
def evaluate(run_dir: Path = RUN_DIR, quiet: bool = Opt(False, "--quiet", "-q")) -> None:
    """Evaluate the run's classifier on the test split."""
    pipeline, metrics = _one_stage(run_dir, "evaluate", quiet)
    _show_results(metrics, pipeline.out)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} takes comma-separated integers, e.g. 0,1,2") from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def compare(
    ctx: typer.Context,
    methods: str = Opt("zero-shot,real-finetune,issynth,disef,datadream-dset,datadream-cls", "--methods",
                       help="Comma-separated method presets."),
    classifiers: str = Opt("clip-vitb16", "--classifiers", help="Comma-separated classifiers."),
    seeds: str = Opt("0,1,2", "--seeds", help="Comma-separated seeds (each draws its own shots)."),
    settings: str = Opt("synthetic,real+synthetic", "--settings",
                        help="Training data for methods that make synthetic images: synthetic, real+synthetic."),
    scale_images: Optional[str] = Opt(None, "--scale-images", help="Scaling study: images per class, e.g. 100,200,500."),
    scale_shots: Optional[str] = Opt(None, "--scale-shots", help="Scaling study: shots, e.g. 1,2,4,8,16."),
    base_models: Optional[str] = Opt(None, "--base-models",
                                     help="Comma-separated diffusion base models to compare (tiny, tiny-sdxl, a folder, "
                                          "a hub id, ...): the methods that make images run per base model, the others "
                                          "once. Default: the one of --base-model."),
    out: Path = Opt(Path("compare"), "--out", help="Folder for the runs, the shared stages, the table and the report."),
    quality_features: str = choices.features_option(
        "classifier", "--quality-features", values=choices.QUALITY_SPACES,
        help="Feature space of the synthetic-vs-real measures: classifier (the first classifier's CLIP), clip, "
             "clip:SPEC, fid (standard FID Inception), fid:PATH (its weights file), inception-torchvision or pixels."),
    quiet: bool = Opt(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run methods x classifiers x seeds on one data set, sharing every stage, and write the
    table (Markdown, CSV, JSON) and an HTML report. Any `dd run` option (--data, --shots,
    --base-model, --set, ...) applies to every run; a rerun resumes. --base-models adds the base
    model as an axis."""
    from ddcore.compare import CompareSpec, run_matrix
    from ddcore.compare_report import labelled, write_compare_outputs

    base = _shared_run_config(ctx)
    _require_compatible()
    spec = CompareSpec(
        methods=[m.strip() for m in methods.split(",") if m.strip()],
        classifiers=[c.strip() for c in classifiers.split(",") if c.strip()],
        seeds=_ints(seeds, "--seeds"), base=base, out=out,
        settings=[s.strip() for s in settings.split(",") if s.strip()],
        scale_images=_ints(scale_images, "--scale-images") if scale_images else [],
        scale_shots=_ints(scale_shots, "--scale-shots") if scale_shots else [],
        quality_features=quality_features,
        base_models=[b.strip() for b in (base_models or "").split(",") if b.strip()],
    )
    rows = run_matrix(spec, get_plugins(), _reporter(quiet))
    if not rows:  # a helper process of a multi-process launch
        return
    written = write_compare_outputs(spec, rows, get_plugins(), _reporter(quiet))
    console.print(compare_table(labelled(written["table"])))  # a generator as "method @ base model"
    console.print(f"table: {written['markdown']}   report: {written['report']}", highlight=False, soft_wrap=True)


def _shared_run_config(ctx: typer.Context):
    """A RunConfig from the `dd run` flags left over on a command that accepts them."""
    run_command = typer.main.get_command(app).commands["run"]
    try:
        shared = run_command.make_context("run", list(ctx.args), resilient_parsing=False).params
    except Exception as exc:  # a usage error in the shared flags: show it as one
        raise typer.BadParameter(str(exc)) from None
    return _config_from(shared)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def quality(
    ctx: typer.Context,
    synthetic: Path = typer.Argument(..., help="A run folder, or a folder of synthetic images (one sub-folder per "
                                               "class, or `dd generate`'s with metadata.jsonl)."),
    features: str = choices.features_option(
        "clip", "--features", values=choices.SPACES,
        help="Feature space: clip (ViT-B/16), clip:SPEC (any classifier model spec, e.g. tiny), fid (the standard "
             "FID Inception network; only its FD compares with published FIDs), fid:PATH (its weights file), "
             "inception-torchvision or pixels."),
    real: str = choices.choice_option("train", "--real", values=choices.REAL_SETS,
                                      help="Real images to compare with (shots: a run's)."),
    k: int = Opt(5, "--k", help="Nearest neighbours for precision, recall, density and coverage."),
    out: Optional[Path] = Opt(None, "--out", help="Report folder (default: <run>/quality, or quality-<folder>)."),
    quiet: bool = Opt(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """How close a synthetic set is to the real images: Frechet distance, precision, recall,
    density and coverage, per class and overall, in a chosen feature space. For a folder,
    name its data set with the `dd run` flags (--data, --dataset, --split)."""
    from ddcore.pipeline import RUN_FILE, resolve_device
    from ddcore.quality_report import feature_space, set_quality_report, sets_to_compare

    config = _shared_run_config(ctx)
    _require_compatible()
    real_set, synthetic_set, classnames = sets_to_compare(synthetic, config, get_plugins(), real)
    is_run = (synthetic / RUN_FILE).is_file()
    out = out or (synthetic / "quality" if is_run else Path(f"quality-{synthetic.resolve().name}"))
    reporter = _reporter(quiet)
    compute, described = feature_space(features, device=resolve_device(config.device), reporter=reporter)
    result = set_quality_report(real_set, synthetic_set, classnames, compute, space=described, k=k, out=out)
    console.print(quality_table(result))
    console.print(f"report: {out / 'quality.md'}   numbers: {out / 'quality.json'}   plot: {out / 'quality.png'}",
                  highlight=False, soft_wrap=True)


CLASSIFIER_DIR = typer.Argument(..., help="A run folder, or a classifier folder (<run>/classifier/<key>).")


@app.command()
def predict(
    classifier: Path = CLASSIFIER_DIR,
    images: Path = typer.Argument(..., help="A folder of images (searched recursively)."),
    out: Optional[Path] = Opt(None, "--out", help="Write predictions.jsonl here."),
    top_k: int = Opt(3, "--top-k", help="Classes listed per image in the output file."),
    device: str = choices.device_option("auto", "Device."),
    quiet: bool = Opt(False, "--quiet", "-q"),
) -> None:
    """Classify a folder of images with a trained classifier.

    Images inside a sub-folder named as a class count as labelled, and the accuracy is shown.
    """
    from ddcore.evaluation import prediction_lines
    from ddcore.inference import open_classifier, predict_folder
    from ddcore.store import atomic_write_text

    _require_compatible()
    loaded = open_classifier(classifier, get_plugins(), device, _reporter(quiet))
    samples, scores = predict_folder(loaded, images)
    classnames = loaded.context.dataset.classnames
    console.print(predictions_table(samples, scores, classnames, images))
    if out is not None:
        atomic_write_text(out, prediction_lines(scores, samples, classnames, images.expanduser(), top_k=top_k))
        console.print(f"predictions: {out}", highlight=False)


@app.command()
def report(run_dir: Path = RUN_DIR) -> None:
    """Write the run's report (result, training loss curves, samples) to RUN/report/."""
    from ddcore.run_report import write_run_report

    index = write_run_report(run_dir, get_plugins())
    console.print(f"report: {index}   training curves: {index.parent / 'training.png'}", highlight=False,
                  soft_wrap=True)


@app.command()
def export(
    classifier: Path = CLASSIFIER_DIR,
    dest: Path = typer.Argument(..., help="A new folder to write the exported model into."),
    device: str = choices.device_option("cpu", "Device to merge the weights on."),
) -> None:
    """Export a trained CLIP classifier with its LoRA merged, as an open_clip local-dir: folder."""
    from ddcore.inference import export_classifier, open_classifier

    _require_compatible()
    folder = export_classifier(open_classifier(classifier, get_plugins(), device), dest)
    console.print(f"exported: {folder}\nload it with: open_clip.create_model('local-dir:{folder.resolve()}') "
                  f"or --classifier-model local-dir:{folder.resolve()}", highlight=False, soft_wrap=True)


@app.command()
def plugins(name: Optional[str] = typer.Argument(None, help="A registered name: show its options."),
            as_json: bool = Opt(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every plugin and what it provides; with NAME, that stage's options (type, default,
    description, the method presets that change it)."""
    registry = get_plugins()
    if name is not None:
        if as_json:  # options per kind registering NAME (a method has none: its choices are in --json)
            print_json(console, {e.kind: option_rows(registry, e.kind, name)
                                 for e in entries_named(registry, name) if e.kind != "method"})
        else:
            for part in plugin_detail(registry, name):
                console.print(part, highlight=False)
    elif as_json:
        print_json(console, plugin_rows(registry))
    else:
        console.print(plugins_table(registry, console.width))


@app.command()
def doctor(as_json: bool = Opt(False, "--json", help="Print the report as JSON.")) -> None:
    """Can this environment run? The stack's versions against the tested set, imports, devices
    and free memory, half precision, the hub cache and offline mode, which default models are
    cached, and the pip command for each problem. Exits 1 when something required is broken."""
    from ddcore.doctor import diagnose

    report = diagnose(get_plugins())
    if as_json:
        print_json(console, report)
    else:
        for table in doctor_tables(report):
            console.print(table)
        verdict = ("[green]ok:[/] this environment can run datadream" if report["ok"] else
                   "[red]broken:[/] fix the errors above (each row says how), then run `dd doctor` again")
        console.print(verdict, highlight=False)
    if not report["ok"]:
        raise typer.Exit(1)


def _add_plugin_commands() -> None:
    try:
        get_plugins().hook.register_commands(app=app)
    except DDError as exc:  # a duplicate name, say: `dd plugins` still has to explain it
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)


def _typer_click(name: str) -> tuple[type, ...]:
    """Typer 0.29+ vendors click as ``typer._click``: its exceptions are not click's."""
    try:
        from typer._click import exceptions
    except ImportError:  # an older typer that uses click itself
        return ()
    return (getattr(exceptions, name),) if hasattr(exceptions, name) else ()


_ABORT = (click.exceptions.Abort, typer.Abort, *_typer_click("Abort"))
_EXIT = (click.exceptions.Exit, typer.Exit, *_typer_click("Exit"))
_USAGE = (click.ClickException, *_typer_click("ClickException"))


def main() -> None:
    debug = "--debug" in sys.argv[1:] or os.environ.get("DD_DEBUG", "") not in ("", "0")
    try:
        _add_plugin_commands()
        # Typer turns Ctrl-C into exit code 130 and returns it when not in standalone mode.
        # It also returns (rather than raises) a command's typer.Exit code.
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except DDError as exc:
        if debug:
            raise
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (KeyboardInterrupt, *_ABORT):
        err_console.print("[yellow]interrupted:[/] finished work is kept; run the same command again to resume")
        sys.exit(130)
    except _EXIT as exc:
        sys.exit(exc.exit_code)
    except _USAGE as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
