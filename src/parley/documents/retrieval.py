"""Rank chunks for a question with BM25 (bm25s, numpy only).

`Retriever(chunks)` indexes each chunk's part name and text once; `rank(question, k)` returns up to k
(chunk, score) pairs, best first, only chunks sharing at least one term with the question (so possibly none).
Ties are broken by chunk index, so the order is the same on every run. Tokens (`tokenize`): lowercase runs of
letters and digits, underscores split (`prepare_data` -> prepare, data), camelCase also split
(`loadConfig` -> loadconfig, load, config), English stopwords and question words dropped, then each word
stemmed (PyStemmer's English Snowball: "camped" and "camp" match).

Why BM25 alone, with no embedding ranking beside it: measured by scripts/retrieval-eval on the embedded
SmolLM2-135M (a ~20k-token made-up document, ~92 chunks of ~220 tokens, 30 planted facts asked in other words:
24 of the questions share no term with their fact), share of questions whose passage is in the top 5 / top 10:

    seed    bm25         mean-pooled embeddings    hybrid (reciprocal rank fusion of the two)
    7       0.13 / 0.17  0.07 / 0.13               0.17 / 0.20
    11      0.17 / 0.20  0.07 / 0.10               0.20 / 0.20
    23      0.20 / 0.23  0.13 / 0.23               0.23 / 0.37

The hybrid finds one question more in the top 5 on each seed (+3.3 points: short of the 5 that would pay for
it), while embedding the chunks costs ~1 s per chunk on two CPU threads (140-260 tokens/s: 80-150 s for this
document at load, against BM25's milliseconds), and the 135M model's pooled states alone rank worse than BM25.
Worth measuring again with a real embedding model (an embedding GGUF: `parley models add`, then
`scripts/retrieval-eval -m FILE.gguf`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import bm25s
import numpy as np
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from parley.documents.chunks import Chunk
from parley.errors import InvalidRequest

STOPWORDS = frozenset(STOPWORDS_EN) | frozenset(
    "what which who whom whose when where why how does do did done can could would should i me my you your "
    "we our us please tell explain describe".split())
_WORD = re.compile(r"[^\W_]+")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_STEM = Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    tokens = []
    for word in _WORD.findall(text):
        low = word.lower()
        if low not in STOPWORDS:
            tokens.append(low)
        if word.isascii() and not word.islower() and not word.isupper():
            pieces = _CAMEL.findall(word)
            if len(pieces) > 1:
                tokens += [p.lower() for p in pieces if p.lower() not in STOPWORDS]
    return _STEM.stemWords(tokens)


class Retriever:
    def __init__(self, chunks: Sequence[Chunk]):
        self.chunks = list(chunks)
        corpus = [tokenize(f"{c.part}\n{c.text}") for c in self.chunks]
        self._bm25: bm25s.BM25 | None = None
        if any(corpus):
            self._bm25 = bm25s.BM25()
            self._bm25.index(corpus, show_progress=False)

    def rank(self, question: str, k: int = 4) -> list[tuple[Chunk, float]]:
        if k < 1:
            raise InvalidRequest(f"k must be at least 1, got {k}", param="k")
        if self._bm25 is None:
            return []
        vocab = self._bm25.vocab_dict
        terms = [t for t in dict.fromkeys(tokenize(question)) if t in vocab]
        if not terms:
            return []
        scores = np.asarray(self._bm25.get_scores(terms), dtype=np.float64)
        hits = np.flatnonzero(scores > 0)
        best = hits[np.lexsort((hits, -scores[hits]))][:k]
        return [(self.chunks[i], float(scores[i])) for i in best]
