"""Task files: ``tasks/<family>/<name>.yaml`` at the top of the repository (linked into the package as
``suite/tasks/files``, so an installed package carries them), loaded and validated here.
Adding a task is adding a file.

A task file::

    name: lra-listops                # must equal the file name without .yaml
    family: lra                      # must equal the directory name
    description: ListOps, nested list operations, 10 classes
    builder: lra                     # a registered builder (suite.run.builders; suite.families)
    data: {source: lra-listops, task: listops}   # the data set it reads; more keys go to the builder
    metric: {name: accuracy, direction: max}
    seq_len: [2000]                  # the published length(s); a profile may override
    attentions: [ea, softmax]        # default attentions (specs), or "all" for every registered one
    defaults: {lr: 1.0e-3}           # optional: hyperparameters shared by every profile
    profiles:                        # all three, each a mapping of hyperparameters
      smoke: {steps: 4, batch_size: 2, seq_len: [128]}
      cpu: {...}
      full: {...}

Every hyperparameter must be one the builder declares (``run_suite.py list --hparams``): an unknown key is an
error naming the closest declared one (or the new name of a renamed one), a value of the wrong type an error
naming what was expected. ``seq_len`` (a list of lengths) is the task's own key. The job's resolved
hyperparameters are the declared defaults, then ``defaults``, then the profile, then ``--set`` overrides.

Builders come from ``suite.families`` and from the modules named in ``EA_SUITE_PLUGINS`` (comma-separated, for
builders outside the suite and for tests). Extra task roots (with the same ``<family>/<name>.yaml`` layout) can
be added with ``EA_SUITE_TASKS`` (paths separated by ``os.pathsep``).
"""
from __future__ import annotations

import difflib
import importlib.resources
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from suite import settings
from suite.errors import UsageError
from suite.run.builders import Builder, get_builder, load_plugins
from suite.run.hparams import resolve, unknown_key_message

#: the task files: the repository's top-level tasks/<family>/, which suite/tasks/files links to, so that an
#: installed package carries them (a wheel holds the files themselves)
TASKS_ROOT = Path(str(importlib.resources.files("suite.tasks"))) / "files"
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


