"""Adapters for the paper's nine benchmarks (DESIGN §6): each reads its published format from a local folder.

Every adapter turns benchmark items into :class:`~axpo_core.envs.suites.Question` objects, so the rollout
engine and :func:`axpo_core.evaluation.runner.evaluate` run them unchanged. Question ids are stable:
``<benchmark>-<native id>``. Answer types (see :mod:`axpo_core.rewards`): ``choice`` for multiple choice
(the gold is always the option letter), ``numeric`` / ``approx`` / ``exact`` / ``contains`` for free-form
math and short answers, ``f1`` for the search benchmarks (the reward is the token F1; alternative gold
answers ride in ``Question.choices``, which the model never sees).

Scoring: each benchmark has one scorer named after it (``score_mathvision`` ... ``score_mmsearch``, also
``Benchmark.score``), written after the official evaluation code that its docstring names. The rule judge
(:class:`axpo_core.evaluation.judge.RuleJudge`) uses it for every benchmark question. Where the authors
grade with an LLM (HR-Bench, VisualProbe, Math-VR, HR-MMSearch), the rule scorer is a lower bound of
their score; ``evaluation.judge: llm`` plugs in a local LLM judge instead (rule match first).

Nothing is downloaded: ``load(folder)`` reads the files as the publishers ship them, and every problem
with them (a missing folder or file, a missing column or field, bad JSON, text that is not UTF-8, an
unreadable parquet page, bad base64, an unreadable or missing image) raises one
:class:`BenchmarkFormatError` that names the file and the row. Rows are read in file order and ``limit``
keeps the first ones, so a capped run is a stable prefix. Images go through
:func:`axpo_core.envs.tools.load_image` (decompression-bomb guard) and are decoded only for kept rows.

Hostile folders: a benchmark reads only inside its folder. Every path a file names (and every file found
by name) is resolved, symlinks included, and refused before it is opened when it leads outside
(:func:`_inside`). An image file above :data:`MAX_IMAGE_FILE_BYTES` is refused from its size unopened;
others are opened lazily, so the pixel limit is checked from the header before any pixel is read.

Row numbering in errors: ``line N`` is 1-based (JSONL, TSV), ``row N`` / ``item N`` are 0-based
(parquet, JSON lists: the index pandas and ``datasets`` show), ``entry 'key'`` names a JSON object key.
"""

from __future__ import annotations

import base64
import binascii
import csv
import json
import math
import random
import re
import sys
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal

from PIL import Image

from axpo_core import rewards
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
    "MAX_IMAGE_FILE_BYTES",
    "MAX_JSON_FILE_BYTES",
    "MMSearch",
    "MathVR",
    "MathVision",
    "UnknownBenchmarkError",
    "VStar",
    "VisualProbe",
    "benchmark_score",
    "get_benchmark",
    "score_dynamath",
    "score_hrbench",
    "score_hrmmsearch",
    "score_mathvision",
    "score_mathvr",
    "score_mmsearch",
    "score_visualprobe",
    "score_vstar",
]

Group = Literal["reasoning", "perception", "search"]
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # = ToolsConfig.max_image_pixels' default
# Files are refused unread above these sizes: an image file larger than the same image stored raw at the
# pixel limit (40 Mpixel x 4 bytes = 160 MB) is no benchmark image, and the annotation JSON files that are
# read whole are far smaller.
MAX_IMAGE_FILE_BYTES = 256 << 20
MAX_JSON_FILE_BYTES = 256 << 20
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


