"""Adapters for the paper's nine benchmarks (DESIGN §6): each reads its published format from a local folder.

Every adapter turns benchmark items into :class:`~axpo_core.envs.suites.Question` objects, so the rollout
engine and :func:`axpo_core.evaluation.runner.evaluate` run them unchanged. Question ids are stable:
``<benchmark>-<native id>``. Answer types (see :mod:`axpo_core.rewards`): ``choice`` for multiple choice
(the gold is the option letter or the option text, as the benchmark stores it), ``numeric`` / ``approx`` /
``exact`` for free-form math and short answers, ``f1`` for the search benchmarks (the reward is the
token F1; alternative gold answers ride in ``Question.choices``, which the model never sees).

Nothing is downloaded: ``load(folder)`` reads the files as the publishers ship them, and every problem
with them (a missing folder or file, a missing column or field, bad JSON, bad base64, an unreadable or
missing image) raises one :class:`BenchmarkFormatError` that names the file and the row. Rows are read
in file order and ``limit`` keeps the first ones, so a capped run is a stable prefix. Images go through
:func:`axpo_core.envs.tools.load_image` (decompression-bomb guard) and are decoded only for kept rows.

Row numbering in errors: ``line N`` is 1-based (JSONL, TSV), ``row N`` / ``item N`` are 0-based
(parquet, JSON lists: the index pandas and ``datasets`` show), ``entry 'key'`` names a JSON object key.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import random
import re
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from axpo_core.envs.suites import Question, format_options
from axpo_core.envs.tools import load_image
from axpo_core.rewards import AnswerType

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkFormatError",
    "DynaMath",
    "HRBench",
    "HRMMSearch",
    "MMSearch",
    "MathVR",
    "MathVision",
    "UnknownBenchmarkError",
    "VStar",
    "VisualProbe",
    "get_benchmark",
]

Group = Literal["reasoning", "perception", "search"]
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # = ToolsConfig.max_image_pixels' default
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
LETTER_HINT = "Answer with the option's letter."
SHORT_HINT = "Answer with a short phrase."  # search answers are scored by token F1: verbosity costs precision


class BenchmarkFormatError(ValueError):
    """A benchmark folder, file or row that does not follow the published format.

    ``path`` is the file (or folder), ``row`` says where in it ("line 3", "row 0", "entry '12'", "header"),
    ``problem`` what is wrong; ``str()`` joins them as ``path: row: problem``.
    """

    def __init__(self, path: Path | str, problem: str, row: str | None = None):
        self.path, self.row, self.problem = Path(path), row, problem
        where = f"{path}: {row}" if row else f"{path}"
        super().__init__(f"{where}: {problem}")


class UnknownBenchmarkError(ValueError, KeyError):
    """Raised by :func:`get_benchmark`; a ValueError that ``except KeyError`` also catches."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------------- helpers


def _where(kind: str, index: int | str) -> str:
    return f"{kind} {index!r}" if kind == "entry" else f"{kind} {index}"


def _get(row: Mapping[str, Any], key: str, path: Path, where: str) -> Any:
    if key not in row:
        raise BenchmarkFormatError(path, f"missing field {key!r}", where)
    return row[key]


def _text(value: Any, key: str, path: Path, where: str, *, allow_empty: bool = False) -> str:
    """A string field (numbers are accepted and converted: ids and answers are often stored as ints)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "empty" if value is None else type(value).__name__
        raise BenchmarkFormatError(path, f"field {key!r} should be a string, got {kind}", where)
    text = value if isinstance(value, str) else (str(int(value)) if float(value).is_integer() else str(value))
    if not allow_empty and not text.strip():
        raise BenchmarkFormatError(path, f"field {key!r} is empty", where)
    return text.strip()


def _str_list(value: Any, key: str, path: Path, where: str, *, skip_empty: bool = False) -> list[str]:
    """A list of strings; parquet gives lists (or numpy arrays), some dumps store them JSON-encoded.
    ``skip_empty`` drops blank entries instead of rejecting them."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BenchmarkFormatError(path, f"field {key!r} should be a list of strings", where) from None
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise BenchmarkFormatError(path, f"field {key!r} should be a list, got {type(value).__name__}", where)
    if skip_empty:
        value = [v for v in value if not (v is None or (isinstance(v, str) and not v.strip()))]
    return [_text(v, f"{key}[{i}]", path, where) for i, v in enumerate(value)]