def _positive_int_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(x) and x > 0 for x in v)


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
    job_builder: Builder | None = None  # the registered builder the ``builder`` field names

    def seq_lens(self, profile: str) -> list[int]:
        """The sequence lengths a profile runs (its own ``seq_len``, else the task's)."""
        return list(self._profile(profile).get("seq_len", self.seq_len))

    def hparams(self, profile: str) -> dict[str, Any]:
        """The profile's hyperparameters over the task's ``defaults``, without ``seq_len``."""
        merged = {**self.defaults, **self._profile(profile)}
        merged.pop("seq_len", None)
        return merged

    def declares(self, key: str) -> bool:
        """Whether this task's builder reads the hyperparameter ``key``."""
        return self.job_builder is not None and key in self.job_builder.hparams

    def job_config(self, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The resolved configuration stored in every record of this task and profile (and hashed into its key):
        the builder's declared defaults, then the task's values, then ``overrides`` of keys it declares (listed
        again under ``overrides``)."""
        hparams = self.hparams(profile)
        applied = {k: v for k, v in (overrides or {}).items() if self.declares(k)}
        if self.job_builder is not None:
            hparams = resolve({**hparams, **applied}, self.job_builder.hparams)
        config = {"builder": self.builder, "metric": self.metric, "direction": self.direction,
                  "data": dict(self.data), "hparams": hparams}
        if applied:
            config["overrides"] = applied  # what --set / --rehearse changed, so the record shows it
        return config

    def default_attentions(self) -> list[str]:
        """Canonical specs of the default attentions (every registered one for ``all``), each checked completely
        (``suite.attention.validate_spec``, its answers cached: ``suite.tasks.attention_specs``); TaskFileError naming
        the entry if one is bad."""
        from suite.tasks.attention_specs import all_names, checked_spec

        specs = all_names() if self.attentions == "all" else list(self.attentions)
        out = []
        for i, spec in enumerate(specs):
            try:
                out.append(checked_spec(spec))
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


def _check_hparams(path: Path, where: str, params: Any, builder: Builder | None) -> dict[str, Any]:
    """``params`` checked against what ``builder`` declares (names and types; ``seq_len`` is the task's)."""
    if not isinstance(params, dict):
        raise _fail(path, where, "a mapping of hyperparameters", params)
    for key in params:
        if not isinstance(key, str):
            raise _fail(path, where, "string hyperparameter names", key)
    rest = dict(params)
    if "seq_len" in rest and not _positive_int_list(rest.pop("seq_len")):
        raise _fail(path, f"{where}.seq_len", "a non-empty list of positive integers", params["seq_len"])
    if builder is not None:
        for key, value in rest.items():
            if key not in builder.hparams:
                raise TaskFileError(f"{path}: field '{where}.{key}': "
                                    f"{unknown_key_message(key, builder.hparams, f'builder {builder.name!r}')}")
            problem = builder.hparams[key].problem(value)  # what was expected (and an old value's new name)
            if problem is not None:
                raise _fail(path, f"{where}.{key}", problem, value)
    return params


def parse_task(raw: Any, path: Path, builders: dict[str, Builder] | None = None) -> Task:
    """Validate the parsed YAML of one task file; ``builders`` (if given) are the registered builders by name, and
    the task's hyperparameters are checked against the one it names."""
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
    if builders is not None and raw["builder"] not in builders:
        raise _fail(path, "builder", f"one of the registered builders: {', '.join(sorted(builders))}", raw["builder"])
    builder = builders[raw["builder"]] if builders is not None else None

    data = raw["data"]
    if not isinstance(data, dict) or not isinstance(data.get("source"), str) or not data["source"]:
        raise _fail(path, "data.source" if isinstance(data, dict) else "data", "the name of the data set (a string)",
                    data.get("source") if isinstance(data, dict) else data)

    metric = raw["metric"]
    if not isinstance(metric, dict):
        raise _fail(path, "metric", _REQUIRED["metric"], metric)
    if not isinstance(metric.get("name"), str) or not metric["name"]:
        raise _fail(path, "metric.name", "the name of the main metric (e.g. accuracy, loss, fwd_ms)",
                    metric.get("name"))
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

    defaults = _check_hparams(path, "defaults", raw.get("defaults", {}) or {}, builder)

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
    checked = {p: dict(_check_hparams(path, f"profiles.{p}", profiles[p] or {}, builder)) for p in PROFILES}

    return Task(name=name, family=family, description=raw["description"].strip(), builder=raw["builder"],
                data=dict(data), metric=metric["name"], direction=metric["direction"],
                seq_len=tuple(raw["seq_len"]), attentions=attentions, defaults=dict(defaults),
                profiles=checked, path=path, job_builder=builder)


_REGISTERED: Any = object()


def load_task_file(path: Path | str, builders: dict[str, Builder] | None = _REGISTERED) -> Task:
    """Read and validate one task file against ``builders`` (default: every registered one; None: only the task's
    own fields, no builder or hyperparameter checks); TaskFileError names the file and field on any problem."""
    if builders is _REGISTERED:
        builders = registered_builders()
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TaskFileError(f"{path}:{where}: not valid YAML: {problem}") from None
    except UnicodeDecodeError as err:
        raise TaskFileError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except RecursionError:
        raise TaskFileError(f"{path}: nested too deeply to be a task file") from None
    except OSError as err:
        raise TaskFileError(f"{path}: cannot read: {err.strerror}") from None
    return parse_task(raw, path, builders)


class _StrictLoader(yaml.SafeLoader):
    """yaml's safe loader that refuses a key given twice in one mapping (the last would win silently) and
    non-finite numbers (.inf, .nan), both at the line where they stand."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise yaml.constructor.ConstructorError(None, None, f"{node.value!r} is not a finite number",
                                                    node.start_mark)
        return value


_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_mapping)


def task_roots() -> list[Path]:
    """The built-in task files (``suite/tasks/``) followed by the roots in ``$EA_SUITE_TASKS``."""
    return [TASKS_ROOT, *settings.task_roots()]


def plugin_modules() -> list[str]:
    """The modules named in ``$EA_SUITE_PLUGINS`` (comma-separated)."""
    return settings.plugins()


def registered_builders() -> dict[str, Builder]:
    """Every builder: the suite's families and the plugins of ``$EA_SUITE_PLUGINS`` (imported here)."""
    import suite.families  # noqa: F401  (registers the suite's builders)
    from suite.run.builders import builder_names

    try:
        load_plugins(plugin_modules())
    except ImportError as err:
        raise UsageError(f"${settings.PLUGINS_ENV}: cannot import {err.name or err}: {err}") from None
    return {name: get_builder(name) for name in builder_names()}


def load_tasks(roots: list[Path] | None = None, check_builders: bool = True) -> dict[str, Task]:
    """Every task under ``roots`` (default ``task_roots()``), by name, ordered by family then name."""
    builders = registered_builders() if check_builders else None
    tasks: dict[str, Task] = {}
    for root in task_roots() if roots is None else roots:
        for path in sorted(Path(root).glob("*/*.yaml")) + sorted(Path(root).glob("*/*.yml")):
            task = load_task_file(path, builders)
            if task.name in tasks:
                raise TaskFileError(f"{path}: field 'name': task {task.name!r} is also defined in "
                                    f"{tasks[task.name].path}")
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
