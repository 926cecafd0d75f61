"""Task files: the built-in ones are valid, malformed ones are rejected naming file, field and expectation."""
import textwrap

import pytest
from tiny_jobs import write_tiny_task

from suite.errors import UsageError
from suite.tasks import PROFILES, TASKS_ROOT, TaskFileError, load_task_file, load_tasks, select_tasks

GOOD = """\
name: demo
family: kernels
description: a demo task
builder: kernels
data: {source: random-normal}
metric: {name: fwd_ms, direction: min}
seq_len: [128, 256]
attentions: [ea, softmax]
defaults: {modes: [fwd], batch_size: 2, head_dim: 32}
profiles:
  smoke: {repeats: 1, seq_len: [16, 32], batch_size: 1}
  cpu: {repeats: 3}
  full: {repeats: 20}
"""


def write(tmp_path, text, name="demo", family="kernels"):
    path = tmp_path / family / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def drop_line(text, prefix):
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith(prefix))


def test_every_builtin_task_file_is_valid_with_three_profiles_and_known_attentions():
    tasks = load_tasks()
    assert {"kernels-noncausal", "kernels-causal", "kernels-decode"} <= set(tasks)
    for task in tasks.values():
        assert set(task.profiles) == set(PROFILES)
        for profile in PROFILES:
            assert task.seq_lens(profile)
        assert task.default_attentions()


def test_profile_values_override_defaults_and_seq_len(tmp_path):
    task = load_task_file(write(tmp_path, GOOD))
    assert task.seq_lens("smoke") == [16, 32]
    assert task.seq_lens("full") == [128, 256]
    assert task.hparams("smoke") == {"modes": ["fwd"], "batch_size": 1, "head_dim": 32, "repeats": 1}
    config = task.job_config("cpu")
    declared = {p.name: p.default for p in task.job_builder.hparams.values() if p.default is not None}
    assert config == {"builder": "kernels", "metric": "fwd_ms", "direction": "min",
                      "data": {"source": "random-normal"},
                      "hparams": {**declared, "modes": ["fwd"], "batch_size": 2, "head_dim": 32, "repeats": 3}}
    assert config["hparams"]["level"] == "op"  # a declared default the task does not set


def test_overrides_apply_to_the_tasks_that_declare_them(tmp_path):
    task = load_task_file(write(tmp_path, GOOD))
    assert task.job_config("cpu", {"repeats": 7, "lr": 0.5})["hparams"]["repeats"] == 7
    assert "lr" not in task.job_config("cpu", {"lr": 0.5})["hparams"]  # kernels does not declare lr


@pytest.mark.parametrize("old,new,message", [
    ("cpu: {repeats: 3}", "cpu: {repeatz: 3}", "unknown hyperparameter 'repeatz' for builder 'kernels' "
                                               "(did you mean 'repeats'?)"),
    ("cpu: {repeats: 3}", "cpu: {num_heads: 3}", "'num_heads' was renamed 'heads'"),
    ("batch_size: 2,", "batch: 2,", "'batch' was renamed 'batch_size'"),
])
def test_unknown_and_renamed_hyperparameters_name_the_valid_one(tmp_path, old, new, message):
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    assert str(path) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("old,new", [("token", "cls"), ("avg", "mean")])
@pytest.mark.parametrize("where", ["defaults", "profiles.cpu"])
def test_an_old_pool_value_names_the_value_it_was_renamed(tmp_path, old, new, where):
    text = (TASKS_ROOT / "vit" / "vit-cifar10.yaml").read_text()
    if where == "defaults":
        text = text.replace("pool: cls,", f"pool: {old},")
    else:
        text = text.replace("cpu: {steps: 400,", f"cpu: {{pool: {old}, steps: 400,")
    path = write(tmp_path, text, name="vit-cifar10", family="vit")
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    message = f"field '{where}.pool': expected one of cls, mean ('{old}' was renamed '{new}'), got '{old}'"
    assert str(path) in str(err.value) and message in str(err.value)
    (tmp_path / "vit" / "vit-cifar10.yaml").write_text(text.replace(f"pool: {old}", f"pool: {new}"))
    assert load_task_file(path).hparams("cpu")["pool"] == new  # the new value loads


def test_an_old_value_of_another_hyperparameter_gets_no_rename_hint(tmp_path):
    text = (TASKS_ROOT / "lra" / "lra-listops.yaml").read_text()
    path = write(tmp_path, text.replace("pos_emb: learned", "pos_emb: token"), name="lra-listops", family="lra")
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    assert "expected one of learned, sinusoidal, got 'token'" in str(err.value) and "renamed" not in str(err.value)


@pytest.mark.parametrize("field", ["name", "family", "description", "builder", "data", "metric", "seq_len",
                                   "attentions", "profiles"])
