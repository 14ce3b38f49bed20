"""What every benchmark adapter shares: the `Benchmark` base class, its errors, and the readers that keep a
hostile folder in bounds (package doc, axpo_core/evaluation/benchmarks/__init__.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from PIL import Image

from axpo_core import rewards
from axpo_core.envs.suites import Question, format_options
from axpo_core.envs.tools import load_image

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


def _number(text: str) -> float | None:
    value = rewards._parse_number(text)  # the project's number forms: 1,200 / 3/4 / \frac{3}{4} / 50%
    return None if value is None else float(value)
