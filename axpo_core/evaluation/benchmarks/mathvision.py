"""The MATH-Vision (reasoning) adapter and its scorer (the package doc says what all adapters share)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    Benchmark,
    _cell_image,
    _files_inside,
    _find_files,
    _get,
    _gold_letter,
    _Ids,
    _image_file,
    _jsonl_rows,
    _number,
    _parquet_rows,
    _str_list,
    _text,
)


class MathVision(Benchmark):
    """MATH-Vision testmini (304 problems).

    Format (two published layouts, parquet preferred when both exist):

    - Hugging Face ``MathLLMs/MathVision``: ``data/testmini-*.parquet`` with columns ``id``, ``question``,
      ``options`` (list), ``image`` (relative path), ``decoded_image`` (image struct), ``answer``,
      ``solution``, ``level``, ``subject``.
    - GitHub ``mathllm/MATH-V``: ``data/testmini.jsonl`` (or ``testmini.jsonl``) with the same fields and
      ``image`` = ``images/<id>.jpg`` relative to the folder.

    With options (five in the published file, often just "A".."E", "A)".."E)" or "(A)".."(E)", drawn in
    the picture) the answer is a letter (``choice``) and ``choices`` are the published options as they
    are; without options it is free-form (``numeric``).

    Scoring: :func:`score_mathvision`, after ``evaluate`` in ``evaluation/evaluate.py`` and ``is_equal`` in
    ``evaluation/utils.py`` of mathllm/MATH-V: correct when the answer equals the gold letter or the gold
    option's text (case-insensitive), or, free-form, the same text or the same number to 2 decimals
    (tuples element by element). Differences: the answer is the ``\boxed{}`` of the ``<answer>`` block
    (the official script scrapes free text with "the answer is" patterns), options are matched letter
    first (see :func:`axpo_core.rewards.choice_indices`), and LaTeX expressions are compared as text or
    numbers, not through ``latex2sympy``.
    """

    name, group, tool_hint = "mathvision", "reasoning", "python"
    source = "MathLLMs/MathVision (data/testmini-*.parquet) or mathllm/MATH-V (data/testmini.jsonl + images/)"

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        ids = _Ids(self.name)
        parquet = sorted(folder.glob("data/testmini-*.parquet")) or sorted(folder.glob("testmini*.parquet"))
        parquet = _files_inside(folder, parquet)
        if parquet:
            for file, where, row in _parquet_rows(parquet, ("id", "question", "options", "answer")):
                key = "decoded_image" if row.get("decoded_image") is not None else "image"
                image = _cell_image(_get(row, key, file, where), key, folder, file, where, max_image_pixels)
                yield self._make(row, image, file, where, ids)
            return
        jsonl = _find_files(folder, ("data/testmini.jsonl", "testmini.jsonl"), "MathVision testmini file")[0]
        for where, row in _jsonl_rows(jsonl):
            rel = _text(_get(row, "image", jsonl, where), "image", jsonl, where)
            image = _image_file(rel, folder, [folder, jsonl.parent], jsonl, where, max_image_pixels)
            yield self._make(row, image, jsonl, where, ids)

    def _make(
        self, row: Mapping[str, Any], image: Image.Image, path: Path, where: str, ids: _Ids
    ) -> Question:
        native = _text(_get(row, "id", path, where), "id", path, where)
        question = _text(_get(row, "question", path, where), "question", path, where)
        answer = _text(_get(row, "answer", path, where), "answer", path, where)
        options = _str_list(_get(row, "options", path, where), "options", path, where)
        meta = {"level": row.get("level"), "subject": row.get("subject")}
        qid = ids(native, path, where)
        if options:
            # Options that are only their labels ("A)".."E)", "(A)".."(E)": the picture shows them) stay as
            # published, as in the official scorer: MATH-V evaluation/evaluate.py `evaluate` takes
            # `gt_answer_value = options[ord(gt_answer) - ord('A')]` and counts `is_equal(gt_answer, answer)
            # or is_equal(gt_answer_value, answer)`, so the letter and the published text ("D)") both
            # score. `choice_indices` reads "D", "(D)" and "D)" as the letter D whatever the option texts.
            letter = _gold_letter(answer, options, path, where)
            return self._choice_question(qid, question, options, image, letter, meta)
        return self._question(qid, question, [image], answer, answer_type="numeric", meta=meta)

    def score(self, question: Question, response_text: str) -> float:
        return score_mathvision(question, response_text)


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def _mathvision_equal(pred: str, gold: str) -> bool:
    """``is_equal`` of MATH-V's ``evaluation/utils.py``: the same text (case-insensitive), the same tuple,
    or the same value rounded to 2 decimals."""
    if rewards.match_exact(pred, gold):
        return True
    p, g = rewards.normalize(pred).replace(" ", ""), rewards.normalize(gold).replace(" ", "")
    if len(p) > 2 and len(g) > 2 and p[0] + p[-1] == g[0] + g[-1] and p[0] + p[-1] in ("()", "[]"):
        ps, gs = p[1:-1].split(","), g[1:-1].split(",")
        return len(ps) == len(gs) > 1 and all(_mathvision_equal(a, b) for a, b in zip(ps, gs))
    pv, gv = _number(pred), _number(gold)
    return pv is not None and gv is not None and round(pv, 2) == round(gv, 2)


def score_mathvision(question: Question, response_text: str) -> float:
    """MATH-V ``evaluation/evaluate.py`` ``evaluate``: the gold letter or the gold option's text, or,
    free-form, ``is_equal`` (text, tuple, or value to 2 decimals)."""
    pred = rewards.extract_answer(response_text)
    if pred is None:
        return 0.0
    if question.choices:
        return float(rewards.match_choice(pred, question.answer, question.choices))
    return float(_mathvision_equal(pred, question.answer))
