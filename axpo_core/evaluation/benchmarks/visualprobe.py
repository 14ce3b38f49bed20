"""The VisualProbe (perception) adapter and its scorer (the package doc says what all adapters share)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from PIL import Image

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    _find_files,
    _get,
    _Ids,
    _image_at,
    _inline_options,
    _read_json,
    _relative,
    _str_list,
    _text,
    _where,
)
from axpo_core.rewards import AnswerType


class VisualProbe(Benchmark):
    """VisualProbe hard (Mini-o3).

    Format (Hugging Face ``Mini-o3/VisualProbe_Hard``, the data files of the Mini-o3 training recipe):
    ``val.json``, a JSON list of rows with ``images`` (list of image paths), the question in
    ``problem`` (``question`` / ``prompt`` are accepted too, as downstream converters do), the answer in
    ``solution`` (``answer`` accepted) and an optional ``doc_id``. Image paths are relative to the folder;
    the recipe writes them relative to the directory that holds all ``VisualProbe_*`` folders
    ("VisualProbe_Hard/data/1.png"), so a first part naming this folder (or ``VisualProbe_Hard``) is also
    looked up without it. Images outside the folder are refused, like every benchmark's. The dataset
    card documents no schema, so this is the layout the Mini-o3 code reads (``data.image_key=images``,
    ``data.answer_key=solution``).

    Scoring: :func:`score_visualprobe`. Mini-o3 grades with GPT-4o: ``inner_acc_reward`` in
    ``verl/utils/reward_score/general_qa_tool.py`` (Mini-o3/Mini-o3; its README's recipe sets
    ``use_hybrid_reward_manager``, so every validation sample goes through that judge) asks for
    "Score: 0 or 1" on a meaningful match. The rule scorer here is the exact-match part of it
    (normalised text, or a letter for "(A) ..." questions, as ``general_qa_tool_mc.inner_acc_reward``):
    a lower bound of the authors' judge, which also accepts synonyms and paraphrases. Use
    ``evaluation.judge: llm`` for the judge.
    """

    name, group, tool_hint = "visualprobe", "perception", "image_zoom_in"
    source = "Mini-o3/VisualProbe_Hard (val.json + data/)"
    QUESTION_KEYS = ("problem", "question", "prompt")
    ANSWER_KEYS = ("solution", "answer")

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        path = _find_files(folder, ("val.json",), "VisualProbe val.json")[0]
        rows = _read_json(path)
        if not isinstance(rows, list):
            raise BenchmarkFormatError(path, "expected a JSON list of questions")
        ids = _Ids(self.name)
        for index, row in enumerate(rows):
            where = _where("item", index)
            if not isinstance(row, dict):
                raise BenchmarkFormatError(path, "an item should be a JSON object", where)
            question = self._first(row, self.QUESTION_KEYS, path, where)
            answer = self._first(row, self.ANSWER_KEYS, path, where)
            rels = _str_list(_get(row, "images", path, where), "images", path, where, scalar=True)
            if not rels:
                raise BenchmarkFormatError(path, "field 'images' is empty", where)
            native = (
                _text(row["doc_id"], "doc_id", path, where) if row.get("doc_id") is not None else str(index)
            )
            qid = ids(native, path, where)
            images = [self._image(rel, folder, path, where, max_image_pixels) for rel in rels]
            text = question.replace("<image>", " ").strip()
            choices = _inline_options(text) if re.fullmatch(r"\(?[A-Z]\)?", answer) else None
            kind: AnswerType = "choice" if choices else "exact"
            yield self._question(
                qid,
                text,
                images,
                answer.strip("()") if choices else answer,
                answer_type=kind,
                choices=tuple(choices) if choices else None,
                meta={"split": "hard"},
            )

    @staticmethod
    def _image(rel: str, folder: Path, path: Path, where: str, max_pixels: int) -> Image.Image:
        """The recipe writes image paths relative to the folder that holds every ``VisualProbe_*`` folder
        ("VisualProbe_Hard/data/1.png"): that first part names this folder, so the rest is looked up in it
        too. Either way the image is inside this folder; the parent is never read."""
        what = f"field 'images': image {rel!r}"
        parts = PurePath(_relative(rel, path, where, what)).parts
        candidates = [folder / rel]
        if len(parts) > 1 and parts[0] in (folder.name, "VisualProbe_Hard"):
            candidates.append(folder.joinpath(*parts[1:]))
        return _image_at(candidates, folder, what, path, where, max_pixels)

    @staticmethod
    def _first(row: Mapping[str, Any], keys: Sequence[str], path: Path, where: str) -> str:
        for key in keys:
            if key in row:
                return _text(row[key], key, path, where)
        raise BenchmarkFormatError(path, f"missing field {keys[0]!r} (or {', '.join(keys[1:])})", where)

    def score(self, question: Question, response_text: str) -> float:
        return score_visualprobe(question, response_text)


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def score_visualprobe(question: Question, response_text: str) -> float:
    """VisualProbe: the exact-match part of Mini-o3's grading (normalised text; a letter for "(A) ..."
    questions); a lower bound of its GPT-4o judge (``general_qa_tool.py`` ``inner_acc_reward``)."""
    return rewards.score_question(response_text, question)
