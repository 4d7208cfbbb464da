"""Can this Python environment run datadream? Installed versions against what was tested.

Three sources of truth, all read from package metadata (nothing is imported, so the check
costs milliseconds and runs before any work):

- the bounds in our own requirements (``pyproject.toml``): every lower bound is a release the
  suite passed on, every upper bound the first release of a fast-moving library not yet tested;
- the pinned set the suite last passed on (``ddcore/constraints.txt``), which the install
  commands use and the fixes below point at;
- each installed library's own declared requirements (what ``pip check`` reads), plus a short
  table of combinations that break at run time although their metadata allows them.

``dd doctor`` shows all of it; ``dd run`` and the other working commands call
:func:`require_compatible` first, so a broken environment fails in one line before minutes of
work, not in a traceback deep inside the adapter stage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .errors import DDError

DISTRIBUTION = "datadream"
CONSTRAINTS = Path(__file__).with_name("constraints.txt")
SKIP_ENV = "DD_SKIP_ENV_CHECK"
SEVERITIES = ("error", "warning", "note")

# The libraries whose releases break each other; `dd doctor` lists them first.
STACK = ("torch", "torchvision", "diffusers", "transformers", "peft", "accelerate", "open-clip-torch", "timm",
         "huggingface-hub", "safetensors", "tokenizers")


class EnvironmentBroken(DDError):
    """The installed packages are a combination datadream cannot run on."""


@dataclass(frozen=True)
class Problem:
    severity: str  # "error": cannot work; "warning": untested or risky; "note": `dd doctor` only
    packages: tuple[str, ...]
    message: str  # one line: what is wrong
    fix: str  # the exact command that fixes it

    def line(self) -> str:
        return f"{self.message}; fix: {self.fix}"


@dataclass(frozen=True)
class KnownBreak:
    """Two releases whose metadata allows them together but which fail at run time."""

    package: str
    versions: str  # a specifier of ``package``'s releases affected
    other: str
    other_versions: str  # ... when ``other`` is in this range
    severity: str
    why: str
    fix: str


# Each entry was seen failing, with the reason in `why`. Metadata-level conflicts (a declared
# requirement not met) need no entry: `requirement_problems` reads them from the packages.
KNOWN_BREAKS: tuple[KnownBreak, ...] = (
    # Seen 2026-12-01: peft 0.22 is not released yet. Only a note: we no longer use those methods.
    KnownBreak("transformers", ">=5.24", "peft", "<0.22", "note",
               "transformers' own PEFT methods (PreTrainedModel.add_adapter, enable_adapters, ...) refuse peft < 0.22; "
               "datadream injects LoRA through peft directly and is not affected, but a plugin calling them is",
               'pip install "transformers<5.24" (only if a plugin of yours needs those methods)'),
)


# -- what is installed ----------------------------------------------------------------------

def installed_versions(names: tuple[str, ...] | None = None) -> dict[str, str | None]:
    """Installed version per distribution name (canonical), None when not installed. Without
    ``names``: the stack plus every requirement of datadream."""
    names = names or tuple(dict.fromkeys((*STACK, *declared_bounds())))
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[canonicalize_name(name)] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[canonicalize_name(name)] = None
    return found


def _requirements(dist: str) -> list[Requirement]:
    """``dist``'s unconditional requirements (no extras) whose markers hold here."""
    try:
        lines = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:
        return []
    env = default_environment()
    chosen = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        chosen.append(req)
    return chosen


@lru_cache(maxsize=1)
def declared_bounds() -> dict[str, SpecifierSet]:
    """datadream's own requirement bounds, by canonical name (empty when not installed)."""
    return {canonicalize_name(r.name): r.specifier for r in _requirements(DISTRIBUTION)}


def tested_versions(path: Path = CONSTRAINTS) -> dict[str, str]:
    """The pinned set the suite last passed on: ``name==version`` lines of the constraints file."""
    pins: dict[str, str] = {}
    if not path.is_file():
        return pins
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name.strip())] = version.strip().split(";")[0].strip()
    return pins


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def _pip_fix(names: list[str], pins: Mapping[str, str], bounds: Mapping[str, SpecifierSet]) -> str:
    """``pip install "a==1.2" "b==3.4"``: the tested pin of each, else its declared range."""
    wanted = []
    for name in names:
        if name in pins:
            wanted.append(f'"{name}=={pins[name]}"')
        elif name in bounds and str(bounds[name]):
            wanted.append(f'"{name}{bounds[name]}"')
        else:
            wanted.append(f'"{name}"')
    return "pip install " + " ".join(wanted)


# -- the checks -----------------------------------------------------------------------------

