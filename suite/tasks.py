"""Task files: ``tasks/<family>/<name>.yaml``, loaded and validated here. Adding a task is adding a file.

A task file::

    name: lra-listops                # must equal the file name without .yaml
    family: lra                      # must equal the directory name
    description: ListOps, nested list operations, 10 classes
    builder: lra-classifier          # a registered builder (suite.harness.builders)
    data: {source: lra-listops}      # the data set it reads; more keys go to the builder
    metric: {name: accuracy, direction: max}
    seq_len: [2000]                  # the published length(s); a profile may override
    attentions: [ea, softmax]        # default attentions (specs), or "all" for every registered one
    defaults: {lr: 1.0e-3}           # optional: hyperparameters shared by every profile
    profiles:                        # all three, each a mapping of hyperparameters
      smoke: {steps: 4, batch_size: 2, seq_len: [128]}
      cpu: {...}
      full: {...}

Hyperparameters the harness itself reads (types are checked here): steps, epochs, batch_size,
eval_batch_size, lr, weight_decay, warmup_steps, schedule (cosine | linear | constant), min_lr_ratio,
grad_clip, betas, amp (bf16 | none), seq_len. Everything else (model width, depth, ...) is the builder's.

Extra task roots (with the same ``<family>/<name>.yaml`` layout) can be added with the environment variable
``EA_SUITE_TASKS`` (paths separated by ``os.pathsep``).
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from suite.errors import UsageError

TASKS_ROOT = Path(__file__).resolve().parent.parent / "tasks"
TASKS_ENV = "EA_SUITE_TASKS"
PROFILES = ("smoke", "cpu", "full")
DIRECTIONS = ("max", "min")

_REQUIRED = {
    "name": "a task name equal to the file name",
    "family": "the family (the directory name)",
    "description": "a one-line description",
    "builder": "the name of a registered builder",
    "data": "a mapping with at least {source: <data set name>}",
    "metric": "a mapping {name: <metric>, direction: max|min}",
    "seq_len": "a list of positive sequence lengths",
    "attentions": 'a list of attention specs, or "all"',
    "profiles": "a mapping with the profiles smoke, cpu and full",
}
_OPTIONAL = {"defaults": "a mapping of hyperparameters shared by every profile"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class TaskFileError(UsageError, ValueError):
    """A malformed task file; the message names the file, the field and what was expected."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(x) and x > 0 for x in v)


#: hyperparameter -> (check, what was expected)
HPARAM_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "steps": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "epochs": (lambda v: _is_num(v) and v > 0, "a positive number"),
    "batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "eval_batch_size": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "lr": (lambda v: _is_num(v) and v > 0, "a positive number"),
    "weight_decay": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "warmup_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "schedule": (lambda v: v in ("cosine", "linear", "constant"), "one of cosine, linear, constant"),
    "min_lr_ratio": (lambda v: _is_num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "grad_clip": (lambda v: v is None or (_is_num(v) and v > 0), "a positive number or null"),
    "betas": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v),
              "a list of two numbers in [0, 1)"),
    "amp": (lambda v: v in ("bf16", "none"), "bf16 or none"),
    "seq_len": (_positive_int_list, "a non-empty list of positive integers"),
}


