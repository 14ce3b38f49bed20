"""The DynaMath (reasoning) adapter and its scorer (the package doc says what all adapters share)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    LETTER_HINT,
    Benchmark,
    BenchmarkFormatError,
    _find_files,
    _get,
    _gold_letter,
    _Ids,
    _image_file,
    _inline_options,
    _number,
    _read_json,
    _text,
    _where,
)
from axpo_core.rewards import AnswerType


class DynaMath(Benchmark):
    """DynaMath, the 501 seed questions.

    Format (GitHub ``DynaMath/DynaMath``): ``dataset.json`` (or ``dataset/dataset.json``), a JSON object
    mapping each seed id to ``{"question", "answer", "image", "answer_type", "subject", "level"}``; the
    image path (``image/image1.png``) is relative to the JSON file. The published ``answer_type`` values
    are ``float`` (292), ``multiple choice`` (174), ``text`` (31), ``single answer`` (2) and ``int`` (2):

    - ``float``: ``approx`` (|pred - gold| <= 0.001);
    - ``multiple choice``: the gold is a letter; the options are written in the question, as
      "Choices: (A) yes (B) no", "choice: (A) (B) (C) (D)" (drawn options), "(A) heap (B) stack" without a
      label, or one per line ("A. Group 1", "A: [2, 8]"); all are parsed so the option text counts too;
    - every other type (``text``, ``single answer``, ``int``, and any type a later release adds):
      ``contains``: the gold answer is a substring of the prediction, the official rule.

    Scoring: :func:`score_dynamath`, after the per-question scoring loop of
    ``evaluation/opensource_json_eval.py`` in DynaMath/DynaMath (the same rules as the GPT-4o / Claude /
    Gemini scripts next to it): float answers are read from their first token ("2.094 radians"; "π"
    multiplies), multiple choice compares letters, everything else is ``gold in answer``. Differences:
    the answer is the ``\boxed{}`` of the ``<answer>`` block (the official script reads the "short
    answer" field of a JSON reply); a multiple-choice answer may also be the option's text (the official
    script checks the letter only, in the first three characters); the two ``int`` golds keep the
    published float artefacts ("5.000000000000001"), which the substring rule, as the official one,
    rarely matches.
    """

    name, group, tool_hint = "dynamath", "reasoning", "python"
    source = "DynaMath/DynaMath (dataset.json + image/)"
    HINTS: ClassVar[dict[str, str]] = {
        "float": "Give the answer as a floating-point number with three decimal places.",
        "multiple choice": LETTER_HINT,
    }

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        path = _find_files(folder, ("dataset.json", "dataset/dataset.json"), "DynaMath dataset.json")[0]
        data = _read_json(path)
        if not isinstance(data, dict):
            raise BenchmarkFormatError(path, "expected a JSON object mapping question ids to questions")
        ids = _Ids(self.name)
        for key, row in data.items():
            where = _where("entry", key)
            if not isinstance(row, dict):
                raise BenchmarkFormatError(path, "an entry should be a JSON object", where)
            question = _text(_get(row, "question", path, where), "question", path, where)
            answer = _text(_get(row, "answer", path, where), "answer", path, where)
            kind = _text(_get(row, "answer_type", path, where), "answer_type", path, where)
            rel = _text(_get(row, "image", path, where), "image", path, where)
            qid = ids(str(key), path, where)
            image = _image_file(rel, folder, [path.parent, folder], path, where, max_image_pixels)
            choices = None
            if kind == "multiple choice":
                choices = _inline_options(question)
                if choices is None:
                    raise BenchmarkFormatError(
                        path, "field 'question': multiple choice, but no options (A), (B), ... in it", where
                    )
                answer = _gold_letter(answer, choices, path, where)
            answer_type: AnswerType = {"float": "approx", "multiple choice": "choice"}.get(kind, "contains")
            text = f"{question}\n{self.HINTS.get(kind, '')}".strip()
            meta = {"subject": row.get("subject"), "level": row.get("level"), "dynamath_type": kind}
            yield self._question(
                qid,
                text,
                [image],
                answer,
                answer_type=answer_type,
                choices=tuple(choices) if choices else None,
                meta=meta,
            )

    def score(self, question: Question, response_text: str) -> float:
        return score_dynamath(question, response_text)


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def _dynamath_float(pred: str) -> float | None:
    """The float of DynaMath's script: the first whitespace-separated token, "π" multiplying the number
    before it ("2π" -> 6.283...); the project's number forms (fractions, 1,200) on top."""
    token = pred.strip().split(" ")[0] if pred.strip() else ""
    if "\u03c0" in token or "\\pi" in token:
        head = token.replace("\\pi", "\u03c0").split("\u03c0")[0]
        value = _number(head) if head not in ("", "+", "-") else (-1.0 if head == "-" else 1.0)
        return None if value is None else value * math.pi
    return _number(token) if _number(token) is not None else _number(pred)


def score_dynamath(question: Question, response_text: str) -> float:
    """DynaMath ``evaluation/opensource_json_eval.py``, per ``answer_type``: float within 0.001,
    multiple choice by letter (or option text), anything else ``gold in answer``."""
    pred = rewards.extract_answer(response_text)
    if pred is None:
        return 0.0
    kind = question.meta.get("dynamath_type")
    if kind == "float":
        gold, value = _number(question.answer), _dynamath_float(pred)
        if gold is None:
            return float(rewards.match_exact(pred, question.answer))
        return float(value is not None and abs(value - gold) <= rewards.APPROX_ABS_TOL + 1e-12)
    if kind == "multiple choice":
        return float(rewards.match_choice(pred, question.answer, question.choices))
    return float(rewards.match_contains(pred, question.answer))
