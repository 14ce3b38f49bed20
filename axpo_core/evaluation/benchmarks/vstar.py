"""The V* (perception) adapter and its scorer (the package doc says what all adapters share)."""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    IMAGE_SUFFIXES,
    Benchmark,
    BenchmarkFormatError,
    _decode,
    _files_inside,
    _first_file,
    _get,
    _gold_letter,
    _Ids,
    _image_file,
    _inline_options,
    _jsonl_rows,
    _read_json,
    _relative,
    _str_list,
    _strip_inline_options,
    _text,
)

_VSTAR_TRAILER = re.compile(r"\n?\s*Answer with the option's letter[^\n]*$", re.IGNORECASE)


class VStar(Benchmark):
    """V* Bench (191 questions: 115 direct attributes, 76 relative position).

    Format (Hugging Face ``craigwu/vstar_bench``), two published parts:

    - ``test_questions.jsonl`` (read when present): one row per question in the LLaVA question format,
      ``image`` ("direct_attributes/sa_4690.jpg"), ``text`` (the question, then "(A) ..." lines in the
      published option order, then "Answer with the option's letter from the given choices directly."),
      ``category``, ``question_id`` and ``label`` (the gold letter; older copies lack it, and then the
      gold is found through the annotation's first option);
    - ``direct_attributes/`` and ``relative_position/``: one image per question and a JSON annotation of
      the same stem with ``question``, ``options`` (the first one is correct), ``target_object``, ``bbox``.
      Without ``test_questions.jsonl`` the options are shown in an order shuffled with a seed derived
      from the question id (the stored order always puts the answer first), and ``meta["option_order"]``
      says so: letters are then not comparable with other harnesses.

    The fields of ``test_questions.jsonl`` are those the common harnesses read (LLaVA's question format);
    the Hugging Face file itself could not be read while this adapter was written.

    Scoring: :func:`score_vstar`, the option letter (or the option's text). The official
    ``vstar_bench_eval.py`` (penghao-wu/vstar, ``eval_model``) does not generate: it picks the option with
    the lowest loss under the model (``multiple_choices_inference``) and counts option 0 as correct.
    Generative harnesses ask for the letter of ``test_questions.jsonl``'s order, as here.
    """

    name, group, tool_hint = "vstar", "perception", "image_zoom_in"
    source = "craigwu/vstar_bench (test_questions.jsonl, direct_attributes/ and relative_position/)"
    CATEGORIES = ("direct_attributes", "relative_position")

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        if (folder / "test_questions.jsonl").is_file():
            _files_inside(folder, [folder / "test_questions.jsonl"])
            yield from self._published_order(folder, max_image_pixels)
        else:
            yield from self._annotations(folder, max_image_pixels)

    def _published_order(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        path = folder / "test_questions.jsonl"
        ids = _Ids(self.name)
        for where, row in _jsonl_rows(path):
            rel = _text(_get(row, "image", path, where), "image", path, where)
            text = _text(_get(row, "text", path, where), "text", path, where)
            body = _VSTAR_TRAILER.sub("", text).rstrip()
            choices = _inline_options(body)
            if choices is None:
                raise BenchmarkFormatError(path, "field 'text' has no options (A), (B), ...", where)
            question = _strip_inline_options(body)
            category = str(row.get("category") or Path(rel).parent.name)
            stem = Path(rel).stem
            qid = ids(f"{category}-{stem}", path, where)
            if row.get("label") is not None:
                label = _text(row["label"], "label", path, where)
                gold = _gold_letter(label, choices, path, where, field="label")
            else:  # copies published before the labels: the annotation's first option
                gold = self._annotation_gold(folder, rel, choices, path, where)
            image = _image_file(rel, folder, [folder], path, where, max_image_pixels)
            meta = {"category": category, "question_id": row.get("question_id"), "option_order": "published"}
            yield self._choice_question(qid, question, choices, image, gold, meta)

    @staticmethod
    def _annotation_gold(folder: Path, rel: str, choices: Sequence[str], path: Path, where: str) -> str:
        """The gold letter of a row without ``label``: the option its annotation (the image's ``.json``,
        inside the folder like the image) lists first."""
        what = f"field 'image': {rel!r}"
        annotation = (folder / _relative(rel, path, where, what)).with_suffix(".json")
        if _first_file([annotation], folder, path, where, f"{what}: its annotation") is None:
            raise BenchmarkFormatError(
                path, f"missing field 'label' (and no annotation {annotation.name} to take it from)", where
            )
        stored = _get(_read_json(annotation), "options", annotation, "annotation")
        first = _str_list(stored, "options", annotation, "annotation")[0]
        return _gold_letter(first, choices, path, where, field="label")

    def _annotations(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        for category in self.CATEGORIES:
            if not (folder / category).is_dir():
                raise BenchmarkFormatError(
                    folder / category, "V* category folder not found (nor test_questions.jsonl)"
                )
        ids = _Ids(self.name)
        for category in self.CATEGORIES:
            for path in _files_inside(folder, sorted((folder / category).glob("*.json"))):
                where = "annotation"
                row = _read_json(path)
                if not isinstance(row, dict):
                    raise BenchmarkFormatError(path, "expected a JSON object", where)
                question = _text(_get(row, "question", path, where), "question", path, where)
                options = _str_list(_get(row, "options", path, where), "options", path, where)
                if len(options) < 2:
                    raise BenchmarkFormatError(path, "field 'options' needs at least two options", where)
                qid = ids(f"{category}-{path.stem}", path, where)
                candidates = [path.with_suffix(s) for s in IMAGE_SUFFIXES]
                image_path = _first_file(candidates, folder, path, where, f"image {path.stem}.*")
                if image_path is None:
                    raise BenchmarkFormatError(path, f"no image {path.stem}.* next to the annotation", where)
                image = _decode(image_path, image_path.name, path, where, max_image_pixels)
                choices = list(options)
                random.Random(zlib.crc32(qid.encode())).shuffle(choices)
                gold = chr(ord("A") + choices.index(options[0]))
                meta = {
                    "category": category,
                    "target_object": row.get("target_object"),
                    "bbox": row.get("bbox"),
                    "option_order": "shuffled (no test_questions.jsonl)",
                }
                yield self._choice_question(qid, question, choices, image, gold, meta)

    def score(self, question: Question, response_text: str) -> float:
        return score_vstar(question, response_text)


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def score_vstar(question: Question, response_text: str) -> float:
    """V*: the option letter (or text) of ``test_questions.jsonl``'s order; the official
    ``vstar_bench_eval.py`` ranks options by likelihood instead (nothing to reproduce generatively)."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else float(rewards.match_choice(pred, question.answer, question.choices))