def _str_list(
    value: Any, key: str, path: Path, where: str, *, skip_empty: bool = False, scalar: bool = False
) -> list[str]:
    """A list of strings; parquet gives lists (or numpy arrays), some dumps store them JSON-encoded.
    ``skip_empty`` drops blank entries instead of rejecting them; with ``scalar`` a plain string or number
    ("68", "x=1, y=2", 68) is a one-item list."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or JSON too deep or too large to read
            decoded = None if scalar else _NOT_JSON
        if decoded is _NOT_JSON:
            raise BenchmarkFormatError(path, f"field {key!r} should be a list of strings", where)
        value = decoded if isinstance(decoded, (list, tuple)) else ([value] if scalar else decoded)
    elif scalar and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise BenchmarkFormatError(path, f"field {key!r} should be a list, got {type(value).__name__}", where)
    if skip_empty:
        value = [v for v in value if not (v is None or (isinstance(v, str) and not v.strip()))]
    return [_text(v, f"{key}[{i}]", path, where) for i, v in enumerate(value)]


_NOT_JSON = object()
_PLACEHOLDER_IMAGE = Image.new("RGB", (1, 1))  # validation only: stands in for an image already checked


def _inside(candidate: Path, folder: Path, path: Path, where: str | None, what: str) -> Path:
    """``candidate`` with its symlinks resolved, refused (naming ``path`` and ``where``) unless it stays
    inside the benchmark ``folder``: a benchmark file may only send the loader to files of its own folder,
    so ``../../etc/passwd``, an absolute path or a symlink that leads out is never opened."""
    try:
        resolved, root = candidate.resolve(), folder.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a NUL byte, a name too long, a symlink loop
        raise BenchmarkFormatError(path, f"{what}: unusable path ({exc})", where) from None
    if not resolved.is_relative_to(root):
        raise BenchmarkFormatError(
            path, f"{what} leads outside the benchmark folder {root} (to {resolved}): refused", where
        )
    return resolved


def _relative(rel: str, path: Path, where: str, what: str) -> str:
    """``rel`` when it is a relative path; absolute ones are refused whatever they point at: every
    published format stores paths relative to its folder."""
    if Path(rel).is_absolute():
        raise BenchmarkFormatError(path, f"{what} is an absolute path: refused (paths are relative)", where)
    return rel


def _decode(data: bytes | Path, source: str, path: Path, where: str, max_pixels: int) -> Image.Image:
    """An image from bytes or from a file inside the benchmark folder. A file's size is checked before it
    is opened, and ``load_image`` opens it lazily: PIL reads the header, the pixel count is checked, and
    only then are the pixels read (a 1 GB sparse ``.png`` is refused unread)."""
    try:
        size = data.stat().st_size if isinstance(data, Path) else len(data)
    except OSError as exc:
        raise BenchmarkFormatError(path, f"{source}: cannot read image ({exc})", where) from None
    if size > MAX_IMAGE_FILE_BYTES:
        raise BenchmarkFormatError(
            path,
            f"{source}: {size} bytes, above the limit of {MAX_IMAGE_FILE_BYTES} bytes per image: refused",
            where,
        )
    try:
        return load_image(data, max_pixels)
    except (OSError, ValueError) as exc:  # PIL.UnidentifiedImageError is an OSError; bombs are ValueErrors
        raise BenchmarkFormatError(path, f"{source}: cannot decode image ({exc})", where) from None


def _first_file(candidates: Sequence[Path], folder: Path, path: Path, where: str, what: str) -> Path | None:
    """The first candidate that is a file, every one of them checked to stay inside ``folder`` first (so
    the answer never depends on what exists outside it)."""
    inside = [_inside(c, folder, path, where, what) for c in candidates]
    return next((c for c in inside if c.is_file()), None)


def _image_file(
    rel: str, folder: Path, bases: Sequence[Path], path: Path, where: str, max_pixels: int, key: str = "image"
) -> Image.Image:
    """An image stored next to the annotations: ``rel`` (field ``key``) is tried against each base folder
    (each inside the benchmark ``folder``, which the image must not leave)."""
    what = f"field {key!r}: image {rel!r}"
    rel = _relative(rel, path, where, what)
    return _image_at([base / rel for base in bases], folder, what, path, where, max_pixels)


def _image_at(
    candidates: Sequence[Path], folder: Path, what: str, path: Path, where: str, max_pixels: int
) -> Image.Image:
    """The image at the first candidate that is a file (all kept inside ``folder``)."""
    found = _first_file(candidates, folder, path, where, what)
    if found is None:
        looked = ", ".join(str(c) for c in candidates)
        raise BenchmarkFormatError(path, f"{what} not found (looked for {looked})", where)
    return _decode(found, what, path, where, max_pixels)


def _b64_image(value: Any, key: str, path: Path, where: str, max_pixels: int) -> Image.Image:
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkFormatError(path, f"field {key!r} should hold a base64-encoded image", where)
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BenchmarkFormatError(path, f"field {key!r} is not valid base64", where) from None
    return _decode(data, f"field {key!r}", path, where, max_pixels)


def _cell_image(value: Any, key: str, folder: Path, path: Path, where: str, max_pixels: int) -> Image.Image:
    """An image cell as ``datasets`` writes it to parquet: ``{"bytes": ..., "path": ...}`` (bytes may be
    absent when the file sits beside the parquet), raw bytes, or a path relative to the parquet file's
    folder or the benchmark ``folder``."""
    bases = [path.parent, folder]
    if isinstance(value, Mapping):
        data, rel = value.get("bytes"), value.get("path")
        if data:
            return _decode(bytes(data), f"field {key!r}", path, where, max_pixels)
        if isinstance(rel, str) and rel:
            return _image_file(rel, folder, bases, path, where, max_pixels, key)
    elif isinstance(value, (bytes, bytearray)) and value:
        return _decode(bytes(value), f"field {key!r}", path, where, max_pixels)
    elif isinstance(value, str) and value.strip():
        return _image_file(value.strip(), folder, bases, path, where, max_pixels, key)
    raise BenchmarkFormatError(path, f"field {key!r} holds no image", where)


def _utf8(raw: bytes, path: Path, where: str | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if where is None:  # a whole file: the line of the first bad byte
            where = _where("line", raw.count(b"\n", 0, exc.start) + 1)
        raise BenchmarkFormatError(
            path, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})", where
        ) from None


def _loads(text: str, path: Path, where: str | None) -> Any:
    """``json.loads`` whose every failure is a BenchmarkFormatError naming the file (and line)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkFormatError(path, f"invalid JSON: {exc.msg}", where or f"line {exc.lineno}") from None
    except RecursionError:  # json's C scanner recurses once per level of nesting
        raise BenchmarkFormatError(path, "invalid JSON: nested too deeply to read", where) from None
    except ValueError as exc:  # e.g. an integer beyond Python's 4,300-digit limit
        raise BenchmarkFormatError(path, f"invalid JSON: {exc}", where) from None


