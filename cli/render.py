"""Rich tables for results and plugins."""

from __future__ import annotations

import difflib
from dataclasses import MISSING
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ddcore.kinds import KINDS
from ddcore.options import option_infos
from ddcore.errors import PluginError
from ddcore.plugins import Entry, Plugins


def plugin_rows(plugins: Plugins) -> list[dict[str, Any]]:
    """One row per registered name, plus one per plugin that is broken or switched off."""
    rows = []
    for kind, registry in plugins.registries.items():
        for entry in sorted(registry.values(), key=lambda e: e.name):
            rows.append({"kind": kind, "name": entry.name, "plugin": entry.distribution, "entry_point": entry.plugin,
                         "version": entry.version, "status": "ok", "description": entry.description})
    for info in plugins.infos.values():
        if info.status != "ok":
            rows.append({"kind": "plugin", "name": info.name, "plugin": info.distribution, "entry_point": info.name,
                         "version": info.version, "status": info.status, "description": info.error})
    return rows


def plugins_table(plugins: Plugins, width: int = 80) -> Table:
    """Every registered name. Below 110 columns (a pipe, a narrow terminal) the kinds become
    section headings and the distribution and version columns are left out, so the descriptions
    keep room to read (``--json`` has everything)."""
    wide = width >= 110
    table = Table(title="Plugins (dd plugins NAME: its options)", title_justify="left")
    for column in ("kind", "name", "distribution", "version") if wide else ("name",):
        table.add_column(column, no_wrap=True)
    table.add_column("description", ratio=1, min_width=24)
    previous = None
    for row in plugin_rows(plugins):
        style = {"broken": "red", "disabled": "dim"}.get(row["status"], "")
        kind = KINDS[row["kind"]].label if row["kind"] in KINDS else row["kind"]
        description = f"[{row['status']}] {row['description']}" if row["status"] != "ok" else row["description"]
        if wide:
            table.add_row(kind, row["name"], row["plugin"], row["version"], description, style=style)
            continue
        if kind != previous:
            if previous is not None:
                table.add_section()
            table.add_row(f"[bold]{kind}[/]", "")
            previous = kind
        table.add_row(f"  {row['name']}", description, style=style)
    return table


def option_rows(plugins: Plugins, kind: str, name: str) -> list[dict[str, Any]]:
    """The options of stage ``name``: type, default, description, and the method presets that
    set each (``method=value``)."""
    entry = plugins.get(kind, name)
    presets: dict[str, list[str]] = {}
    for method_name in plugins.names("method"):
        method = plugins.method(method_name)
        if getattr(method, kind, None) != name and kind != "classifier":
            continue  # a preset's options reach only the stage it chooses (any classifier)
        layers = [("", method.options), *((f" on {d}", o) for d, o in method.dataset_options.items())]
        for where, options in layers:
            for key, value in options.items():
                option_kind, _, option = key.partition(".")
                if option_kind == kind:
                    presets.setdefault(option, []).append(f"{method_name}{where}={value!r}")
    return [{"option": f"{kind}.{i.name}", "type": i.type, "default": i.default,
             "description": i.help + ("" if i.keyed else " [speed only: not in the stage key]"),
             "presets": presets.get(i.name, []), **({"demo": i.demo} if i.demo is not MISSING else {})}
            for i in option_infos(entry.factory.Options)]


