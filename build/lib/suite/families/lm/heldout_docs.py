"""Documents for the local lm-eval tasks, built from a corpus's held-out split (``lm_eval_tasks/``).

- ``perplexity_docs``: the split cut into passages of whole lines, about ``passage_bytes`` each, for
  rolling log-likelihood (word/byte perplexity, bits per byte over the whole split, in order).
- ``cloze_docs``: LAMBADA-style items, "predict the final word of a passage". Passages are runs of whole
  sentences (``min_words``..``max_words`` words, whitespace collapsed to single spaces, non-overlapping, in
  order); the passage ends at a sentence whose final word (i) is alphabetic, (ii) is not one of the
  ``common_words`` most frequent words of the split, and (iii) already occurs earlier in the passage. Rule
  (iii) stands in for LAMBADA's human filter: the word is recoverable from the passage but rarely from its last
  sentence alone, so the task rewards recalling context far back, which is where mixers differ. The final
  punctuation is dropped, so ``text.split(' ')[-1]`` is the target, as in lm-eval's ``lambada_openai``.

Both are deterministic functions of the split's bytes.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def perplexity_docs(text: bytes, passage_bytes: int = 4096) -> list[dict[str, str]]:
    """[{"text": passage}] covering every non-empty line of ``text`` in order (whole lines, ~passage_bytes each)."""
    docs, current, size = [], [], 0
    for line in text.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        current.append(line)
        size += len(line.encode("utf-8")) + 1
        if size >= passage_bytes:
            docs.append({"text": "\n".join(current)})
            current, size = [], 0
    if current:
        docs.append({"text": "\n".join(current)})
    return docs


def _norm_word(token: str) -> str:
    match = _WORD.search(token)
    return match.group(0).lower() if match else ""


def cloze_docs(text: bytes, min_words: int = 40, max_words: int = 160, common_words: int = 100) -> list[dict[str, str]]:
    """[{"text": passage}] whose last space-separated word is the target (see the module docstring)."""
    decoded = text.decode("utf-8", errors="replace")
    common = {w for w, _ in Counter(w.lower() for w in _WORD.findall(decoded)).most_common(common_words)}
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(decoded) if s.strip()]
    docs: list[dict[str, str]] = []
    window: list[str] = []
    for sentence in sentences:
        window.append(sentence)
        words = " ".join(window).split(" ")
        while len(words) > max_words and len(window) > 1:
            window.pop(0)
            words = " ".join(window).split(" ")
        if len(words) < min_words:
            continue
        last = words[-1]
        target = _WORD.fullmatch(last.rstrip(".!?;:,'\")")) and last.rstrip(".!?;:,'\")")
        if not target or target.lower() in common:
            continue
        earlier = {_norm_word(w) for w in words[:-1]}
        if target.lower() in earlier:
            docs.append({"text": " ".join(words[:-1] + [target])})
            window = []
    return docs


def as_dataset_dict(docs: list[dict[str, Any]], split: str = "test") -> Any:
    """A ``datasets.DatasetDict`` with the docs under ``split`` (what lm-eval's ``custom_dataset`` returns)."""
    import datasets

    if not docs:
        raise ValueError("the held-out split produced no documents (is it empty or too short?)")
    return datasets.DatasetDict({split: datasets.Dataset.from_list(docs)})
