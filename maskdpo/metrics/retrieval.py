"""Passage retrieval from a FActScore-format Wikipedia database.

The database is FActScore's sqlite file (``enwiki-20230401.db``): one table
``documents(title, text)``, one row per article. FActScore stores each article
already cut into passages of at most 256 tokens, joined by
:data:`FACTSCORE_SEPARATOR`; a hand-made database may store plain text, which
is then cut here into passages of at most ``max_words`` whitespace words
(a conservative stand-in for 256 subword tokens: a word is one token or more).

Retrieval for one fact ranks the topic's passages with BM25 (``rank-bm25``)
against ``"<topic> <fact>"`` (FActScore's query) and returns the best ``k``;
an embedding retriever (any transformers encoder, mean-pooled, cosine) can
replace or be combined with it.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

FACTSCORE_SEPARATOR = "####SPECIAL####SEPARATOR####"
_WORD = re.compile(r"\w+", re.UNICODE)


class MissingArticle(LookupError):
    """The topic has no row in the database."""


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens for BM25."""
    return [w.lower() for w in _WORD.findall(text)]


def split_passages(text: str, max_words: int = 180) -> list[str]:
    """An article as passages: FActScore's stored split when present, else ≤ ``max_words`` words each.

    Plain text is cut on paragraph breaks first; a paragraph longer than
    ``max_words`` is cut into consecutive word windows.
    """
    if FACTSCORE_SEPARATOR in text:
        return [p.strip() for p in text.split(FACTSCORE_SEPARATOR) if p.strip()]
    passages = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        for i in range(0, len(words), max_words):
            passages.append(" ".join(words[i:i + max_words]))
    return [p for p in passages if p]


class WikiDB:
    """Read-only access to ``documents(title, text)``; articles are cached after the first read."""

    def __init__(self, path: str | Path, max_words: int = 180):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such Wikipedia database (FActScore's enwiki-20230401.db format)")
        self.max_words = max_words
        # Read-only URI: never create or modify the user's database.
        self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(documents)")}
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{self.path}: not a sqlite database ({exc})") from None
        if not {"title", "text"} <= columns:
            raise ValueError(f"{self.path}: expected a table documents(title, text), found columns {sorted(columns)}")
        self._cache: dict[str, list[str]] = {}

    def passages(self, title: str) -> list[str]:
        if title not in self._cache:
            row = self._conn.execute("SELECT text FROM documents WHERE title = ?", (title,)).fetchone()
            if row is None:
                raise MissingArticle(f"{self.path}: no article titled {title!r}")
            self._cache[title] = split_passages(row[0], self.max_words)
        return self._cache[title]

    def close(self) -> None:
        self._conn.close()


class Retriever(Protocol):
    def retrieve(self, topic: str, query: str, passages: list[str], k: int) -> list[str]:
        """The ``k`` passages most relevant to ``query`` (best first)."""
        ...


class BM25Retriever:
    """BM25 (Okapi) over one article's passages; the index is built once per topic."""

    def __init__(self) -> None:
        self._index: dict[str, Any] = {}

    def retrieve(self, topic: str, query: str, passages: list[str], k: int) -> list[str]:
        from rank_bm25 import BM25Okapi

        if not passages:
            return []
        if topic not in self._index:
            self._index[topic] = BM25Okapi([tokenize(p) or [""] for p in passages])
        scores = self._index[topic].get_scores(tokenize(query))
        order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))  # stable on ties
        return [passages[i] for i in order[:k]]


class EmbeddingRetriever:
    """Cosine similarity of mean-pooled hidden states from a transformers encoder.

    FActScore's own option uses GTR-T5-large; any local encoder path works here.
    """

    def __init__(self, model: str, batch_size: int = 16, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModel.from_pretrained(model).to(device).eval()
        self.batch_size = batch_size
        self.device = device
        self._vectors: dict[str, Any] = {}

    def embed(self, texts: list[str]) -> Any:
        """(len(texts), H) unit vectors."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[i:i + self.batch_size], padding=True, truncation=True, max_length=512,
                                       return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, H)
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out)

    def retrieve(self, topic: str, query: str, passages: list[str], k: int) -> list[str]:
        if not passages:
            return []
        if topic not in self._vectors:
            self._vectors[topic] = self.embed(passages)
        scores = (self._vectors[topic] @ self.embed([query])[0]).tolist()  # (P,)
        order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
        return [passages[i] for i in order[:k]]


@dataclass
class CombinedRetriever:
    """Half the passages from each retriever, interleaved and de-duplicated (best first)."""

    first: Retriever
    second: Retriever

    def retrieve(self, topic: str, query: str, passages: list[str], k: int) -> list[str]:
        a = self.first.retrieve(topic, query, passages, k)
        b = self.second.retrieve(topic, query, passages, k)
        merged: list[str] = []
        for pa, pb in zip(a, b):
            for p in (pa, pb):
                if p not in merged:
                    merged.append(p)
        return merged[:k]


def load_retriever(name: str, embedding_model: str | None = None) -> Retriever:
    """``bm25``, ``embedding`` or ``bm25+embedding``."""
    if name == "bm25":
        return BM25Retriever()
    if name in ("embedding", "bm25+embedding"):
        if not embedding_model:
            raise ValueError(f"retriever {name!r} needs an embedding model path (--embedding-model)")
        emb = EmbeddingRetriever(embedding_model)
        return emb if name == "embedding" else CombinedRetriever(BM25Retriever(), emb)
    raise ValueError(f"unknown retriever {name!r}; choose bm25, embedding or bm25+embedding")