def entries_named(plugins: Plugins, name: str) -> list[Entry]:
    """Every registered entry called ``name`` (a name may be an adapter and a method); an
    unknown name is a PluginError naming the closest registered names of any kind."""
    entries = [registry[name] for registry in plugins.registries.values() if name in registry]
    if not entries:
        every = sorted({n for registry in plugins.registries.values() for n in registry})
        close = difflib.get_close_matches(name, every, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise PluginError(f"no plugin registers '{name}'{hint} (`dd plugins` lists every name)")
    return entries


def plugin_detail(plugins: Plugins, name: str) -> list[Any]:
    """What ``dd plugins NAME`` prints: for each kind registering NAME, its description and
    options (a method: its stage choices and settings)."""
    out: list[Any] = []
    for entry in entries_named(plugins, name):
        head = (f"[bold]{KINDS[entry.kind].label} {entry.name}[/]  ({entry.distribution} {entry.version}, "
                f"plugin '{entry.plugin}')\n{entry.description}")
        out.append(head)
        if entry.kind == "method":
            method = entry.factory
            table = Table(title_justify="left", show_header=False)
            for kind in ("adapter", "prompt_builder", "generator", "filter", "train_on"):
                table.add_row(kind, str(getattr(method, kind)))
            for key, value in {**method.settings, **method.options}.items():
                table.add_row(key, repr(value))
            for dataset, options in method.dataset_options.items():
                for key, value in options.items():
                    table.add_row(f"{key} on {dataset}", repr(value))
            out.append(table)
            continue
        rows = option_rows(plugins, entry.kind, entry.name)
        # A list, not a table: it reads in 80 columns and greps (one option per first line).
        for row in rows:
            demo = f", offline demo {row['demo']!r}" if "demo" in row else ""
            out.append(f"  [bold]{row['option']}[/] ({row['type']}, default {row['default']!r}{demo})")
            if row["description"]:
                out.append(f"      {escape(row['description'])}")
            if row["presets"]:
                out.append(f"      [dim]set by presets: {escape(', '.join(row['presets']))}[/]")
        if not rows:
            out.append("  no options")
    return out


def results_title(metrics: dict[str, Any]) -> str:
    return (f"[bold]{metrics.get('dataset', '')}[/]: {metrics.get('method', '')} + {metrics.get('classifier', '')} "
            f"({metrics.get('train_on', '')}, {metrics.get('shots', '?')} shots, seed {metrics.get('seed', '?')})")


def results_table(metrics: dict[str, Any], max_classes: int = 20) -> Table:
    table = Table()
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    per_class = metrics["per_class"]
    items = sorted(per_class.items(), key=lambda kv: (kv[1] is None, kv[1] or 0.0))
    shown = items if len(items) <= max_classes else items[: max_classes // 2] + items[-max_classes // 2 :]
    for i, (name, acc) in enumerate(shown):
        if len(items) > max_classes and i == max_classes // 2:
            table.add_row("…", "…")
        table.add_row(name, "n/a" if acc is None else f"{100 * acc:.1f}%")
    table.add_section()
    table.add_row("[bold]top-1[/]", f"[bold]{100 * metrics['top1']:.2f}%[/]")
    table.add_row("mean per class", f"{100 * metrics['mean_per_class']:.2f}%")
    table.add_row("test images", str(metrics["num_test"]))
    return table


def predictions_table(samples, scores, classnames: list[str], root, max_rows: int = 20) -> Table:
    """The first predictions, with the accuracy over the labelled images if there are any."""
    from ddcore.evaluation import softmax

    probs = softmax(scores)
    predicted = probs.argmax(axis=1)
    table = Table(title=f"{len(samples)} images", title_justify="left")
    for column in ("image", "predicted", "probability", "true"):
        table.add_column(column, justify="right" if column == "probability" else "left")
    for sample, pred, p in list(zip(samples, predicted, probs))[:max_rows]:
        name = str(sample.path.relative_to(root)) if sample.path.is_relative_to(root) else str(sample.path)
        true = sample.classname or "-"
        style = "" if sample.label < 0 else ("green" if pred == sample.label else "red")
        table.add_row(name, classnames[int(pred)], f"{100 * p[pred]:.1f}%", true, style=style)
    if len(samples) > max_rows:
        table.add_row("…", "", "", "")
    labelled = [i for i, s in enumerate(samples) if s.label >= 0]
    if labelled:
        correct = sum(int(predicted[i] == samples[i].label) for i in labelled)
        table.add_section()
        table.add_row(f"[bold]accuracy on {len(labelled)} labelled[/]", "", f"[bold]{100 * correct / len(labelled):.2f}%[/]", "")
    return table


def compare_table(rows: list[dict[str, Any]]) -> Table:
    """Table 1 style: top-1 mean +- std over seeds per setting, method and classifier."""
    table = Table(title="top-1 over seeds (mean ± std)", title_justify="left")
    for column in ("setting", "method", "classifier", "top-1", "mean per class", "seeds"):
        table.add_column(column, justify="right" if column in ("top-1", "mean per class", "seeds") else "left")
    for row in rows:
        short = f" [yellow](short: {', '.join(row['short_classes'][:3])})[/]" if row["short_classes"] else ""
        table.add_row(row["setting"], row["method"] + short, row["classifier"],
                      f"{100 * row['top1_mean']:.1f} ± {100 * row['top1_std']:.1f}",
                      f"{100 * row['mean_per_class_mean']:.1f} ± {100 * row['mean_per_class_std']:.1f}",
                      str(len(row["seeds"])))
    return table


def quality_table(result: dict[str, Any], max_classes: int = 30) -> Table:
    """The set-quality report: the pooled row first, then each class."""
    from ddcore.quality_report import quality_rows

    table = Table(title=f"synthetic vs real in {result['space']} (k = {result['k']})", title_justify="left")
    for column in ("class", "real", "synthetic", "FD ↓", "precision", "recall", "density", "coverage"):
        table.add_column(column, justify="left" if column == "class" else "right")
    rows = quality_rows(result)
    for i, row in enumerate(rows[: max_classes + 1]):
        cells = [row[key] for key in ("fd", "precision", "recall", "density", "coverage")]
        table.add_row(f"[bold]{row['class']}[/]" if i == 0 else row["class"], str(row["n_real"]),
                      str(row["n_synthetic"]), *("–" if v is None else f"{v:.3f}" for v in cells))
        if i == 0:
            table.add_section()
    if len(rows) > max_classes + 1:
        table.add_row(f"… {len(rows) - max_classes - 1} more in quality.csv", "", "", "", "", "", "", "")
    return table


def print_json(console: Console, data: Any) -> None:
    import json

    console.print_json(json.dumps(data)) if console.is_terminal else print(json.dumps(data, indent=2))


_STATUS_STYLE = {"ok": "green", "warning": "yellow", "error": "red", "note": "cyan", "not installed": "dim"}


def doctor_tables(report: dict[str, Any]) -> list[Table]:
    """`dd doctor`: the stack, the devices, the default models, and what to fix."""
    stack = Table(title=f"datadream {report['datadream']} on Python {report['python']}", title_justify="left")
    for column in ("package", "installed", "tested", "bounds", "status"):
        stack.add_column(column, no_wrap=column != "bounds")
    imports = report.get("imports", {})
    for row in report["stack"]:
        status = row["status"]
        broken_import = imports.get(row["package"], "ok") != "ok"
        if broken_import:
            status = "error"
        style = _STATUS_STYLE.get(status, "")
        text = f"import fails: {imports[row['package']]}" if broken_import else status
        stack.add_row(row["package"], row["installed"] or "-", row["tested"] or "-", row["bounds"] or "-",
                      f"[{style}]{text}[/]" if style else text)

    devices = Table(title="Devices", title_justify="left")
    for column in ("device", "name", "total GiB", "free GiB", "bf16", "fp16", "note"):
        devices.add_column(column)
    for d in report["devices"]:
        devices.add_row(d["device"], str(d.get("name") or ""), _num(d.get("total_gib")), _num(d.get("free_gib")),
                        _yes(d.get("bf16")), _yes(d.get("fp16")), str(d.get("note") or ""))

    hub = report["hub"]
    models = Table(title=f"Default models (hub cache {hub['cache']}, offline {'on' if hub['offline'] else 'off'})",
                   title_justify="left")
    for column in ("model", "used by", "source", "local copy"):
        models.add_column(column, overflow="fold")
    for m in report["models"]:
        where = f"[green]{m['path']}[/]" if m["cached"] else "[yellow]not cached: downloaded on first use[/]"
        models.add_row(m["model"], ", ".join(m["used_by"]), m["source"], where)
    tables = [stack, devices, models]

    if report["problems"]:
        problems = Table(title="To fix", title_justify="left")
        problems.add_column("", no_wrap=True)
        problems.add_column("problem", ratio=2, overflow="fold")
        problems.add_column("fix", ratio=1, overflow="fold")
        for p in report["problems"]:
            problems.add_row(f"[{_STATUS_STYLE[p['severity']]}]{p['severity']}[/]", p["message"], p["fix"])
        tables.append(problems)
    return tables


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def explain_tables(resolved: dict[str, Any], rows) -> list[Table]:
    """``dd run --explain``: the run settings, each stage's options, and the protocol rows
    (``ddcore.explain.protocol_rows``) with the paper's and the official code's values."""
    from ddcore.explain import MISSING

    settings = Table(title="Run settings", title_justify="left")
    settings.add_column("setting", no_wrap=True)
    settings.add_column("value")
    for key, value in resolved["settings"].items():
        settings.add_row(key, _show(value))
    stages = Table(title="Stages", title_justify="left")
    for column in ("stage", "plugin", "option", "value"):
        stages.add_column(column, no_wrap=column != "value")
    for kind, stage in resolved["stages"].items():
        first = True
        values = {**stage["options"], **{f"{k} (derived)": v for k, v in stage["derived"].items()}}
        for option, value in values.items():
            stages.add_row(kind if first else "", stage["name"] if first else "", option, _show(value))
            first = False
        if first:
            stages.add_row(kind, stage["name"], "", "")
        stages.add_section()
    protocol = Table(title="Protocol (docs/fidelity.md): paper, official code, this run", title_justify="left")
    for column in ("setting", "paper", "official code", "this run", "why it differs"):
        protocol.add_column(column, ratio=1 if column != "setting" else None, no_wrap=column == "setting")
    for row in rows:
        value = "-" if row.value is MISSING else _show(row.value)
        if row.differs:
            value = f"[yellow]{value}[/] (protocol: {row.setting.ours_display()})"
        protocol.add_row(row.setting.key, row.setting.paper, row.setting.code, value, row.setting.why)
    return [settings, stages, protocol]


def _show(value: Any) -> str:
    return "''" if value == "" else str(value)