@dataclass(frozen=True)
class Task:
    """One validated task file."""

    name: str
    family: str
    description: str
    builder: str
    data: dict[str, Any]
    metric: str
    direction: str  # "max" (higher is better) or "min"
    seq_len: tuple[int, ...]
    attentions: tuple[str, ...] | str  # specs, or "all"
    defaults: dict[str, Any]
    profiles: dict[str, dict[str, Any]]
    path: Path

    def seq_lens(self, profile: str) -> list[int]:
        """The sequence lengths a profile runs (its own ``seq_len``, else the task's)."""
        return list(self._profile(profile).get("seq_len", self.seq_len))

    def hparams(self, profile: str) -> dict[str, Any]:
        """The profile's hyperparameters over the task's ``defaults``, without ``seq_len``."""
        merged = {**self.defaults, **self._profile(profile)}
        merged.pop("seq_len", None)
        return merged

    def job_config(self, profile: str) -> dict[str, Any]:
        """The resolved configuration stored in every record of this task and profile (and hashed into its key)."""
        return {"builder": self.builder, "metric": self.metric, "direction": self.direction,
                "data": dict(self.data), "hparams": self.hparams(profile)}

    def default_attentions(self) -> list[str]:
        """Canonical specs of the default attentions (every registered one for ``all``); TaskFileError if bad."""
        from suite.attention import available, canonical_spec

        specs = available() if self.attentions == "all" else list(self.attentions)
        out = []
        for i, spec in enumerate(specs):
            try:
                out.append(canonical_spec(spec))
            except ValueError as err:
                raise TaskFileError(f"{self.path}: field 'attentions[{i}]': {err}") from None
        return out

    def _profile(self, profile: str) -> dict[str, Any]:
        if profile not in self.profiles:
            raise UsageError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
        return self.profiles[profile]


def _fail(path: Path, field: str, expected: str, got: Any = None, show_got: bool = True) -> TaskFileError:
    suffix = f", got {got!r}" if show_got else ""
    return TaskFileError(f"{path}: field '{field}': expected {expected}{suffix}")