def _read_json(path: Path) -> Any:
    """A JSON file read whole (the annotation files): refused unread above the size limit."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_FILE_BYTES:
            raise BenchmarkFormatError(
                path, f"{size} bytes, above the limit of {MAX_JSON_FILE_BYTES} bytes for a JSON file: refused"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise BenchmarkFormatError(path, f"cannot read file ({exc})") from None
    return _loads(_utf8(raw, path, None), path, None)


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) per physical line, each decoded on its own so a bad byte names its line."""
    try:
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                yield number, _utf8(raw, path, f"line {number}")
    except OSError as exc:
        raise BenchmarkFormatError(path, f"cannot read file ({exc})") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in _text_lines(path):
        if not line.strip():
            continue
        where = f"line {number}"
        row = _loads(line, path, where)
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
        index, batches = 0, parquet.iter_batches(batch_size=16)
        while True:
            try:  # a corrupt page fails here, when its batch is read: name the first row not read
                batch = next(batches, None)
                rows = [] if batch is None else batch.to_pylist()
            except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError, ArrowInvalid, ArrowException...
                raise BenchmarkFormatError(
                    file,
                    f"cannot read the data from this row on ({_row_group(parquet, index)}): "
                    f"{type(exc).__name__}: {' '.join(str(exc).split())}",  # pyarrow's text spans lines
                    f"row {index}",
                ) from None
            if batch is None:
                break
            for row in rows:
                yield file, f"row {index}", row
                index += 1


def _row_group(parquet: Any, row: int) -> str:
    """The row group that holds ``row`` ("row group 2 of 5"), from the footer, which did parse."""
    meta, start = parquet.metadata, 0
    for group in range(meta.num_row_groups):
        start += meta.row_group(group).num_rows
        if row < start:
            return f"row group {group} of {meta.num_row_groups}"
    return f"past the last of {meta.num_row_groups} row groups"


def _files_inside(folder: Path, files: Sequence[Path]) -> list[Path]:
    """Files found in the folder, each refused if it is a symlink that leads out of it."""
    for file in files:
        _inside(file, folder, file, None, "the file")
    return list(files)


def _find_files(folder: Path, patterns: Sequence[str], what: str) -> list[Path]:
    """Files of the first glob pattern that matches anything; one clear error when none does."""
    for pattern in patterns:
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return _files_inside(folder, found)
    raise BenchmarkFormatError(folder, f"no {what} found (expected {' or '.join(patterns)})")


