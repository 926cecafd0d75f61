"""The plan of a run: tasks x attentions x seeds x lengths as ``JobSpec``s, each with its key and its builder.

``plan_jobs(..., overrides={key: value})`` sets declared hyperparameters (``--set``; the LM tasks'
``--lm-eval-tasks``) in the resolved config, so they are part of the job key and of the record; each task's
builder checks its resolved hyperparameters here, before any job runs. The time and memory each job will take
are in ``estimates``.
"""
from __future__ import annotations

from typing import Any, Protocol

from suite.errors import UsageError
from suite.run.builders import Builder
from suite.run.hparams import unknown_key_message
from suite.run.job import JobSpec
from suite.run.records import job_key

MAX_JOBS = 100_000  # a plan larger than this is a typo (e.g. --seeds 100000000), refused before it is built


class Task(Protocol):
    """What planning needs of a task (``suite.tasks.Task`` is one); the harness imports no task loader."""

    name: str
    family: str
    job_builder: Builder | None

    def job_config(self, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def declares(self, key: str) -> bool: ...

    def default_attentions(self) -> list[str]: ...

    def seq_lens(self, profile: str) -> list[int]: ...
def check_overrides(tasks: list[Task], overrides: dict[str, Any]) -> None:
    """UsageError unless every override is a hyperparameter some of ``tasks`` declares, with a valid value there."""
    for key, value in overrides.items():
        declaring = [t for t in tasks if t.declares(key)]
        if not declaring:
            declared = {name: p for t in tasks if t.job_builder for name, p in t.job_builder.hparams.items()}
            raise UsageError(f"--set {key}: {unknown_key_message(key, declared, 'the selected tasks')}")
        for task in declaring:
            assert task.job_builder is not None  # a task declares only what its builder declares
            problem = task.job_builder.hparams[key].problem(value)
            if problem is not None:
                raise UsageError(f"--set {key}={value!r}: expected {problem} (task {task.name})")


def plan_jobs(tasks: list[Task], profile: str, attentions: list[str] | None = None, seeds: int = 1,
              seq_lens: list[int] | None = None, overrides: dict[str, Any] | None = None,
              rehearse: bool = False) -> list[JobSpec]:
    """Every job of ``tasks``: per task, its lengths x seeds x attentions (the task defaults unless given).

    ``attentions`` must already be canonical specs. ``overrides`` set declared hyperparameters of the tasks that
    declare them (``check_overrides``). ``rehearse`` adds each builder's rehearsal overrides (under the given
    ones) and keeps only the profile's shortest length (unless ``seq_lens`` is given): the profile end to end in
    a couple of steps. Each task's builder checks its resolved hyperparameters here, before any job runs
    (``Builder.check``); a ValueError becomes a UsageError naming the task. Duplicate jobs (same key) appear
    once.
    """
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    count = sum((len(seq_lens or task.seq_lens(profile)) if not rehearse else 1) * seeds
                * len(attentions or task.default_attentions()) for task in tasks)
    if count > MAX_JOBS:
        raise UsageError(f"the plan has {count:,} jobs (more than {MAX_JOBS:,}); check --seeds, --seq-len and --attn")
    overrides = dict(overrides or {})
    check_overrides(tasks, overrides)
    jobs: dict[str, JobSpec] = {}
    for task in tasks:
        rehearsal = task.job_builder.rehearsal if rehearse and task.job_builder is not None else {}
        config = task.job_config(profile, {**rehearsal, **overrides})
        if task.job_builder is not None and task.job_builder.check is not None:
            try:
                task.job_builder.check(config["hparams"])
            except ValueError as err:
                raise UsageError(f"{task.name} ({profile}): {err}") from None
        specs = attentions or task.default_attentions()
        lengths = seq_lens or ([min(task.seq_lens(profile))] if rehearse else task.seq_lens(profile))
        for seq_len in lengths:
            for seed in range(seeds):
                for attention in specs:
                    key = job_key(task.name, attention, profile, seed, seq_len, config)
                    jobs.setdefault(key, JobSpec(task.name, task.family, attention, profile, seed, seq_len, config,
                                                 key, task.job_builder))
    return list(jobs.values())
