"""The offline search index: loading, BM25 ranking, snippets, and the built-in fictional encyclopedia."""

from __future__ import annotations

import json
import random

import pytest

from axpo_core.envs.search import (
    SNIPPET_CHARS,
    TITLE_CHARS,
    Document,
    SearchIndex,
    builtin_index,
    load_index,
    snippet,
    tokenize,
)
from axpo_core.envs.suites import N_ENTITIES, SUITES, SearchEntity, SearchFact, corpus_documents, world
from axpo_core.envs.tools import DEFAULT_MAX_RESULTS

DOCS = [
    {"id": "a", "title": "Harbour", "text": "The harbour is busy. Ships arrive every day."},
    {"id": "b", "title": "Mill", "text": "The old mill grinds wheat. It was built in 1847."},
    {"id": "c", "title": "Bridge", "text": "A stone bridge crosses the river. The river floods in spring."},
]


def ids(hits) -> list[str]:
    return [h.document.id for h in hits]


# ------------------------------------------------------------------------------------------- building


def test_tokenize_keeps_numbers_and_single_characters():
    assert tokenize("The Mill was built in 1847, by A. Smith!") == ["mill", "built", "1847", "smith"]
    assert tokenize("Bar C is 7 units") == ["bar", "c", "7", "units"]
    assert tokenize("the of and") == [] and tokenize("") == []


def test_from_documents_accepts_mappings_and_documents():
    index = SearchIndex.from_documents([*DOCS, Document("d", "Tower", "A clock tower.")])
    assert len(index) == 4 and index.documents[3] == Document("d", "Tower", "A clock tower.")
    untitled = SearchIndex.from_documents([{"text": "first"}, {"text": "second"}])
    assert [(d.id, d.title) for d in untitled.documents] == [("0", "0"), ("1", "1")]
    with pytest.raises(ValueError, match="no text"):
        SearchIndex.from_documents([{"id": "x", "title": "t"}])
    with pytest.raises(ValueError, match="unique"):
        SearchIndex.from_documents([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    assert SearchIndex([]).search("anything") == []


def test_load_folder_of_text_and_markdown(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "mill_history.txt").write_text("The old mill grinds wheat.")
    (tmp_path / "sub" / "bridge.md").write_text("# The Stone Bridge\n\nA bridge crosses the river.")
    (tmp_path / "notes.csv").write_text("mill,bridge")  # not a document
    index = SearchIndex.load(tmp_path)
    docs = {d.id: d for d in index.documents}
    assert set(docs) == {"mill_history.txt", "sub/bridge.md"}
    assert docs["mill_history.txt"].title == "mill history"
    assert docs["sub/bridge.md"].title == "The Stone Bridge"
    assert "#" not in docs["sub/bridge.md"].text
    assert ids(index.search("bridge river")) == ["sub/bridge.md"]


def test_load_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + '\n\n{"text": "no id here"}\n')
    index = SearchIndex.load(path)
    assert [d.id for d in index.documents] == ["a", "b", "c", "5"]  # a missing id is the line number
    assert index.documents[0].title == "Harbour" and index.documents[3].title == "5"
    path.write_text('{"id": "a", "text": "fine"}\nnot json\n')
    with pytest.raises(ValueError, match="docs.jsonl:2"):
        SearchIndex.load(path)
    path.write_text('{"id": "a", "title": "no text"}\n')
    with pytest.raises(ValueError, match="docs.jsonl:1"):
        SearchIndex.load(path)


def test_load_errors_and_cache(tmp_path):
    with pytest.raises(FileNotFoundError):
        SearchIndex.load(tmp_path / "missing")
    (tmp_path / "docs.txt").write_text("a single text file is not an index")
    with pytest.raises(ValueError, match="folder"):
        SearchIndex.load(tmp_path / "docs.txt")
    with pytest.raises(ValueError, match="empty"):
        load_index("  ")
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "x.txt").write_text("x marks the spot")
    assert load_index(folder) is load_index(str(folder) + "/")  # once per process and path
    assert builtin_index() is builtin_index()


# ------------------------------------------------------------------------------------------- ranking


def test_bm25_ranking_is_deterministic():
    index = SearchIndex.from_documents(DOCS)
    assert ids(index.search("river bridge")) == ["c"]  # only matching documents are returned
    assert ids(index.search("mill 1847")) == ["b"]
    assert index.search("nothing matches zzz") == [] and index.search("the of") == []
    assert index.search("river", max_results=0) == []
    # the rarer term weighs more: "wheat" (1 document) beats "the" (a stop word) and "old"/"river"
    hits = index.search("old river wheat", 3)
    assert ids(hits)[0] == "b" and all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    # equal scores: document order decides, every time and in every fresh index
    twins = [{"id": str(i), "title": "same", "text": "identical text"} for i in range(6)]
    for _ in range(3):
        assert ids(SearchIndex.from_documents(twins).search("identical", 4)) == ["0", "1", "2", "3"]
    assert [(h.document.id, h.score) for h in index.search("river old", 3)] == [
        (h.document.id, h.score) for h in SearchIndex.from_documents(DOCS).search("river old", 3)
    ]


