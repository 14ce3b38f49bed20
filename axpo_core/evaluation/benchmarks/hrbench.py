"""The HR-Bench 4K and 8K (perception) adapter and its scorer (the package doc: what all adapters share)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    _PLACEHOLDER_IMAGE,
    Benchmark,
    BenchmarkFormatError,
    _b64_image,
    _files_inside,
    _Ids,
    _text,
    _text_lines,
)


class HRBench(Benchmark):
    """HR-Bench 4K / 8K (800 rows each: 200 questions in 4 option orders, ``cycle_category``).

    Format (Hugging Face ``DreamMr/HR-Bench``, the VLMEvalKit TSV): ``hr_bench_4k.tsv`` /
    ``hr_bench_8k.tsv`` (or the only ``*.tsv`` in the folder), tab-separated with a header: ``index``,
    ``question``, ``answer`` (a letter), ``category``, the options in columns ``A``, ``B``, ``C``, ``D``
    (more letters allowed, empty cells skipped), ``image`` (base64) and ``cycle_category``. As in
    VLMEvalKit, an ``image`` cell of at most 64 characters is the ``index`` of the row whose image it
    shares; rows that share an image share one decoded copy.

    Memory: an 8K image decodes to ~100 MB, so the 200 distinct 8K images need ~20 GB; cap the load
    with ``limit`` (``evaluation.questions``) on small machines (:meth:`validate` keeps none of them).

    Scoring: :func:`score_hrbench`, the option letter or the option's exact text (see
    :func:`axpo_core.rewards.choice_indices`: options that differ only by a trailing period, as some
    published ones do, are told apart by exact text only). The official evaluation
    (``HRBenchDataset.evaluate`` in ``hrbench/vlmeval/dataset/image_mcq.py`` with ``build_prompt`` /
    ``parse_score`` in ``hrbench/vlmeval/dataset/utils/hrbench.py``, DreamMr/HR-Bench) asks an LLM whether
    the prediction answers "B. <text>" and averages accuracy per ``cycle_category`` (200 rows each, so the
    same as the overall mean). The rule score is a lower bound of that judge's; ``evaluation.judge: llm``
    plugs a local one in.
    """

    group, tool_hint = "perception", "image_zoom_in"
    source = "DreamMr/HR-Bench (hr_bench_4k.tsv / hr_bench_8k.tsv)"
    REQUIRED = ("index", "question", "answer", "A", "B", "image")

    def __init__(self, name: str, resolution: str):
        self.name, self.resolution = name, resolution
        self.filename = f"hr_bench_{resolution}.tsv"

    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        path = folder / self.filename
        if not path.is_file():  # accept a renamed file, but never the other resolution's
            tsvs = [p for p in sorted(folder.glob("*.tsv")) if self.resolution in p.name.lower()]
            if len(tsvs) != 1:
                raise BenchmarkFormatError(path, "HR-Bench TSV not found")
            path = tsvs[0]
        _files_inside(folder, [path])
        ids = _Ids(self.name)
        decoded: dict[str, Image.Image] = {}  # index -> image: rows sharing an image share one copy
        checked: set[str] = set()  # validation: indices whose image decoded (nothing kept)
        for where, row in self._rows(path):
            native = _text(row["index"], "index", path, where)
            question = _text(row["question"], "question", path, where)
            answer = _text(row["answer"], "answer", path, where)
            options = [
                (c, row[c].strip()) for c in map(chr, range(ord("A"), ord("Z") + 1)) if row.get(c, "").strip()
            ]
            letters = [c for c, _ in options]
            if letters != [chr(ord("A") + i) for i in range(len(letters))] or len(letters) < 2:
                raise BenchmarkFormatError(
                    path, f"options should fill columns A, B, ... in order (got {letters})", where
                )
            choices = [t for _, t in options]
            if answer not in letters:
                raise BenchmarkFormatError(
                    path, f"field 'answer': {answer!r} is not one of the option letters {letters}", where
                )
            qid = ids(native, path, where)
            cell = row["image"].strip()
            if len(cell) > 64:
                image = _b64_image(cell, "image", path, where, max_image_pixels)
                if keep_images:
                    decoded[native] = image
                checked.add(native)
            elif cell in decoded:
                image = decoded[cell]
            elif cell in checked:  # validation: that row's image decoded; the question needs no copy
                image = _PLACEHOLDER_IMAGE
            else:  # a reference to a row further down (or beyond the limit)
                found = self._find_image(path, cell, where)
                image = _b64_image(found, "image", path, where, max_image_pixels)
                if keep_images:
                    decoded[cell] = image
                checked.add(cell)
            meta = {"category": row.get("category"), "cycle_category": row.get("cycle_category")}
            yield self._choice_question(qid, question, choices, image, answer, meta)

    def _rows(self, path: Path) -> Iterator[tuple[str, dict[str, str]]]:
        """(where, row) per data row; ``where`` is the line the record starts on."""
        csv.field_size_limit(sys.maxsize)  # base64 images are far beyond the 128 KiB default
        reader = csv.DictReader(self._lines(path), delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in self.REQUIRED if c not in header]
        if missing:
            raise BenchmarkFormatError(path, f"missing column(s) {', '.join(map(repr, missing))}", "line 1")
        line = reader.line_num
        for row in reader:
            where, line = f"line {line + 1}", reader.line_num
            if None in row or any(v is None for v in row.values()):
                raise BenchmarkFormatError(path, f"expected {len(header)} tab-separated fields", where)
            yield where, row

    @staticmethod
    def _lines(path: Path) -> Iterator[str]:
        """The TSV's lines for ``csv`` (which joins a quoted field's lines), each decoded on its own."""
        return (text for _, text in _text_lines(path))

    def score(self, question: Question, response_text: str) -> float:
        return score_hrbench(question, response_text)

    @staticmethod
    def _find_image(path: Path, index: str, where: str) -> str:
        for row in csv.DictReader(HRBench._lines(path), delimiter="\t"):
            if (row.get("index") or "").strip() == index and len((row.get("image") or "").strip()) > 64:
                return row["image"].strip()
        raise BenchmarkFormatError(
            path, f"field 'image' refers to row index {index!r}, which has no image", where
        )


# All scorers read the answer the way the rollout format prescribes (rewards.extract_answer: the \boxed{}
# of the <answer> block); a response without one scores 0.


def score_hrbench(question: Question, response_text: str) -> float:
    """HR-Bench: the option letter or its exact text; a lower bound of the official LLM judge
    (``hrbench/vlmeval/dataset/utils/hrbench.py``)."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else float(rewards.match_choice(pred, question.answer, question.choices))
