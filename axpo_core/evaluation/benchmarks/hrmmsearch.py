"""The HR-MMSearch (search) adapter and its scorer (the package doc says what all adapters share)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    SHORT_HINT,
    Benchmark,
    _cell_image,
    _find_files,
    _Ids,
    _parquet_rows,
    _text,
)


class HRMMSearch(Benchmark):
    """HR-MMSearch (305 high-resolution, knowledge-intensive search questions; SenseNova-MARS).

    Format (Hugging Face ``sensenova/HR-MMSearch``): ``data/train-*.parquet`` (or ``*.parquet``) with
    ``sample_id``, ``query``, ``query_image`` (image struct), ``ground_truth``, ``difficulty``,
    ``category``.

    The Hugging Face parquet could not be read while this adapter was written: the fields are those of the
    dataset card. SenseNova-MARS's own evaluation reads a converted ``data.jsonl`` (``prompt``,
    ``reward_model.ground_truth``, ``image``), not this parquet.

    Scoring: :func:`score_hrmmsearch`, token F1 against the gold (the AXPO paper's protocol for search
    questions: "F1 score for search questions"). The authors of the benchmark grade differently:
    ``llm_judge_score`` in ``inference/eval.py`` of OpenSenseNova/SenseNova-MARS counts an exact match
    (SQuAD-normalised) as correct and asks GPT-4o about everything else. Their judge accepts every exact
    match, so exact match is a strict lower bound of its score, and F1 (partial credit where the judge
    gives 0 or 1) is not comparable with it: report it as this project's rule score, or set
    ``evaluation.judge: llm`` for a local judge (rule match first).
    """

    name, group, tool_hint = "hrmmsearch", "search", "search"
    source = "sensenova/HR-MMSearch (data/train-*.parquet)"

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        files = _find_files(folder, ("data/*.parquet", "*.parquet"), "HR-MMSearch parquet file")
        ids = _Ids(self.name)
        for file, where, row in _parquet_rows(files, ("sample_id", "query", "query_image", "ground_truth")):
            native = _text(row["sample_id"], "sample_id", file, where)
            query = _text(row["query"], "query", file, where)
            gold = _text(row["ground_truth"], "ground_truth", file, where)
            qid = ids(native, file, where)
            image = _cell_image(row["query_image"], "query_image", folder, file, where, max_image_pixels)
            meta = {"difficulty": row.get("difficulty"), "category": row.get("category")}
            yield self._question(qid, f"{query}\n{SHORT_HINT}", [image], gold, answer_type="f1", meta=meta)

    def score(self, question: Question, response_text: str) -> float:
        return score_hrmmsearch(question, response_text)


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def score_hrmmsearch(question: Question, response_text: str) -> float:
    """HR-MMSearch: token F1 (the AXPO paper's search protocol); the benchmark's own harness
    (SenseNova-MARS ``inference/eval.py`` ``llm_judge_score``) is exact match, then GPT-4o."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else rewards.match_f1(pred, [question.answer, *(question.choices or ())])