def _decode(data: bytes, source: str, path: Path, where: str, max_pixels: int) -> Image.Image:
    try:
        return load_image(data, max_pixels)
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError; bombs are ValueErrors
        raise BenchmarkFormatError(path, f"{source}: cannot decode image ({exc})", where) from None


def _image_file(rel: str, bases: Sequence[Path], path: Path, where: str, max_pixels: int) -> Image.Image:
    """An image stored next to the annotations: ``rel`` is tried against each base folder in turn."""
    for base in bases:
        candidate = base / rel
        if candidate.is_file():
            return _decode(candidate.read_bytes(), f"image {rel!r}", path, where, max_pixels)
    looked = ", ".join(str(b) for b in bases)
    raise BenchmarkFormatError(path, f"image file {rel!r} not found (looked in {looked})", where)


def _b64_image(value: Any, key: str, path: Path, where: str, max_pixels: int) -> Image.Image:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkFormatError(path, f"field {key!r} should hold a base64-encoded image", where)
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BenchmarkFormatError(path, f"field {key!r} is not valid base64", where) from None
    return _decode(data, f"field {key!r}", path, where, max_pixels)


def _cell_image(
    value: Any, key: str, bases: Sequence[Path], path: Path, where: str, max_pixels: int
) -> Image.Image:
    """An image cell as ``datasets`` writes it to parquet: ``{"bytes": ..., "path": ...}`` (bytes may be
    absent when the file sits beside the parquet), raw bytes, or a relative path string."""
    if isinstance(value, Mapping):
        data, rel = value.get("bytes"), value.get("path")
        if data:
            return _decode(bytes(data), f"field {key!r}", path, where, max_pixels)
        if isinstance(rel, str) and rel:
            return _image_file(rel, bases, path, where, max_pixels)
    elif isinstance(value, (bytes, bytearray)) and value:
        return _decode(bytes(value), f"field {key!r}", path, where, max_pixels)
    elif isinstance(value, str) and value.strip():
        return _image_file(value.strip(), bases, path, where, max_pixels)
    raise BenchmarkFormatError(path, f"field {key!r} holds no image", where)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchmarkFormatError(path, f"invalid JSON: {exc.msg}", f"line {exc.lineno}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchmarkFormatError(path, f"cannot read file ({exc})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkFormatError(path, f"invalid JSON: {exc.msg}", where) from None
            if not isinstance(row, dict):
                raise BenchmarkFormatError(path, "a line should hold a JSON object", where)
            yield where, row


def _parquet_rows(
    files: Sequence[Path], required: Sequence[str]
) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """Rows of one or more parquet files, in order, read in small batches (images stay compressed)."""
    import pyarrow.parquet as pq

    for file in files:
        try:
            parquet = pq.ParquetFile(file)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
            raise BenchmarkFormatError(file, f"not a readable parquet file ({exc})") from None
        columns = parquet.schema_arrow.names
        missing = [c for c in required if c not in columns]
        if missing:
            raise BenchmarkFormatError(
                file,
                f"missing column(s) {', '.join(map(repr, missing))} (has: {', '.join(columns)})",
                "header",
            )
        index = 0
        for batch in parquet.iter_batches(batch_size=16):
            for row in batch.to_pylist():
                yield file, f"row {index}", row
                index += 1


def _find_files(folder: Path, patterns: Sequence[str], what: str) -> list[Path]:
    """Files of the first glob pattern that matches anything; one clear error when none does."""
    for pattern in patterns:
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found
    raise BenchmarkFormatError(folder, f"no {what} found (expected {' or '.join(patterns)})")


_OPTIONS_TAIL = re.compile(r"(?:choices?|options?)\s*:\s*(\(A\).*)$", re.IGNORECASE | re.DOTALL)
_OPTION = re.compile(r"\(([A-Z])\)\s*")


def _inline_options(question: str, labelled: bool = True) -> list[str] | None:
    """Options written into the question text, "... Choices: (A) yes (B) no" -> ["yes", "no"]; with
    ``labelled=False`` the "Choices:" label is optional (the options run from the first "(A)")."""
    match = _OPTIONS_TAIL.search(question) if labelled else re.search(r"\(A\).*$", question, re.DOTALL)
    if match is None:
        return None
    parts = _OPTION.split(match.group(1) if labelled else match.group(0))  # ["", "A", "yes ", "B", "no"]
    letters, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    if letters != [chr(ord("A") + i) for i in range(len(letters))] or not all(texts) or len(texts) < 2:
        return None
    return texts


def _check_gold_choice(gold: str, choices: Sequence[str], path: Path, where: str) -> None:
    """The gold must name an option: a letter within range or one option's exact text."""
    letter = gold.strip().strip("()").upper()
    if len(letter) == 1 and "A" <= letter < chr(ord("A") + len(choices)):
        return
    if gold in choices:
        return
    raise BenchmarkFormatError(path, f"answer {gold!r} is not one of the {len(choices)} options", where)


def _choice_text(question: str, choices: Sequence[str]) -> str:
    """The question with its options spelled out; options that are just the letters (the picture shows
    them, as in MathVision) are not repeated."""
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    if [c.strip() for c in choices] == letters:
        return f"{question}\nOptions: {', '.join(letters)}.\n{LETTER_HINT}"
    return f"{question}\nOptions: {format_options(choices)}\n{LETTER_HINT}"


class _Ids:
    """Guards id uniqueness within one load; a duplicate names the row that repeats it."""

    def __init__(self, prefix: str):
        self.prefix, self.seen = prefix, set()

    def __call__(self, native: str, path: Path, where: str) -> str:
        qid = f"{self.prefix}-{native}"
        if qid in self.seen:
            raise BenchmarkFormatError(path, f"duplicate id {native!r}", where)
        self.seen.add(qid)
        return qid


# --------------------------------------------------------------------------------------------- the base


class Benchmark(ABC):
    """One published benchmark: where its files are in a folder, and how a row becomes a Question."""

    name: str
    group: Group
    tool_hint: str | None  # the tool the benchmark exercises most; copied to Question.tool
    source: ClassVar[str]  # where the format comes from (for the docs and error messages)

    def load(
        self, folder: Path | str, limit: int | None = None, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    ) -> list[Question]:
        """The first ``limit`` questions (all when None) of the benchmark stored in ``folder``."""
        folder = Path(folder)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        if not folder.is_dir():
            raise BenchmarkFormatError(
                folder, f"{self.name} folder not found (expected the files of {self.source})"
            )
        questions: list[Question] = []
        for question in self._questions(folder, max_image_pixels):
            questions.append(question)
            if limit is not None and len(questions) >= limit:
                break
        if not questions:
            raise BenchmarkFormatError(folder, f"{self.name}: no questions found")
        return questions

    @abstractmethod
    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        """Questions in file order; a generator, so a limited load decodes only the images it keeps."""

    def _question(
        self, qid: str, text: str, images: Sequence[Image.Image], answer: str, **kw: Any
    ) -> Question:
        meta = {"benchmark": self.name, "group": self.group, **kw.pop("meta", {})}
        return Question(
            question_id=qid,
            suite=self.name,
            text=text,
            images=tuple(images),
            answer=answer,
            tool=self.tool_hint,
            meta=meta,
            **kw,
        )

    def _choice_question(
        self, qid: str, question: str, choices: Sequence[str], image: Image.Image, answer: str, meta: dict
    ) -> Question:
        """A multiple-choice question: the options listed in its text, the same options as `choices`."""
        return self._question(
            qid,
            _choice_text(question, choices),
            [image],
            answer,
            answer_type="choice",
            choices=tuple(choices),
            meta=meta,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# --------------------------------------------------------------------------------------------- reasoning


class MathVision(Benchmark):
    """MATH-Vision testmini (304 problems).

    Format (two published layouts, parquet preferred when both exist):

    - Hugging Face ``MathLLMs/MathVision``: ``data/testmini-*.parquet`` with columns ``id``, ``question``,
      ``options`` (list), ``image`` (relative path), ``decoded_image`` (image struct), ``answer``,
      ``solution``, ``level``, ``subject``.
    - GitHub ``mathllm/MATH-V``: ``data/testmini.jsonl`` (or ``testmini.jsonl``) with the same fields and
      ``image`` = ``images/<id>.jpg`` relative to the folder.

    With options the answer is a letter (``choice``; the options are often just "A".."E", drawn in the
    picture); without options it is free-form (``numeric``: numbers and fractions compare by value,
    anything else, such as an expression or a letter named in the picture, by exact match).
    """

    name, group, tool_hint = "mathvision", "reasoning", "python"
    source = "MathLLMs/MathVision (data/testmini-*.parquet) or mathllm/MATH-V (data/testmini.jsonl + images/)"

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        ids = _Ids(self.name)
        parquet = sorted(folder.glob("data/testmini-*.parquet")) or sorted(folder.glob("testmini*.parquet"))
        if parquet:
            for file, where, row in _parquet_rows(parquet, ("id", "question", "options", "answer")):
                key = "decoded_image" if row.get("decoded_image") is not None else "image"
                image = _cell_image(
                    _get(row, key, file, where), key, [file.parent, folder], file, where, max_image_pixels
                )
                yield self._make(row, image, file, where, ids)
            return
        jsonl = _find_files(folder, ("data/testmini.jsonl", "testmini.jsonl"), "MathVision testmini file")[0]
        for where, row in _jsonl_rows(jsonl):
            rel = _text(_get(row, "image", jsonl, where), "image", jsonl, where)
            image = _image_file(rel, [folder, jsonl.parent], jsonl, where, max_image_pixels)
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
            _check_gold_choice(answer, options, path, where)
            return self._choice_question(qid, question, options, image, answer, meta)
        return self._question(qid, question, [image], answer, answer_type="numeric", meta=meta)


class DynaMath(Benchmark):
    """DynaMath, the 501 seed questions.

    Format (GitHub ``DynaMath/DynaMath``): ``dataset.json`` (or ``dataset/dataset.json``), a JSON object
    mapping each seed id to ``{"question", "answer", "image", "answer_type", "subject", "level"}``; the
    image path (``image/image1.png``) is relative to the JSON file. ``answer_type`` is one of

    - ``"float"``: scored ``approx`` (|pred - gold| <= 0.001, the rule of DynaMath's evaluation);
    - ``"multiple choice"``: gold is a letter; the options are written in the question
      ("Choices: (A) yes (B) no") and parsed out so the option text is accepted too;
    - ``"text"``: scored ``exact`` (DynaMath's own script accepts any substring of the gold; exact
      matching is stricter and does not reward a bare fragment).
    """

    name, group, tool_hint = "dynamath", "reasoning", "python"
    source = "DynaMath/DynaMath (dataset.json + image/)"
    TYPES: ClassVar[dict[str, AnswerType]] = {"float": "approx", "multiple choice": "choice", "text": "exact"}
    HINTS: ClassVar[dict[str, str]] = {
        "float": "Give the answer as a floating-point number with three decimal places.",
        "multiple choice": LETTER_HINT,
        "text": "",
    }

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
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
            if kind not in self.TYPES:
                raise BenchmarkFormatError(
                    path, f"unknown answer_type {kind!r} (expected one of {', '.join(self.TYPES)})", where
                )
            rel = _text(_get(row, "image", path, where), "image", path, where)
            qid = ids(str(key), path, where)
            image = _image_file(rel, [path.parent, folder], path, where, max_image_pixels)
            choices = _inline_options(question) if kind == "multiple choice" else None
            if choices is not None:
                _check_gold_choice(answer, choices, path, where)
            text = f"{question}\n{self.HINTS[kind]}".strip()
            meta = {"subject": row.get("subject"), "level": row.get("level"), "dynamath_type": kind}
            yield self._question(
                qid,
                text,
                [image],
                answer,
                answer_type=self.TYPES[kind],
                choices=tuple(choices) if choices else None,
                meta=meta,
            )


class MathVR(Benchmark):
    """Math-VR benchmark (English, 2,500 questions: text-only and multimodal).

    Format (Hugging Face ``gogoduan/Math-VR-bench``, read by ``Math-VR-Infer.py`` of
    ``HKU-MMLab/Math-VR-CodePlot-CoT``): ``data/test-*.parquet`` (or ``*.parquet``) with ``id``,
    ``question`` (with ``<image1>``..``<image8>`` placeholders), ``image1``..``image8`` (image structs),
    ``category`` ("text" / "multimodal"), ``answers``, ``number_of_answers``, ``total_score``,
    ``scoring_points``, ``scores``. Placeholders are removed and their images attached in order, as the
    official inference script does.

    The dataset card does not pin the type of ``answers``; a string or a list of strings (also
    JSON-encoded) is accepted. Math-VR grades Answer Correctness with GPT-4.1, so rule scoring
    (``numeric``, exact fallback) is a lower bound; multi-part golds are joined with "; " and flagged
    ``meta["needs_judge"]`` - use ``evaluation.judge: llm`` for those.
    """

    name, group, tool_hint = "mathvr", "reasoning", "python"
    source = "gogoduan/Math-VR-bench (data/test-*.parquet)"
    _PLACEHOLDER = re.compile(r"<image(\d+)>")

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        files = _find_files(folder, ("data/test-*.parquet", "*.parquet"), "Math-VR parquet file")
        ids = _Ids(self.name)
        for file, where, row in _parquet_rows(files, ("id", "question", "answers")):
            native = _text(_get(row, "id", file, where), "id", file, where)
            question = _text(_get(row, "question", file, where), "question", file, where)
            golds = _str_list(_get(row, "answers", file, where), "answers", file, where)
            if not golds:
                raise BenchmarkFormatError(file, "field 'answers' is empty", where)
            qid = ids(native, file, where)
            images = []
            for number in self._PLACEHOLDER.findall(question):
                key = f"image{number}"
                if row.get(key) is None:
                    raise BenchmarkFormatError(
                        file, f"question refers to <{key}> but {key!r} is empty", where
                    )
                images.append(
                    _cell_image(row[key], key, [file.parent, folder], file, where, max_image_pixels)
                )
            text = re.sub(r"[ \t]{2,}", " ", self._PLACEHOLDER.sub(" ", question)).strip()
            meta = {
                "category": row.get("category"),
                "needs_judge": len(golds) > 1,
                "total_score": row.get("total_score"),
                "scoring_points": row.get("scoring_points"),
                "scores": row.get("scores"),
            }
            yield self._question(qid, text, images, "; ".join(golds), answer_type="numeric", meta=meta)


# --------------------------------------------------------------------------------------------- perception


class VStar(Benchmark):
    """V* Bench (191 questions: direct attributes and relative position).

    Format (Hugging Face ``craigwu/vstar_bench``): two folders, ``direct_attributes/`` and
    ``relative_position/``, each with one image per question and a JSON annotation of the same stem
    holding ``question``, ``options`` (the first option is the correct one), ``target_object`` and
    ``bbox``. Because the stored order always puts the answer first, the options are shown in an order
    shuffled with a seed derived from the question id (stable across runs); the gold is the correct
    option's text.
    """

    name, group, tool_hint = "vstar", "perception", "image_zoom_in"
    source = "craigwu/vstar_bench (direct_attributes/ and relative_position/: <stem>.jpg + <stem>.json)"
    CATEGORIES = ("direct_attributes", "relative_position")

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        for category in self.CATEGORIES:
            if not (folder / category).is_dir():
                raise BenchmarkFormatError(folder / category, "V* category folder not found")
        ids = _Ids(self.name)
        for category in self.CATEGORIES:
            for path in sorted((folder / category).glob("*.json")):
                where = "annotation"
                row = _read_json(path)
                if not isinstance(row, dict):
                    raise BenchmarkFormatError(path, "expected a JSON object", where)
                question = _text(_get(row, "question", path, where), "question", path, where)
                options = _str_list(_get(row, "options", path, where), "options", path, where)
                if len(options) < 2:
                    raise BenchmarkFormatError(path, "field 'options' needs at least two options", where)
                qid = ids(f"{category}-{path.stem}", path, where)
                image_path = next((p for s in IMAGE_SUFFIXES if (p := path.with_suffix(s)).is_file()), None)
                if image_path is None:
                    raise BenchmarkFormatError(path, f"no image {path.stem}.* next to the annotation", where)
                image = _decode(image_path.read_bytes(), image_path.name, path, where, max_image_pixels)
                choices = list(options)
                random.Random(zlib.crc32(qid.encode())).shuffle(choices)
                meta = {
                    "category": category,
                    "target_object": row.get("target_object"),
                    "bbox": row.get("bbox"),
                }
                yield self._choice_question(qid, question, choices, image, options[0], meta)


class VisualProbe(Benchmark):
    """VisualProbe hard (Mini-o3).

    Format (Hugging Face ``Mini-o3/VisualProbe_Hard``, the data files of the Mini-o3 training recipe):
    ``val.json``, a JSON list of rows with ``images`` (list of image paths), the question in
    ``problem`` (``question`` / ``prompt`` are accepted too, as downstream converters do), the answer in
    ``solution`` (``answer`` accepted) and an optional ``doc_id``. Image paths are resolved against the
    folder first, then its parent: the recipe keeps them relative to the directory that holds all
    ``VisualProbe_*`` folders. The dataset card documents no schema, so this is the layout the Mini-o3
    code reads (``data.image_key=images``, ``data.answer_key=solution``).

    Answers are short open-ended phrases (Mini-o3 grades them with an LLM judge): ``exact`` with the
    rule judge; a single-letter answer with "(A) ..." options in the question becomes ``choice``.
    """

    name, group, tool_hint = "visualprobe", "perception", "image_zoom_in"
    source = "Mini-o3/VisualProbe_Hard (val.json + data/)"
    QUESTION_KEYS = ("problem", "question", "prompt")
    ANSWER_KEYS = ("solution", "answer")

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
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
            rels = _str_list(_get(row, "images", path, where), "images", path, where)
            if not rels:
                raise BenchmarkFormatError(path, "field 'images' is empty", where)
            native = (
                _text(row["doc_id"], "doc_id", path, where) if row.get("doc_id") is not None else str(index)
            )
            qid = ids(native, path, where)
            images = [
                _image_file(rel, [folder, folder.parent], path, where, max_image_pixels) for rel in rels
            ]
            text = question.replace("<image>", " ").strip()
            choices = _inline_options(text, labelled=False) if re.fullmatch(r"\(?[A-Z]\)?", answer) else None
            kind: AnswerType = "choice" if choices else "exact"
            yield self._question(
                qid,
                text,
                images,
                answer,
                answer_type=kind,
                choices=tuple(choices) if choices else None,
                meta={"split": "hard"},
            )

    @staticmethod
    def _first(row: Mapping[str, Any], keys: Sequence[str], path: Path, where: str) -> str:
        for key in keys:
            if key in row:
                return _text(row[key], key, path, where)
        raise BenchmarkFormatError(path, f"missing field {keys[0]!r} (or {', '.join(keys[1:])})", where)


class HRBench(Benchmark):
    """HR-Bench 4K / 8K (800 rows each: 200 questions in 4 option orders, ``cycle_category``).

    Format (Hugging Face ``DreamMr/HR-Bench``, the VLMEvalKit TSV): ``hr_bench_4k.tsv`` /
    ``hr_bench_8k.tsv`` (or the only ``*.tsv`` in the folder), tab-separated with a header: ``index``,
    ``question``, ``answer`` (a letter), ``category``, the options in columns ``A``, ``B``, ``C``, ``D``
    (more letters allowed, empty cells skipped), ``image`` (base64) and ``cycle_category``. As in
    VLMEvalKit, an ``image`` cell of at most 64 characters is the ``index`` of the row whose image it
    shares; rows that share an image share one decoded copy.

    Memory: an 8K image decodes to ~100 MB, so the 200 distinct 8K images need ~20 GB; cap the load
    with ``limit`` (``evaluation.questions``) on small machines.
    """

    group, tool_hint = "perception", "image_zoom_in"
    source = "DreamMr/HR-Bench (hr_bench_4k.tsv / hr_bench_8k.tsv)"
    REQUIRED = ("index", "question", "answer", "A", "B", "image")

    def __init__(self, name: str, resolution: str):
        self.name, self.resolution = name, resolution
        self.filename = f"hr_bench_{resolution}.tsv"

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        path = folder / self.filename
        if not path.is_file():  # accept a renamed file, but never the other resolution's
            tsvs = [p for p in sorted(folder.glob("*.tsv")) if self.resolution in p.name.lower()]
            if len(tsvs) != 1:
                raise BenchmarkFormatError(path, "HR-Bench TSV not found")
            path = tsvs[0]
        ids = _Ids(self.name)
        decoded: dict[str, Image.Image] = {}  # index -> image: rows sharing an image share one copy
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
                raise BenchmarkFormatError(path, f"answer {answer!r} is not one of the option letters", where)
            qid = ids(native, path, where)
            cell = row["image"].strip()
            if len(cell) > 64:
                image = decoded[native] = _b64_image(cell, "image", path, where, max_image_pixels)
            elif cell in decoded:
                image = decoded[cell]
            else:  # a reference to a row further down (or beyond the limit)
                found = self._find_image(path, cell, where)
                image = decoded[cell] = _b64_image(found, "image", path, where, max_image_pixels)
            meta = {"category": row.get("category"), "cycle_category": row.get("cycle_category")}
            yield self._choice_question(qid, question, choices, image, answer, meta)

    def _rows(self, path: Path) -> Iterator[tuple[str, dict[str, str]]]:
        """(where, row) per data row; ``where`` is the line the record starts on."""
        csv.field_size_limit(sys.maxsize)  # base64 images are far beyond the 128 KiB default
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            header = reader.fieldnames or []
            missing = [c for c in self.REQUIRED if c not in header]
            if missing:
                raise BenchmarkFormatError(
                    path, f"missing column(s) {', '.join(map(repr, missing))}", "line 1"
                )
            line = reader.line_num
            for row in reader:
                where, line = f"line {line + 1}", reader.line_num
                if None in row or any(v is None for v in row.values()):
                    raise BenchmarkFormatError(path, f"expected {len(header)} tab-separated fields", where)
                yield where, row

    @staticmethod
    def _find_image(path: Path, index: str, where: str) -> str:
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if (row.get("index") or "").strip() == index and len((row.get("image") or "").strip()) > 64:
                    return row["image"].strip()
        raise BenchmarkFormatError(
            path, f"field 'image' refers to row index {index!r}, which has no image", where
        )


# --------------------------------------------------------------------------------------------- search


class HRMMSearch(Benchmark):
    """HR-MMSearch (305 high-resolution, knowledge-intensive search questions; SenseNova-MARS).

    Format (Hugging Face ``sensenova/HR-MMSearch``): ``data/train-*.parquet`` (or ``*.parquet``) with
    ``sample_id``, ``query``, ``query_image`` (image struct), ``ground_truth``, ``difficulty``,
    ``category``. Scored ``f1`` (token F1, as for MMSearch); the paper of the benchmark uses an LLM
    judge, available with ``evaluation.judge: llm``.
    """

    name, group, tool_hint = "hrmmsearch", "search", "search"
    source = "sensenova/HR-MMSearch (data/train-*.parquet)"

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
        files = _find_files(folder, ("data/*.parquet", "*.parquet"), "HR-MMSearch parquet file")
        ids = _Ids(self.name)
        for file, where, row in _parquet_rows(files, ("sample_id", "query", "query_image", "ground_truth")):
            native = _text(row["sample_id"], "sample_id", file, where)
            query = _text(row["query"], "query", file, where)
            gold = _text(row["ground_truth"], "ground_truth", file, where)
            qid = ids(native, file, where)
            image = _cell_image(
                row["query_image"], "query_image", [file.parent, folder], file, where, max_image_pixels
            )
            meta = {"difficulty": row.get("difficulty"), "category": row.get("category")}
            yield self._question(qid, f"{query}\n{SHORT_HINT}", [image], gold, answer_type="f1", meta=meta)


class MMSearch(Benchmark):
    """MMSearch end-to-end task (300 questions, some without an image).

    Format (Hugging Face ``CaraJ/MMSearch``, config ``end2end``): ``end2end.parquet`` (or
    ``end2end/*.parquet``) with ``sample_id``, ``query``, ``query_image`` (image struct, null for
    text-only queries), ``gt_answer``, ``alternative_gt_answers`` (list), ``area``, ``subfield``,
    ``timestamp``, ``gt_requery`` and ``image_search_result``. Scored ``f1``: the best token F1 over
    ``gt_answer`` and the alternatives, as ``get_f1_score`` of the MMSearch code. The pre-computed
    ``image_search_result`` screenshot is not given to the model: here the policy searches with its own
    ``search`` tool.
    """

    name, group, tool_hint = "mmsearch", "search", "search"
    source = "CaraJ/MMSearch (end2end.parquet)"

    def _questions(self, folder: Path, max_image_pixels: int) -> Iterator[Question]:
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
                else [_cell_image(cell, "query_image", [file.parent, folder], file, where, max_image_pixels)]
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


# --------------------------------------------------------------------------------------------- registry

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        MathVision(),
        DynaMath(),
        MathVR(),
        VStar(),
        VisualProbe(),
        HRBench("hrbench4k", "4k"),
        HRBench("hrbench8k", "8k"),
        HRMMSearch(),
        MMSearch(),
    )
}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name``."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        known = ", ".join(BENCHMARKS)
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known benchmarks: {known}") from None
