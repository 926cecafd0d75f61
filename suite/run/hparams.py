"""Declared hyperparameters: every key a task file may set is declared, with its type, default and meaning.

A builder registers with the list of ``HParam``s it reads (``suite.run.builders.register_builder``); the
task loader checks every task file against it (an unknown key is an error naming the closest declared one),
fills in the declared defaults (the record's ``config.hparams`` is then complete), and ``run_suite.py list
--hparams`` prints the declarations. ``TRAINING`` holds the keys the one training loop reads
(``suite.run.train``); training builders declare them too.

One word per thing across families: ``heads``, ``dim``, ``batch_size``, ``pool`` (cls | mean). ``RENAMED``
maps the old names to them and ``RENAMED_VALUES`` the old values (``pool: token | avg``), so an old task file (or
``--set``) gets a message saying the new name or value.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: old hyperparameter name -> the name it has now (the message for an old task file)
RENAMED = {"num_heads": "heads", "embed_dim": "dim", "pooling": "pool", "batch": "batch_size"}
#: hyperparameter -> {old value: the value it has now} (the ViT's timm words for pooling)
RENAMED_VALUES = {"pool": {"token": "cls", "avg": "mean"}}

_KINDS = ("int", "float", "bool", "str", "ints", "floats", "strs", "mapping", "any")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


@dataclass(frozen=True)
class HParam:
    """One declared hyperparameter.

    ``kind``: int | float | bool | str | ints | floats | strs (lists) | mapping | any. ``default``: filled in when
    a task does not set the key (None: no default; the builder says what absence means). ``low``/``high``:
    bounds of numbers (of every item of a list), ``low_open``/``high_open`` exclude the bound itself. ``choices``: the
    allowed
    values (of a str, or of every item of a list). ``nullable``: null is allowed. ``length``: exact list length.
    """

    name: str
    kind: str
    default: Any = None
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    length: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"hyperparameter {self.name!r}: unknown kind {self.kind!r}; valid: {', '.join(_KINDS)}")
        if self.default is not None and self.problem(self.default):
            raise ValueError(f"hyperparameter {self.name!r}: default {self.default!r} is not {self.expected()}")

    def expected(self) -> str:
        """What a valid value looks like, in words."""
        item = {"int": "an integer", "ints": "integers", "float": "a number", "floats": "numbers",
                "bool": "true or false",
                "str": "a word", "strs": "words", "mapping": "a mapping", "any": "any value"}[self.kind]
        if self.low is not None or self.high is not None:
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            item += " " + " and ".join(bounds)
        if self.choices:
            item = ("one of " if self.kind == "str" else "a list of ") + ", ".join(map(str, self.choices))
        if self.kind in ("ints", "floats", "strs") and not self.choices:
            item = f"a list of {self.length or ''} {item}".replace("  ", " ")
        return item + (" or null" if self.nullable else "")

    def _item_ok(self, v: Any, kind: str) -> bool:
        if kind in ("int", "ints"):
            ok = _is_int(v)
        elif kind in ("float", "floats"):
            ok = _is_num(v)
        elif kind in ("str", "strs"):
            ok = isinstance(v, str) and bool(v)
        else:
            ok = True
        if ok and (self.low is not None or self.high is not None) and kind in ("int", "ints", "float", "floats"):
            if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
                ok = False
            if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
                ok = False
        if ok and self.choices and v not in self.choices:
            ok = False
        return ok

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is valid, else what was expected."""
        if value is None:
            return None if self.nullable or self.default is None else self.expected()
        if self.kind == "bool":
            ok = isinstance(value, bool)
        elif self.kind == "mapping":
            ok = isinstance(value, dict)
        elif self.kind in ("ints", "floats", "strs"):
            ok = (isinstance(value, list) and (self.length is None or len(value) == self.length)
                  and all(self._item_ok(v, self.kind) for v in value))
        elif self.kind == "any":
            ok = True
        else:
            ok = self._item_ok(value, self.kind)
        return None if ok else self.expected() + self._renamed_value_hint(value)

    def _renamed_value_hint(self, value: Any) -> str:
        """`` ('token' was renamed 'cls')`` for an old value (``RENAMED_VALUES``) whose new one is valid, else ''."""
        new = RENAMED_VALUES.get(self.name, {}).get(value) if isinstance(value, str) else None
        return f" ({value!r} was renamed {new!r})" if new is not None and self.problem(new) is None else ""


def by_name(params: Iterable[HParam]) -> dict[str, HParam]:
    """Declarations by name; ValueError when a name is declared twice."""
    out: dict[str, HParam] = {}
    for p in params:
        if p.name in out:
            raise ValueError(f"hyperparameter {p.name!r} is declared twice")
        out[p.name] = p
    return out


def unknown_key_message(key: str, declared: Mapping[str, HParam], owner: str) -> str:
    """The message for a key that ``owner`` does not declare: the new name of a renamed key, or the closest one."""
    if key in RENAMED and RENAMED[key] in declared:
        return f"{key!r} was renamed {RENAMED[key]!r}"
    close = difflib.get_close_matches(key, list(declared), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown hyperparameter {key!r} for {owner}{hint}; `run_suite.py list --hparams` lists the declared ones"


def check_hparams(values: Mapping[str, Any], declared: Mapping[str, HParam], owner: str) -> list[str]:
    """Every problem of ``values`` against ``declared``, one line each (empty when all is well)."""
    problems = []
    for key, value in values.items():
        if key not in declared:
            problems.append(f"{key!r}: {unknown_key_message(key, declared, owner)}")
            continue
        expected = declared[key].problem(value)
        if expected is not None:
            problems.append(f"{key!r}: expected {expected}, got {value!r}")
    return problems


def resolve(values: Mapping[str, Any], declared: Mapping[str, HParam]) -> dict[str, Any]:
    """``values`` over the declared defaults (keys without a default stay absent unless set)."""
    out = {name: p.default for name, p in declared.items() if p.default is not None}
    out.update(values)
    return out


#: the keys of the one training loop (suite.run.train); every training builder declares them too
TRAINING: tuple[HParam, ...] = (
    HParam("steps", "int", None, "optimizer steps (give steps or epochs)", low=1),
    HParam("epochs", "float", None, "passes over the training split, instead of steps", low=0, low_open=True),
    HParam("batch_size", "int", None, "training examples per optimizer step (per rank under DDP)", low=1),
    HParam("eval_batch_size", "int", None, "examples per evaluation batch (default: batch_size)", low=1),
    HParam("lr", "float", 1e-3, "peak learning rate of AdamW", low=0, low_open=True),
    HParam("weight_decay", "float", 0.01, "AdamW weight decay", low=0),
    HParam("betas", "floats", [0.9, 0.999], "AdamW betas", low=0, high=1, high_open=True, length=2),
    HParam("warmup_steps", "int", 0, "linear warm-up steps", low=0),
    HParam("schedule", "str", "cosine", "learning-rate decay after warm-up", choices=("cosine", "linear", "constant")),
    HParam("min_lr_ratio", "float", 0.0, "final learning rate as a fraction of lr", low=0, high=1),
    HParam("grad_clip", "float", 1.0, "gradient-norm clip (null: off)", low=0, low_open=True, nullable=True),
    HParam("amp", "str", "bf16", "autocast on CUDA (the CPU always runs fp32)", choices=("bf16", "none")),
    HParam("eval_points", "int", 4, "evaluations along training for the learning curve (the last is the final one)",
           low=1),
)