def test_task_file_with_a_missing_field_is_rejected_naming_it(tmp_path, field):
    text = GOOD.split("profiles:")[0] if field == "profiles" else drop_line(GOOD, f"{field}:")
    path = write(tmp_path, text)
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    assert str(path) in str(err.value)
    assert f"field '{field}'" in str(err.value) and "missing" in str(err.value)


def test_missing_profile_is_rejected_naming_it(tmp_path):
    path = write(tmp_path, drop_line(GOOD, "  cpu:"))
    with pytest.raises(TaskFileError, match=r"field 'profiles.cpu'.*missing"):
        load_task_file(path)


@pytest.mark.parametrize("old,new,field,expected", [
    ("cpu: {repeats: 3}", "cpu: {repeats: -1}", "profiles.cpu.repeats", "an integer >= 1"),
    ("cpu: {repeats: 3}", "cpu: {level: deep}", "profiles.cpu.level", "one of op, module"),
    ("head_dim: 32", "head_dim: wide", "defaults.head_dim", "an integer >= 1"),
    ("modes: [fwd]", "modes: [backward]", "defaults.modes", "a list of fwd, fwdbwd, decode"),
    ("seq_len: [128, 256]", "seq_len: 128", "seq_len", "a list of positive sequence lengths"),
    ("direction: min", "direction: down", "metric.direction", "max (higher is better) or min"),
    ("{source: random-normal}", "{path: x}", "data.source", "the name of the data set"),
    ("name: demo", "name: other", "name", "the file name 'demo'"),
    ("family: kernels", "family: vit", "family", "the directory name 'kernels'"),
    ("attentions: [ea, softmax]", "attentions: []", "attentions", "a list of attention specs"),
])
def test_bad_field_value_names_field_and_what_was_expected(tmp_path, old, new, field, expected):
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(TaskFileError) as err:
        load_task_file(path)
    message = str(err.value)
    assert str(path) in message and f"field '{field}'" in message and expected in message


def test_unknown_field_and_unknown_profile_are_rejected_listing_allowed(tmp_path):
    with pytest.raises(TaskFileError, match="unknown field 'epochs'; allowed fields: name, family"):
        load_task_file(write(tmp_path, GOOD + "epochs: 3\n"))
    with pytest.raises(TaskFileError, match="unknown profile 'huge'; allowed: smoke, cpu, full"):
        load_task_file(write(tmp_path, GOOD + "  huge: {}\n"))


def test_unknown_builder_is_rejected_listing_registered_builders(tmp_path):
    path = write(tmp_path, GOOD.replace("builder: kernels", "builder: kernals"))
    with pytest.raises(TaskFileError, match=r"field 'builder': expected one of the registered builders: .*kernels"):
        load_task_file(path)


def test_invalid_yaml_reports_file_and_line(tmp_path):
    path = write(tmp_path, GOOD.replace("seq_len: [128, 256]", "seq_len: [128, 256"))
    with pytest.raises(TaskFileError, match=rf"{path}: line \d+: not valid YAML"):
        load_task_file(path)


def test_unknown_default_attention_names_the_entry(tmp_path):
    task = load_task_file(write(tmp_path, GOOD.replace("[ea, softmax]", "[ea, softmx]")))
    with pytest.raises(TaskFileError, match=r"field 'attentions\[1\]': unknown attention 'softmx'.*valid names"):
        task.default_attentions()


def test_adding_a_task_is_adding_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EA_SUITE_PLUGINS", "tiny_jobs")
    monkeypatch.setenv("EA_SUITE_TASKS", str(tmp_path))
    assert "tiny" not in load_tasks()
    write_tiny_task(tmp_path)
    tasks = load_tasks()
    assert tasks["tiny"].family == "test" and tasks["tiny"].builder == "test-tiny"


def test_duplicate_task_names_across_roots_are_rejected(tmp_path):
    write(tmp_path / "a", GOOD)
    write(tmp_path / "b", GOOD)
    with pytest.raises(TaskFileError, match="also defined in"):
        load_tasks([tmp_path / "a", tmp_path / "b"], check_builders=False)


def test_selecting_an_unknown_task_or_family_lists_the_valid_names():
    tasks = load_tasks()
    with pytest.raises(UsageError, match=r"unknown task 'kernels-noncasual' \(did you mean 'kernels-noncausal'\?\); "
                                         r"valid tasks: .*kernels-decode"):
        select_tasks(tasks, ["kernels-noncasual"])
    with pytest.raises(UsageError, match="unknown family 'vision'; valid families: .*kernels"):
        select_tasks(tasks, families=["vision"])
    assert [t.name for t in select_tasks(tasks, families=["kernels"])] == [
        n for n, t in tasks.items() if t.family == "kernels"]