_LABEL = re.compile(r"(?:choices?|options?)\s*:\s*(?=\(A\))", re.IGNORECASE)
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_LINE_OPTION = re.compile(r"^\s*([A-Z])\s*[.:)]\s*(.*?)\s*$")


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def _paren_run(tail: str) -> list[str] | None:
    """ "(A) heap (B) stack" -> ["heap", "stack"]; an empty option text is its letter ("(A) (B)": the
    options are drawn in the picture). None unless the letters run A, B, C... (at least two)."""
    parts = _PAREN_LETTER.split(tail)  # ["", "A", " heap ", "B", " stack"]
    if parts[0].strip():
        return None
    letters, texts = parts[1::2], [t.strip() for t in parts[2::2]]
    if len(letters) < 2 or letters != _letters(len(letters)):
        return None
    return [text or letter for letter, text in zip(letters, texts)]


def _inline_options(question: str) -> list[str] | None:
    """Options written into the question text, in the forms the published files use:

    - "... Choices: (A) yes (B) no" (also "choice:", "Options:"), the options run from the label;
    - "... (A) heap (B) stack (C) binary tree" without a label, from the last "(A)" that starts a run;
    - one option per line at the end: "A. Group 1" / "B: [1, 2]" / "C) ...".
    """
    label = _LABEL.search(question)
    starts = [label.end()] if label else [m.start() for m in re.finditer(r"\(A\)", question)][::-1]
    for start in starts:
        options = _paren_run(question[start:])
        if options:
            return options
    lines = question.rstrip().splitlines()
    found: list[tuple[str, str]] = []
    for line in reversed(lines):
        match = _LINE_OPTION.match(line)
        if match is None or not match.group(2):
            break
        found.insert(0, (match.group(1), match.group(2)))
    letters = [letter for letter, _ in found]
    while letters and letters[0] != "A":  # the run must start at A
        found, letters = found[1:], letters[1:]
    if len(found) >= 2 and letters == _letters(len(found)):
        return [text for _, text in found]
    return None


def _strip_inline_options(question: str) -> str:
    """The question without its trailing option list (for questions whose options go in ``choices``)."""
    label = _LABEL.search(question)
    if label is not None:
        return question[: label.start()].rstrip()
    first = question.find("(A)")
    return question[:first].rstrip() if first >= 0 else question


def _gold_letter(gold: str, choices: Sequence[str], path: Path, where: str, field: str = "answer") -> str:
    """The option letter the gold names (a letter, or one option's text); an error naming the field
    when it names none (or several different ones)."""
    named = rewards.choice_indices(gold, choices)
    if named is None or len({choices[i].strip() for i in named}) > 1:
        raise BenchmarkFormatError(
            path, f"field {field!r}: {gold!r} is not one of the {len(choices)} options", where
        )
    return chr(ord("A") + min(named))


def _letter_only(choices: Sequence[str]) -> bool:
    """Options that are just their letters ("A", "(A)", "A)", "A."): the picture shows them (MathVision)."""
    return [c.strip().strip("().").upper() for c in choices] == _letters(len(choices))


