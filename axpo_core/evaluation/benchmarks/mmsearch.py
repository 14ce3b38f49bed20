"""The MMSearch (search) adapter and its scorer (the package doc says what all adapters share)."""

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
    _str_list,
    _text,
)


class MMSearch(Benchmark):
    """MMSearch end-to-end task (300 questions, some without an image).

    Format (Hugging Face ``CaraJ/MMSearch``, config ``end2end``): ``end2end.parquet`` (or
    ``end2end/*.parquet``) with ``sample_id``, ``query``, ``query_image`` (image struct, null for
    text-only queries), ``gt_answer``, ``alternative_gt_answers`` (list), ``area``, ``subfield``,
    ``timestamp``, ``gt_requery`` and ``image_search_result``. Scored ``f1``: the best token F1 over
    ``gt_answer`` and the alternatives. The pre-computed ``image_search_result`` screenshot is not given
    to the model: here the policy searches with its own ``search`` tool.

    Scoring: :func:`score_mmsearch`, after ``eval_end2end.py`` (the loop that keeps the best
    ``get_f1_score`` over ``gt_answer`` and ``alternative_gt_answers``) and ``score/f1_score.py`` of
    CaraJ7/MMSearch: SQuAD normalisation (lowercase, no punctuation or articles), token-multiset F1.
    Differences: the prediction is the ``\\boxed{}`` of the ``<answer>`` block (the official end-to-end
    task reads the model's final answer text) and LaTeX wrappers are removed first. The AXPO paper adds
    an LLM judge (gpt-5-mini) for answers F1 grades badly: ``evaluation.judge: llm``.
    """

    name, group, tool_hint = "mmsearch", "search", "search"
    source = "CaraJ/MMSearch (end2end.parquet)"

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        files = _find_files(folder, ("end2end.parquet", "end2end/*.parquet"), "MMSearch end2end parquet")
        ids = _Ids(self.name)
        for file, where, row in _parquet_rows(files, ("sample_id", "query", "gt_answer")):
            native = _text(row["sample_id"], "sample_id", file, where)
            query = _text(row["query"], "query", file, where)
            gold = _text(row["gt_answer"], "gt_answer", file, where)
            alternatives = _str_list(
                row.get("alternative_gt_answers"), "alternative_gt_answers", file, where, skip_empty=True
            )
            qid = ids(native, file, where)
            cell = row.get("query_image")
            images = (
                []
                if cell is None
                else [_cell_image(cell, "query_image", folder, file, where, max_image_pixels)]
            )
            meta = {k: row.get(k) for k in ("area", "subfield", "timestamp", "gt_requery")}
            yield self._question(
                qid,
                f"{query}\n{SHORT_HINT}",
                images,
                gold,
                answer_type="f1",
                choices=tuple(alternatives) or None,
                meta=meta,
            )

    def score(self, question: Question, response_text: str) -> float:
        return score_mmsearch(question, response_text)


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def score_mmsearch(question: Question, response_text: str) -> float:
    """MMSearch ``eval_end2end.py``: the best ``get_f1_score`` over ``gt_answer`` and the alternatives."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else rewards.match_f1(pred, [question.answer, *(question.choices or ())])
