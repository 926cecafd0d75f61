"""ListOps: LRA's generator (``lra_benchmarks/data/listops.py``) re-implemented, and the TSV loader.

Generator, as in LRA:
- ``gen(depth)``: draw r ~ U[0,1) (r = 1 at max_depth); r > VALUE_P gives a leaf digit 0-9, otherwise an
  operator node with k ~ UniformInt[2, max_args] children and an operator drawn uniformly from
  MIN, MAX, MED, SM (drawn after the children, as LRA does). Length = 2 + sum of the children's lengths
  (the operator and its ``]``); a leaf has length 1. Trees start at depth 1.
- Serialisation of the left-nested tuple form: an operator with children c1..ck prints as
  ``( `` x (k+1), the operator, `` c_i )`` for each child, then `` ] )``.
- A tree is kept when ``min_length < length < max_length`` (both strict) and its serialisation is new.
- Labels: MIN, MAX, MED = int(median) (mean of the two middle values, truncated), SM = sum mod 10.

The random draws use Python's ``random.Random`` with the same calls in the same order as LRA, so
``random.Random(seed)`` reproduces what LRA's script produces after ``random.seed(seed)``. One difference:
LRA splits the examples in the iteration order of a Python ``set``, which depends on the interpreter's
hash seed; here the order is the order in which the unique trees were first drawn (train first, then val,
then test), so the output is deterministic for a seed.

Loader, as in LRA's ``listops/input_pipeline.py``: ``]`` becomes ``X``, ``(`` and ``)`` are deleted, the
text is split on whitespace, the ``[`` of the operators is dropped (tfds' tokenizer drops it), and every
token is looked up in a fixed vocabulary (so train, val and test agree); sequences are truncated to
max_len and padded with 0.
"""
from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from suite.data import SPLITS
from suite.data.lra.progress import progress_bar

if TYPE_CHECKING:
    import torch

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VALUES = range(10)
VALUE_P = 0.25

LRA_SPLIT_SIZES = {"train": 96_000, "val": 2_000, "test": 2_000}
HEADER = ["Source", "Target"]

PAD_ID = 0
VOCAB = ("<pad>", "MIN", "MAX", "MED", "SM", "X", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
VOCAB_SIZE = len(VOCAB)


def _reduce(op: str, args: list[int]) -> int:
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    ordered = sorted(args)  # [MED: int(np.median(args)); values are >= 0 so // truncates like int()
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2


def _generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int,
                   out: list[str]) -> tuple[int, int]:
    """Append the serialisation of one random (sub)tree to ``out``; return (value, length)."""
    r = rng.random() if depth < max_depth else 1
    if r > VALUE_P:
        value = rng.choice(VALUES)
        out.append(str(value))
        return value, 1
    num_args = rng.randint(2, max_args)
    start = len(out)
    out.append("")  # placeholder for "( " * (num_args + 1) + operator, known once the operator is drawn
    length = 2
    args = []
    for _ in range(num_args):
        out.append(" ")
        value, sub_length = _generate_tree(rng, depth + 1, max_depth, max_args, out)
        out.append(" )")
        args.append(value)
        length += sub_length
    op = rng.choice(OPERATORS)
    out[start] = "( " * (num_args + 1) + op
    out.append(" ] )")
    return _reduce(op, args), length


def generate_tree(rng: random.Random, max_depth: int = 10, max_args: int = 10) -> tuple[str, int, int]:
    """One random tree as (parenthesised source string, target digit, length in tokens without parentheses)."""
    out: list[str] = []
    value, length = _generate_tree(rng, 1, max_depth, max_args, out)
    return "".join(out), value, length


def iter_unique_examples(rng: random.Random, *, min_length: int = 500, max_length: int = 2000,
                         max_depth: int = 10, max_args: int = 10,
                         exclude: set[str] | None = None) -> Iterator[tuple[str, int]]:
    """Endless stream of (source, target) for accepted trees, each source yielded once (and never one in
    ``exclude``)."""
    seen: set[str] = set(exclude) if exclude else set()
    while True:
        source, value, length = generate_tree(rng, max_depth, max_args)
        if min_length < length < max_length and source not in seen:
            seen.add(source)
            yield source, value


#: LRA's bounds on an expression's length in tokens (strict), for its L of 2000
LRA_LENGTHS = (500, 2000)


