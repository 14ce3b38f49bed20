"""BM25 search over a local document index: the offline stand-in for the paper's web search
(docs/design.md §3).

The scoring is ``bm25s`` (Lucene's BM25 variant, k1 = 1.5, b = 0.75) over our own tokens: lowercased
words and numbers, without English stop words. Single characters and digits are kept (years, "7"),
which bm25s's default tokenizer would drop. Ties are broken by document order, so a query always
gives the same ranking. Results are rendered as a short numbered list, ``[1] title: snippet``, where
the snippet is the document's sentences that match the query (the best first, as many as fit), kept in
document order and cut at ``SNIPPET_CHARS``: what a search engine's result page shows, bounded so a tool
response stays short.

An index comes from documents in memory (:meth:`SearchIndex.from_documents`), from a folder of
.txt/.md files or a JSONL file of ``{"id", "title", "text"}`` objects (:meth:`SearchIndex.load`,
cached per process by :func:`load_index`), or is the suites' fictional encyclopedia
(:func:`builtin_index`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import bm25s

__all__ = [
    "MAX_RESULTS",
    "SNIPPET_CHARS",
    "Document",
    "Hit",
    "SearchIndex",
    "builtin_index",
    "load_index",
    "tokenize",
]

MAX_RESULTS = 10  # the tool accepts max_results in 1..MAX_RESULTS
SNIPPET_CHARS = 300
TITLE_CHARS = 80
DOCUMENT_SUFFIXES = (".txt", ".md")

_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have in is it its of on or that the this to was were which "
    "who what when where with".split()
)


def tokenize(text: str) -> list[str]:
    """Lowercased words and numbers, stop words removed: the terms BM25 matches."""
    return [t for t in _WORD.findall(text.lower()) if t not in _STOP_WORDS]


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Hit:
    document: Document
    score: float
    snippet: str


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def snippet(text: str, query_terms: Iterable[str], limit: int = SNIPPET_CHARS) -> str:
    """The sentences of ``text`` that share query terms, the most shared first, shown in document order
    within ``limit`` characters (a result page's snippet: the passages that match); the text's start when
    no sentence matches."""
    terms = set(query_terms)
    sentences = [s for s in _SENTENCE_END.split(_one_line(text)) if s]
    if not sentences:
        return ""
    overlap = [len(terms.intersection(tokenize(s))) for s in sentences]
    if not any(overlap):
        return _cut(sentences[0], limit)
    order = sorted((i for i in range(len(sentences)) if overlap[i]), key=lambda i: (-overlap[i], i))
    chosen, used = [], -1
    for i in order:
        if used + 1 + len(sentences[i]) <= limit:
            chosen.append(i)
            used += 1 + len(sentences[i])
    if not chosen:  # even the best sentence is too long: show its start
        return _cut(sentences[order[0]], limit)
    return " ".join(sentences[i] for i in sorted(chosen))


class SearchIndex:
    """A BM25 index over documents (title and text both indexed)."""

    def __init__(self, documents: Sequence[Document]):
        self.documents: tuple[Document, ...] = tuple(documents)
        ids = [d.id for d in self.documents]
        if len(set(ids)) != len(ids):
            raise ValueError("document ids must be unique")
        self._bm25: bm25s.BM25 | None = None
        if self.documents:
            import bm25s  # imported on first use: importing the tools must stay cheap

            self._bm25 = bm25s.BM25()
            corpus = [tokenize(f"{d.title}\n{d.text}") or [""] for d in self.documents]
            self._bm25.index(corpus, show_progress=False)

    def __len__(self) -> int:
        return len(self.documents)

    @classmethod
    def from_documents(cls, documents: Iterable[Document | Mapping[str, str]]) -> SearchIndex:
        """From Documents or mappings with "text" (and optional "id", default its position, and
        "title", default the id)."""
        docs = []
        for i, d in enumerate(documents):
            if not isinstance(d, Document):
                if not isinstance(d.get("text"), str):
                    raise ValueError(f"document {i} has no text")
                doc_id = str(d.get("id", i))
                d = Document(doc_id, str(d.get("title") or doc_id), d["text"])
            docs.append(d)
        return cls(docs)

    @classmethod
    def load(cls, path: str | PathLike) -> SearchIndex:
        """From a folder of .txt/.md files (recursively; a leading "# heading" line is the title, else the
        file name) or from a JSONL file with one {"id", "title", "text"} object per line."""
        root = Path(path)
        if root.is_dir():
            files = sorted(
                p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES
            )
            return cls([_file_document(p, root) for p in files])
        if root.is_file() and root.suffix.lower() == ".jsonl":
            return cls.from_documents(_read_jsonl(root))
        if not root.exists():
            raise FileNotFoundError(f"no search index at {root}")
        raise ValueError(f"a search index is a folder of .txt/.md files or a .jsonl file, not {root}")

    def search(self, query: str, max_results: int = 3) -> list[Hit]:
        """The best ``max_results`` documents with a positive score, best first (ties: document order)."""
        terms = tokenize(query)
        if self._bm25 is None or not terms or max_results < 1:
            return []
        scores = np.asarray(self._bm25.get_scores(terms), dtype=np.float64)
        order = np.lexsort((np.arange(len(scores)), -scores))  # by score, then by position
        hits = []
        for i in order[:max_results]:
            if scores[i] <= 0:
                break
            doc = self.documents[i]
            hits.append(Hit(doc, float(scores[i]), snippet(doc.text, terms)))
        return hits

    def render(self, query: str, max_results: int = 3) -> str:
        """The result page the model reads: one ``[n] title: snippet`` line per hit."""
        hits = self.search(query, max_results)
        if not hits:
            return f'No results for "{_cut(_one_line(query), TITLE_CHARS)}".'
        return "\n".join(
            f"[{n}] {_cut(_one_line(h.document.title), TITLE_CHARS)}: {h.snippet}"
            for n, h in enumerate(hits, 1)
        )


def _file_document(path: Path, root: Path) -> Document:
    text = path.read_text(encoding="utf-8", errors="replace")
    title = path.stem.replace("_", " ").replace("-", " ")
    first, _, rest = text.lstrip().partition("\n")
    if first.startswith("#"):
        title, text = first.lstrip("#").strip() or title, rest
    return Document(path.relative_to(root).as_posix(), title, text)


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise ValueError(f"{path}:{n}: not a JSON object") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f'{path}:{n}: expected an object with a "text" string')
            rows.append(
                {"id": str(row.get("id", n)), "title": str(row.get("title") or ""), "text": row["text"]}
            )
    return rows


@lru_cache(maxsize=8)
def _load_cached(resolved: str) -> SearchIndex:
    return SearchIndex.load(resolved)


def load_index(path: str | PathLike) -> SearchIndex:
    """``SearchIndex.load``, once per process and path (rollouts share one index)."""
    if not str(path).strip():
        raise ValueError("the search index path is empty")
    return _load_cached(str(Path(path).resolve()))


@lru_cache(maxsize=1)
def builtin_index() -> SearchIndex:
    """The fictional encyclopedia the search suites draw their questions from (built once per process)."""
    from axpo_core.envs.suites import corpus_documents  # the suites own the fictional world

    return SearchIndex.from_documents(corpus_documents())