def test_snippet_is_the_matching_sentences_and_is_capped():
    text = " ".join(f"Sentence number {i} is about filler." for i in range(30)) + " The answer is 42 here."
    assert snippet(text, tokenize("answer 42")) == "The answer is 42 here."  # no filler
    s = snippet(text, tokenize("answer 7 29"))  # shown in document order
    assert s == (
        "Sentence number 7 is about filler. Sentence number 29 is about filler. The answer is 42 here."
    )
    best = snippet(text, tokenize("number 7 answer"))  # the best matches first, as many as fit
    assert len(best) <= SNIPPET_CHARS and "number 7 " in best and "The answer" not in best
    assert snippet(text, tokenize("nothing matches")) == "Sentence number 0 is about filler."
    long = "word " * 200
    cut = snippet(long, ["word"])
    assert len(cut) == SNIPPET_CHARS and cut.endswith("…")
    assert snippet("", ["x"]) == ""


def test_render_format_and_bounds():
    index = SearchIndex.from_documents(DOCS)
    assert index.render("stone bridge", 3).splitlines() == ["[1] Bridge: A stone bridge crosses the river."]
    assert index.render("river floods", 3).splitlines() == [
        "[1] Bridge: A stone bridge crosses the river. The river floods in spring."
    ]
    assert index.render("zzz  \n qqq") == 'No results for "zzz qqq".'
    many = SearchIndex.from_documents(
        [{"id": str(i), "title": "T" * 500, "text": "common word. " * 100} for i in range(20)]
    )
    page = many.render("common", 10)
    lines = page.splitlines()
    assert [line.split("]")[0] for line in lines] == [f"[{n}" for n in range(1, 11)]
    assert all(len(line) <= 5 + TITLE_CHARS + 2 + SNIPPET_CHARS for line in lines)


# ------------------------------------------------------------------------------------------- built-in corpus


def test_world_is_fixed_and_consistent():
    entities, towns = world()
    assert len(entities) == N_ENTITIES and len({e.name for e in entities}) == N_ENTITIES
    assert len({e.name.split()[0] for e in entities}) == N_ENTITIES  # every name has its own first word
    emblem_bags = {frozenset(tokenize(e.emblem)) for e in entities}
    assert len(emblem_bags) == N_ENTITIES  # no two emblems are described by the same words
    docs = corpus_documents()
    assert docs == corpus_documents() and len(docs) == N_ENTITIES + len(towns)
    assert all(e.town in towns and str(e.year) in d["text"] for e, d in zip(entities, docs))


def test_every_entity_is_found_first_by_its_emblem_and_its_name():
    """Every query form the oracles use, for every entity of the world (not only those questions drew)."""
    index = builtin_index()
    for e in world()[0]:
        emblem_queries = [f"emblem {e.emblem}", f"{e.emblem} emblem", f"organisation with emblem {e.emblem}"]
        name_queries = [e.name, *(f"{e.name} {w}" for w in ("founded", "town", "founded by", "mascot"))]
        for query in [*emblem_queries, *name_queries, e.name.split()[0]]:
            assert ids(index.search(query, 1)) == [e.id], query


@pytest.mark.parametrize("suite", [SearchEntity(), SearchFact()], ids=lambda s: s.name)
def test_search_suite_oracle_queries_find_the_answer(suite):
    """Each question's oracle query puts the right document in the top 3 (in fact first), and the result
    page the model reads contains the answer."""
    index = builtin_index()
    for i, q in enumerate(suite.generate(100, 61)):
        query = json.loads(
            suite.oracle(q, random.Random(i))[0].split("<tool_call>\n")[1].split("\n</tool")[0]
        )
        args = query["arguments"]
        hits = index.search(args["query"], args.get("max_results", DEFAULT_MAX_RESULTS))
        assert suite.entity(q).id in ids(hits)[:3], (q.question_id, args)
        assert ids(hits)[0] == suite.entity(q).id
        assert q.answer in index.render(args["query"], args.get("max_results", DEFAULT_MAX_RESULTS))
    assert {q.meta["fact"] for q in suite.generate(100, 61)} == set(suite.FACTS)
    assert SUITES[suite.name].tool == "search"