def lengths_for(seq_len: int) -> tuple[int, int]:
    """The generator's (min_length, max_length) bounds (strict) for expressions a model sees whole at L =
    ``seq_len``: LRA's (500, 2000) at L >= 2000, scaled down with L below (a quarter of L to L), so that at the
    cpu profile's L the evaluation's answer is computable from the visible tokens, as at LRA's."""
    top = min(int(seq_len), LRA_LENGTHS[1])
    if top < 8:
        raise ValueError(f"ListOps expressions need L >= 8 tokens, got {seq_len}")
    return top * LRA_LENGTHS[0] // LRA_LENGTHS[1], top


def _check_lengths(min_length: int, max_length: int) -> None:
    if min_length < 0 or max_length - min_length < 2:
        raise ValueError(f"need 0 <= min_length and min_length + 1 < max_length (lengths are strict bounds), "
                         f"got min_length={min_length}, max_length={max_length}")


def write_tsv(path: Path, rows: list[tuple[str, int]]) -> None:
    """Write rows in LRA's format (csv.writer with tab delimiter, header ``Source\\tTarget``), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(HEADER)
        writer.writerows(rows)
    os.replace(tmp, path)


def _take(stream: Iterator[tuple[str, int]], count: int, advance: Callable[[], None]) -> list[tuple[str, int]]:
    rows: list[tuple[str, int]] = []
    while len(rows) < count:
        rows.append(next(stream))
        advance()
    return rows


def generate_listops(out_dir: str | os.PathLike, num_train: int = 96_000, num_val: int = 2_000,
                     num_test: int = 2_000, seed: int = 0, min_length: int = 500, max_length: int = 2000,
                     max_depth: int = 10, max_args: int = 10, task_name: str = "basic",
                     progress: bool = True) -> dict:
    """Generate ListOps as LRA does and write ``{task_name}_{train,val,test}.tsv`` into out_dir.

    Returns a summary dict: paths, counts per split, seed and generator settings.
    """
    _check_lengths(min_length, max_length)
    counts = {"train": num_train, "val": num_val, "test": num_test}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"split sizes must be >= 0, got {counts}")
    out = Path(out_dir)
    stream = iter_unique_examples(random.Random(seed), min_length=min_length, max_length=max_length,
                                  max_depth=max_depth, max_args=max_args)
    paths = {}
    with progress_bar(f"ListOps (seed {seed})", sum(counts.values()), enabled=progress) as advance:
        for split in SPLITS:
            rows = _take(stream, counts[split], advance)
            paths[split] = out / f"{task_name}_{split}.tsv"
            write_tsv(paths[split], rows)
    return {"paths": {k: str(v) for k, v in paths.items()}, "counts": counts, "seed": seed,
            "min_length": min_length, "max_length": max_length, "max_depth": max_depth, "max_args": max_args}


def _count_rows(path: Path) -> int:
    with open(path, newline="") as f:
        return sum(1 for line in f if line.strip()) - 1


def ensure_generated_split(directory: str | os.PathLike, split: str, count: int, seed: int = 0,
                           progress: bool = True, task_name: str = "basic", min_length: int = LRA_LENGTHS[0],
                           max_length: int = LRA_LENGTHS[1]) -> Path:
    """Make sure ``{task_name}_{split}.tsv`` in directory holds at least ``count`` generated examples.

    Used for the on-demand cache, where each split grows on its own: split s is the stream of unique trees
    drawn with ``random.Random(f"listops:{seed}:{s}")`` (LRA's algorithm and default settings), with trees
    found in the other splits' files skipped, so the splits stay disjoint and a larger count only extends
    the file (the first rows do not change). ``min_length`` / ``max_length``: the length bounds (strict); one
    directory holds one choice of them. Returns the file's path.
    """
    _check_lengths(min_length, max_length)
    path = listops_path(directory, split, task_name)
    if path.exists() and _count_rows(path) >= count:
        return path
    exclude: set[str] = set()
    for other in SPLITS:
        other_path = listops_path(directory, other, task_name)
        if other != split and other_path.exists():
            exclude.update(source for source, _ in read_tsv(other_path))
    stream = iter_unique_examples(random.Random(f"listops:{seed}:{split}"), min_length=min_length,
                                  max_length=max_length, exclude=exclude)
    with progress_bar(f"ListOps {split} (seed {seed})", count, enabled=progress) as advance:
        write_tsv(path, _take(stream, count, advance))
    return path


def read_tsv(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Rows (source, target) of a ListOps TSV in LRA's format; checks the ``Source\\tTarget`` header."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header != HEADER:
            raise ValueError(f"{path}: expected header {HEADER}, got {header}")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line_no}: expected 2 tab-separated columns, got {len(row)}")
            rows.append((row[0], int(row[1])))
    return rows


# Each token becomes one control character, so a whole example maps to ids with one numpy lookup.
_SINGLE_CHAR = {"[MIN": "\x01", "[MAX": "\x02", "[MED": "\x03", "[SM": "\x04"}
_CHAR_TO_ID = np.full(128, -1, dtype=np.int64)
for _op, _char in _SINGLE_CHAR.items():
    _CHAR_TO_ID[ord(_char)] = VOCAB.index(_op[1:])
for _token in ("X", *map(str, range(10))):
    _CHAR_TO_ID[ord(_token)] = VOCAB.index(_token)


def clean_source(source: str) -> str:
    """LRA's clean-up: ``]`` -> ``X`` and parentheses deleted (whitespace-separated tokens remain)."""
    return source.replace("]", "X").replace("(", "").replace(")", "")


def _unknown_token(token: str) -> ValueError:
    return ValueError(f"unknown ListOps token {token!r}; the vocabulary is {' '.join(VOCAB[1:])}")


def encode_source(source: str) -> np.ndarray:
    """Token ids (int64 [n]) of one raw ListOps source string after LRA's clean-up; an unknown token raises
    ValueError."""
    if any(char in source for char in _SINGLE_CHAR.values()):
        raise ValueError("ListOps source contains control characters")
    text = clean_source(source)
    for op, char in _SINGLE_CHAR.items():
        text = text.replace(op, char)
    tokens = text.split()
    joined = "".join(tokens)
    if len(joined) != len(tokens):
        raise _unknown_token(next(t for t in tokens if len(t) != 1))
    codes = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
    if len(codes) != len(tokens) or (codes >= 128).any():
        raise _unknown_token(next(t for t in tokens if not t.isascii()))
    ids = _CHAR_TO_ID[codes]
    if (ids < 0).any():
        raise _unknown_token(tokens[int(np.argmax(ids < 0))])
    return ids


def encode_rows(rows: list[tuple[str, int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens int64 [N, max_len], mask bool [N, max_len] True = real token, labels int64 [N])."""
    import torch

    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    tokens = np.zeros((len(rows), max_len), dtype=np.int64)
    labels = np.empty(len(rows), dtype=np.int64)
    for i, (source, target) in enumerate(rows):
        ids = encode_source(source)[:max_len]
        tokens[i, : len(ids)] = ids
        labels[i] = target
    if len(rows) and not ((labels >= 0) & (labels <= 9)).all():
        raise ValueError("ListOps targets must be digits 0-9")
    tokens_t = torch.from_numpy(tokens)
    return tokens_t, tokens_t != PAD_ID, torch.from_numpy(labels)


def evaluate_ids(ids: Iterable[int]) -> int | None:
    """The value of one example as the model sees it (token ids after LRA's clean-up, padding dropped), by a
    stack machine independent of the generator; None when the expression is incomplete (cut off by max_len)."""
    stack: list = []
    for token in (VOCAB[int(i)] for i in ids if int(i) != PAD_ID):
        if token == "X":
            args = []
            while stack and not isinstance(stack[-1], str):
                args.append(stack.pop())
            if not stack or not args:
                return None
            stack.append(_reduce("[" + stack.pop(), args[::-1]))
        elif token.isdigit():
            stack.append(int(token))
        else:
            stack.append(token)
    return stack[0] if len(stack) == 1 and isinstance(stack[0], int) else None


def listops_path(directory: str | os.PathLike, split: str, task_name: str = "basic") -> Path:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return Path(directory) / f"{task_name}_{split}.tsv"


def load_listops(directory: str | os.PathLike, split: str, max_len: int = 2000, *, task_name: str = "basic",
                 num_examples: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load ``{task_name}_{split}.tsv`` from directory (e.g. ``lra_release/listops-1000``).

    Returns (tokens int64 [N, max_len], mask bool [N, max_len] True = real token, labels int64 [N]);
    N is the number of rows, or the first ``num_examples`` of them.
    """
    rows = read_tsv(listops_path(directory, split, task_name))
    if num_examples is not None:
        rows = rows[:num_examples]
    return encode_rows(rows, max_len)