def _check_hparams(path: Path, where: str, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise _fail(path, where, "a mapping of hyperparameters", params)
    for key, value in params.items():
        if not isinstance(key, str):
            raise _fail(path, where, "string hyperparameter names", key)
        if key in HPARAM_CHECKS:
            check, expected = HPARAM_CHECKS[key]
            if not check(value):
                raise _fail(path, f"{where}.{key}", expected, value)
    return params


def parse_task(raw: Any, path: Path, known_builders: list[str] | None = None) -> Task:
    """Validate the parsed YAML of one task file; ``known_builders`` (if given) are the valid builder names."""
    if not isinstance(raw, dict):
        raise TaskFileError(f"{path}: expected a mapping of task fields at the top level, got {type(raw).__name__}")
    for field, expected in _REQUIRED.items():
        if field not in raw:
            raise _fail(path, field, f"{expected} (the field is missing)", show_got=False)
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        allowed = ", ".join(list(_REQUIRED) + list(_OPTIONAL))
        raise TaskFileError(f"{path}: unknown field '{unknown[0]}'; allowed fields: {allowed}")

    name, family = raw["name"], raw["family"]
    if not isinstance(name, str) or not _NAME.match(name) or name != path.stem:
        raise _fail(path, "name", f"the file name {path.stem!r} (lowercase letters, digits, . _ -)", name)
    if not isinstance(family, str) or family != path.parent.name:
        raise _fail(path, "family", f"the directory name {path.parent.name!r}", family)
    for field in ("description", "builder"):
        if not isinstance(raw[field], str) or not raw[field].strip():
            raise _fail(path, field, _REQUIRED[field], raw[field])
    if known_builders is not None and raw["builder"] not in known_builders:
        raise _fail(path, "builder", f"one of the registered builders: {', '.join(known_builders)}", raw["builder"])

    data = raw["data"]
    if not isinstance(data, dict) or not isinstance(data.get("source"), str) or not data["source"]:
        raise _fail(path, "data.source" if isinstance(data, dict) else "data", "the name of the data set (a string)",
                    data.get("source") if isinstance(data, dict) else data)

    metric = raw["metric"]
    if not isinstance(metric, dict):
        raise _fail(path, "metric", _REQUIRED["metric"], metric)
    if not isinstance(metric.get("name"), str) or not metric["name"]:
        raise _fail(path, "metric.name", "the name of the main metric (e.g. accuracy, loss, fwd_ms)", metric.get("name"))
    if metric.get("direction") not in DIRECTIONS:
        raise _fail(path, "metric.direction", "max (higher is better) or min", metric.get("direction"))
    if sorted(set(metric) - {"name", "direction"}):
        raise TaskFileError(f"{path}: field 'metric': unknown key {sorted(set(metric) - {'name', 'direction'})[0]!r}; "
                            "allowed: name, direction")

    if not _positive_int_list(raw["seq_len"]):
        raise _fail(path, "seq_len", _REQUIRED["seq_len"], raw["seq_len"])

    attentions = raw["attentions"]
    if attentions != "all":
        if not isinstance(attentions, list) or not attentions or not all(isinstance(a, str) and a for a in attentions):
            raise _fail(path, "attentions", _REQUIRED["attentions"], attentions)
        attentions = tuple(attentions)

    defaults = _check_hparams(path, "defaults", raw.get("defaults", {}) or {})

    profiles = raw["profiles"]
    if not isinstance(profiles, dict):
        raise _fail(path, "profiles", _REQUIRED["profiles"], profiles)
    for profile in PROFILES:
        if profile not in profiles:
            raise _fail(path, f"profiles.{profile}", "a mapping of hyperparameters (the profile is missing)",
                        show_got=False)
    extra = sorted(set(profiles) - set(PROFILES))
    if extra:
        raise TaskFileError(f"{path}: field 'profiles': unknown profile {extra[0]!r}; allowed: {', '.join(PROFILES)}")
    checked = {p: dict(_check_hparams(path, f"profiles.{p}", profiles[p] or {})) for p in PROFILES}

    return Task(name=name, family=family, description=raw["description"].strip(), builder=raw["builder"],
                data=dict(data), metric=metric["name"], direction=metric["direction"],
                seq_len=tuple(raw["seq_len"]), attentions=attentions, defaults=dict(defaults),
                profiles=checked, path=path)


def load_task_file(path: Path | str, known_builders: list[str] | None = None) -> Task:
    """Read and validate one task file; TaskFileError names the file and field on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TaskFileError(f"{path}:{where}: not valid YAML: {problem}") from None
    except OSError as err:
        raise TaskFileError(f"{path}: cannot read: {err.strerror}") from None
    return parse_task(raw, path, known_builders)


def task_roots() -> list[Path]:
    """The built-in ``tasks/`` directory followed by the roots in ``$EA_SUITE_TASKS``."""
    extra = [Path(p) for p in os.environ.get(TASKS_ENV, "").split(os.pathsep) if p.strip()]
    return [TASKS_ROOT, *extra]


def load_tasks(roots: list[Path] | None = None, check_builders: bool = True) -> dict[str, Task]:
    """Every task under ``roots`` (default ``task_roots()``), by name, ordered by family then name."""
    known = None
    if check_builders:
        from suite.harness.builders import builder_names

        known = builder_names()
    tasks: dict[str, Task] = {}
    for root in task_roots() if roots is None else roots:
        for path in sorted(Path(root).glob("*/*.yaml")) + sorted(Path(root).glob("*/*.yml")):
            task = load_task_file(path, known)
            if task.name in tasks:
                raise TaskFileError(f"{path}: field 'name': task {task.name!r} is also defined in {tasks[task.name].path}")
            tasks[task.name] = task
    return dict(sorted(tasks.items(), key=lambda kv: (kv[1].family, kv[0])))


def select_tasks(tasks: dict[str, Task], names: list[str] | None = None,
                 families: list[str] | None = None) -> list[Task]:
    """Tasks by name and/or family (all when neither is given); UsageError listing the valid names."""
    for name in names or []:
        if name not in tasks:
            close = difflib.get_close_matches(name, list(tasks), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"unknown task {name!r}{hint}; valid tasks: {', '.join(tasks)}")
    known_families = sorted({t.family for t in tasks.values()})
    for family in families or []:
        if family not in known_families:
            raise UsageError(f"unknown family {family!r}; valid families: {', '.join(known_families)}")
    chosen = [t for t in tasks.values()
              if (not names or t.name in names) and (not families or t.family in families)]
    if not chosen:
        raise UsageError("no task matches the given --tasks and --families")
    return chosen
