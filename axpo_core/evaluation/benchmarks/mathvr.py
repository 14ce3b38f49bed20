"""The Math-VR (reasoning) adapter and its scorer (the package doc says what all adapters share)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    _cell_image,
    _find_files,
    _get,
    _Ids,
    _parquet_rows,
    _str_list,
    _text,
)


class MathVR(Benchmark):
    """Math-VR benchmark (English, 2,500 questions: text-only and multimodal).

    Format (Hugging Face ``gogoduan/Math-VR-bench``, read by ``Math-VR-Infer.py`` of
    ``HKU-MMLab/Math-VR-CodePlot-CoT``): ``data/test-*.parquet`` (or ``*.parquet``) with ``id``,
    ``question`` (with ``<image1>``..``<image8>`` placeholders), ``image1``..``image8`` (image structs),
    ``category`` ("text" / "multimodal"), ``answers``, ``number_of_answers``, ``total_score``,
    ``scoring_points``, ``scores``. Placeholders are removed and their images attached in order, as the
    official inference script does.

    The Hugging Face parquet could not be read while this adapter was written (the official scripts
    load it with ``datasets``). The dataset card does not pin the type of ``answers``: a list of
    strings, a JSON-encoded list, or a plain string or number (``"68"``, ``"x=1, y=2"``) are accepted.

    Scoring: :func:`score_mathvr`. The official ``Math-VR-Eval.py`` asks GPT-4.1 whether the solution is
    fully correct (Answer Correctness) and for rubric points (Process Score); there is no rule-based
    official scorer. Here a single gold is compared ``numeric`` (numbers by value, else exact text), a
    lower bound of the judge's Answer Correctness; multi-part golds are joined with "; " and flagged
    ``meta["needs_judge"]``: use ``evaluation.judge: llm`` for those. The Process Score is not computed.
    """

    name, group, tool_hint = "mathvr", "reasoning", "python"
    source = "gogoduan/Math-VR-bench (data/test-*.parquet)"
    _PLACEHOLDER = re.compile(r"<image(\d+)>")

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        files = _find_files(folder, ("data/test-*.parquet", "*.parquet"), "Math-VR parquet file")
        ids = _Ids(self.name)
        for file, where, row in _parquet_rows(files, ("id", "question", "answers")):
            native = _text(_get(row, "id", file, where), "id", file, where)
            question = _text(_get(row, "question", file, where), "question", file, where)
            golds = _str_list(_get(row, "answers", file, where), "answers", file, where, scalar=True)
            if not golds:
                raise BenchmarkFormatError(file, "field 'answers' is empty", where)
            qid = ids(native, file, where)
            images = []
            for number in self._PLACEHOLDER.findall(question):
                key = f"image{number}"
                if row.get(key) is None:
                    raise BenchmarkFormatError(
                        file, f"field {key!r}: the question refers to <{key}> but {key!r} is empty", where
                    )
                images.append(_cell_image(row[key], key, folder, file, where, max_image_pixels))
            text = re.sub(r"[ \t]{2,}", " ", self._PLACEHOLDER.sub(" ", question)).strip()
            meta = {
                "category": row.get("category"),
                "needs_judge": len(golds) > 1,
                "total_score": row.get("total_score"),
                "scoring_points": row.get("scoring_points"),
                "scores": row.get("scores"),
            }
            yield self._question(qid, text, images, "; ".join(golds), answer_type="numeric", meta=meta)

    def score(self, question: Question, response_text: str) -> float:
        return score_mathvr(question, response_text)


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def score_mathvr(question: Question, response_text: str) -> float:
    """Math-VR: no rule-based official scorer (``Math-VR-Eval.py`` asks GPT-4.1); a single gold compared
    by value, else as text: a lower bound of the judge's Answer Correctness."""
    return rewards.score_question(response_text, question)