def bound_problems(versions: Mapping[str, str | None], bounds: Mapping[str, SpecifierSet],
                   pins: Mapping[str, str]) -> list[Problem]:
    """Each requirement of ours missing (error), below its tested lower bound (error) or above
    its upper bound (warning: newer than anything tested)."""
    problems = []
    for name, spec in bounds.items():
        installed = versions.get(name)
        version = _version(installed)
        fix = _pip_fix([name], pins, bounds)
        if installed is None:
            problems.append(Problem("error", (name,), f"{name} is not installed (datadream needs {name}{spec})", fix))
            continue
        if version is None or spec.contains(version, prereleases=True):
            continue
        failed = {s.operator for s in spec if not s.contains(version, prereleases=True)}
        if failed & {">=", ">", "==", "~=", "==="}:
            problems.append(Problem("error", (name,), f"{name} {installed} is older than datadream supports "
                                                      f"({name}{spec})", fix))
        elif "!=" in failed:
            problems.append(Problem("error", (name,), f"{name} {installed} is a release known not to work "
                                                      f"({name}{spec})", fix))
        else:
            problems.append(Problem("warning", (name,), f"{name} {installed} is newer than any release datadream "
                                                        f"was tested on ({name}{spec})", fix))
    return problems


def torch_pair_problems(versions: Mapping[str, str | None]) -> list[Problem]:
    """torchvision is built for one torch release (0.N pairs with 2.N-15): another fails to load
    its operators ('operator torchvision::nms does not exist')."""
    torch, vision = _version(versions.get("torch")), _version(versions.get("torchvision"))
    if torch is None or vision is None or torch.major != 2 or vision.major != 0:
        return []
    expected = torch.minor + 15
    if vision.minor == expected:
        return []
    fix = f'pip install "torch=={torch.public}" "torchvision==0.{expected}.*"'
    return [Problem("error", ("torch", "torchvision"),
                    f"torchvision {versions['torchvision']} is built for torch 2.{vision.minor - 15}, but torch "
                    f"{versions['torch']} is installed", fix)]


def requirement_problems(versions: Mapping[str, str | None], pins: Mapping[str, str],
                         bounds: Mapping[str, SpecifierSet]) -> list[Problem]:
    """What ``pip check`` says about the stack: an installed library's declared requirement on
    another installed library of ours that the installed version does not meet."""
    problems = []
    for dist in STACK:
        if versions.get(dist) is None:
            continue
        for req in _requirements(dist):
            other = canonicalize_name(req.name)
            version = _version(versions.get(other))
            if other not in versions or version is None or not str(req.specifier):
                continue
            if not req.specifier.contains(version, prereleases=True):
                problems.append(Problem("error", (dist, other),
                                        f"{dist} {versions[dist]} requires {other}{req.specifier}, but {other} "
                                        f"{versions[other]} is installed", _pip_fix([other], pins, bounds)))
    return problems


def known_break_problems(versions: Mapping[str, str | None],
                         table: tuple[KnownBreak, ...] = KNOWN_BREAKS) -> list[Problem]:
    problems = []
    for rule in table:
        first, second = _version(versions.get(rule.package)), _version(versions.get(rule.other))
        if first is None or second is None:
            continue
        if SpecifierSet(rule.versions).contains(first, True) and SpecifierSet(rule.other_versions).contains(second, True):
            problems.append(Problem(rule.severity, (rule.package, rule.other),
                                    f"{rule.package} {versions[rule.package]} with {rule.other} {versions[rule.other]}: "
                                    f"{rule.why}", rule.fix))
    return problems


def check(versions: Mapping[str, str | None] | None = None) -> list[Problem]:
    """Every problem of this environment (or of ``versions``, a name -> version mapping that
    stands in for the installed one), errors first."""
    bounds, pins = declared_bounds(), tested_versions()
    if versions is None:
        versions = installed_versions()
    versions = {canonicalize_name(k): v for k, v in versions.items()}
    problems = [*torch_pair_problems(versions), *bound_problems(versions, bounds, pins),
                *requirement_problems(versions, pins, bounds), *known_break_problems(versions)]
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: SEVERITIES.index(p.severity))


def require_compatible(versions: Mapping[str, str | None] | None = None, warn=None) -> None:
    """Raise :class:`EnvironmentBroken` (one line: the packages and the fix) on an error;
    pass each warning's line to ``warn`` (notes are for `dd doctor` only). ``DD_SKIP_ENV_CHECK=1`` skips the check."""
    if os.environ.get(SKIP_ENV, "").strip() not in ("", "0"):
        return
    problems = check(versions)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more: see `dd doctor`)" if len(errors) > 1 else ""
        raise EnvironmentBroken(f"this environment cannot run datadream: {errors[0].line()}{more} "
                                f"(the whole tested set: pip install -r {CONSTRAINTS}; {SKIP_ENV}=1 skips this check)")
    if warn is not None:
        for problem in problems:
            if problem.severity == "warning":
                warn(problem.line())