def _choice_text(question: str, choices: Sequence[str]) -> str:
    """The question with its options spelled out; options that are just the letters (the picture shows
    them, as in MathVision) are listed once, as letters ("(A) (A) (B) (B)" helps nobody)."""
    if _letter_only(choices):
        return f"{question}\nOptions: {', '.join(_letters(len(choices)))}.\n{LETTER_HINT}"
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
    """One published benchmark: where its files are in a folder, how a row becomes a Question, and how a
    response is scored (:meth:`score`, after the official evaluation code)."""

    name: str
    group: Group
    tool_hint: str | None  # the tool the benchmark exercises most; copied to Question.tool
    source: ClassVar[str]  # where the format comes from (for the docs and error messages)

    def load(
        self, folder: Path | str, limit: int | None = None, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    ) -> list[Question]:
        """The first ``limit`` questions (all when None) of the benchmark stored in ``folder``."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        questions: list[Question] = []
        for question in self._iterate(folder, max_image_pixels, keep_images=True):
            questions.append(question)
            if limit is not None and len(questions) >= limit:
                break
        return questions

    def validate(self, folder: Path | str, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> int:
        """How many questions ``folder`` holds, every row and image checked as :meth:`load` checks them,
        holding one question in memory at a time (HR-Bench 8K would need ~20 GB loaded whole)."""
        return sum(1 for _ in self._iterate(folder, max_image_pixels, keep_images=False))

    def _iterate(self, folder: Path | str, max_image_pixels: int, keep_images: bool) -> Iterator[Question]:
        folder = Path(folder)
        if not folder.is_dir():
            raise BenchmarkFormatError(
                folder, f"{self.name} folder not found (expected the files of {self.source})"
            )
        count = 0
        for question in self._questions(folder, max_image_pixels, keep_images=keep_images):
            count += 1
            yield question
        if not count:
            raise BenchmarkFormatError(folder, f"{self.name}: no questions found")

    def score(self, question: Question, response_text: str) -> float:
        """The response's reward in [0, 1] under this benchmark's official rule (see each scorer)."""
        return rewards.score_question(response_text, question)

    @abstractmethod
    def _questions(
        self, folder: Path, max_image_pixels: int, *, keep_images: bool = True
    ) -> Iterator[Question]:
        """Questions in file order; a generator, so a limited load decodes only the images it keeps.
        ``keep_images=False`` (validation) lets an adapter drop images it would otherwise share."""

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


# --------------------------------------------------------------------------------------------- perception

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


# --------------------------------------------------------------------------------------------- search


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


# --------------------------------------------------------------------------------------------- scorers
# One per benchmark, each after the official code its adapter's docstring names. All read the answer the
# way the rollout format prescribes (rewards.extract_answer: the \boxed{} of the <answer> block); a
# response without one scores 0.


def _number(text: str) -> float | None:
    value = rewards._parse_number(text)  # the project's number forms: 1,200 / 3/4 / \frac{3}{4} / 50%
    return None if value is None else float(value)


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


def score_mathvr(question: Question, response_text: str) -> float:
    """Math-VR: no rule-based official scorer (``Math-VR-Eval.py`` asks GPT-4.1); a single gold compared
    by value, else as text: a lower bound of the judge's Answer Correctness."""
    return rewards.score_question(response_text, question)


def score_vstar(question: Question, response_text: str) -> float:
    """V*: the option letter (or text) of ``test_questions.jsonl``'s order; the official
    ``vstar_bench_eval.py`` ranks options by likelihood instead (nothing to reproduce generatively)."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else float(rewards.match_choice(pred, question.answer, question.choices))


def score_visualprobe(question: Question, response_text: str) -> float:
    """VisualProbe: the exact-match part of Mini-o3's grading (normalised text; a letter for "(A) ..."
    questions); a lower bound of its GPT-4o judge (``general_qa_tool.py`` ``inner_acc_reward``)."""
    return rewards.score_question(response_text, question)


def score_hrbench(question: Question, response_text: str) -> float:
    """HR-Bench: the option letter or its exact text; a lower bound of the official LLM judge
    (``hrbench/vlmeval/dataset/utils/hrbench.py``)."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else float(rewards.match_choice(pred, question.answer, question.choices))


def score_hrmmsearch(question: Question, response_text: str) -> float:
    """HR-MMSearch: token F1 (the AXPO paper's search protocol); the benchmark's own harness
    (SenseNova-MARS ``inference/eval.py`` ``llm_judge_score``) is exact match, then GPT-4o."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else rewards.match_f1(pred, [question.answer, *(question.choices or ())])


def score_mmsearch(question: Question, response_text: str) -> float:
    """MMSearch ``eval_end2end.py``: the best ``get_f1_score`` over ``gt_answer`` and the alternatives."""
    pred = rewards.extract_answer(response_text)
    return 0.0 if pred is None else rewards.match_f1(pred, [question.answer, *(question.choices or ())])


def benchmark_score(question: Question, response_text: str) -> float | None:
    """The score of a response to a benchmark question under its benchmark's scorer; None for a question
    of no registered benchmark (a synthetic suite's)."""
    benchmark = BENCHMARKS.get(str(question.meta.get("benchmark", "")))
    if benchmark is None or question.suite != benchmark.name:
        return None
    return benchmark.score(question, response_text)


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
