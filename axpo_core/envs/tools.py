"""The agent's tools (DESIGN.md §3): schemas and system prompt, parsing of ``<tool_call>`` payloads, and
execution against one rollout's images, Python sandbox and search index (``search.py``: BM25 over local
documents, by default the search suites' fictional encyclopedia).

Everything the model can get wrong comes back as a ``ToolResult`` whose text starts with "Error:" and
says what was wrong, so the model can correct itself; nothing here raises on model output.
"""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from axpo_core.envs.python_helpers import HELPER_DOCS, HELPER_SHORT, PRELOAD
from axpo_core.envs.sandbox import Sandbox
from axpo_core.envs.search import MAX_RESULTS, SearchIndex, builtin_index, load_index

TOOL_NAMES = ("image_zoom_in", "python", "search")

# Qwen2-VL / Qwen2.5-VL / Qwen3-VL processors reject images whose aspect ratio exceeds 200.
MAX_CROP_ASPECT_RATIO = 200
_MAX_LABEL_CHARS = 100
_MAX_SHOWN_CHARS = 80
MAX_QUERY_CHARS = 500
DEFAULT_MAX_RESULTS = 3
NOTE_CHARS = 100  # room for one truncation note past a response cap (`cap_text`)
UNOPENED_CALL = "Error: </tool_call> without an opening <tool_call>."

_SCHEMAS: dict[str, dict[str, Any]] = {
    "image_zoom_in": {
        "type": "function",
        "function": {
            "name": "image_zoom_in",
            "description": (
                "Zoom in on a region of an image: crops the region from the full-resolution image and "
                "returns it as a new image. Use it to read small text or inspect fine details."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "bbox_2d": {
                        "type": "array",
                        "items": {"type": "number"},
                        "minItems": 4,
                        "maxItems": 4,
                        "description": (
                            "The region as [x1, y1, x2, y2] in coordinates relative to the image, scaled to "
                            "0-1000: (0, 0) is the top-left corner and (1000, 1000) the bottom-right corner."
                        ),
                    },
                    "label": {"type": "string", "description": "A short name for what is in the region."},
                    "img_idx": {
                        "type": "integer",
                        "description": (
                            "Which image to crop (default 0). Images are numbered from 0 in the order they "
                            "were given; every image returned by image_zoom_in gets the next number."
                        ),
                    },
                },
                "required": ["bbox_2d", "label"],
            },
        },
    },
    "python": {
        "type": "function",
        "function": {
            "name": "python",
            "description": (
                "Run Python code in a sandboxed interpreter and return what it prints. Variables persist "
                "between calls. The images are preloaded as `_pil_images`, a list of PIL images numbered "
                "like img_idx (zoomed crops included). The value of a final expression is shown too. There "
                "is no network access, files can only be written in the current directory, and each call "
                "has a time limit. Preloaded helpers: " + "; ".join(HELPER_DOCS) + "."
            ),
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "description": "The Python code to run."}},
                "required": ["code"],
            },
        },
    },
    "search": {
        "type": "function",
        "function": {
            "name": "search",
            "description": (
                "Search a local collection of documents (an offline encyclopedia) by keywords and return "
                "the best matches as a numbered list of titles and snippets. Use it to look up facts that "
                "are not in the image, e.g. about a named organisation or one whose emblem you can describe."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Keywords to search for."},
                    "max_results": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_RESULTS,
                        "description": f"How many results to return (default {DEFAULT_MAX_RESULTS}).",
                    },
                },
                "required": ["query"],
            },
        },
    },
}


def _check_names(names: Sequence[str]) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; known tools: {', '.join(TOOL_NAMES)}")
    return names


def tool_schemas(names: Sequence[str] = TOOL_NAMES) -> list[dict]:
    """OpenAI-style function schemas of the named tools, in the given order."""
    return [json.loads(json.dumps(_SCHEMAS[n])) for n in _check_names(names)]  # deep copies


#: One line per tool for `system_prompt(compact=True)`: the same tools, arguments and helpers as the JSON
#: schemas, in a few dozen tokens each. The tiny scales use it (`tools.descriptions: compact`): there the
#: full schemas are ~1,000 of a rollout's ~1,150 tokens, and every SFT step, prefill and update pays for
#: them. Real checkpoints keep the full schemas their chat template was trained on.
_COMPACT: dict[str, str] = {
    "image_zoom_in": (
        "image_zoom_in(bbox_2d, label, img_idx=0): see the crop [x1, y1, x2, y2] (0-1000, top left 0, 0) of "
        "the full-resolution image"
    ),
    "python": "python(code): run code; `_pil_images` are the images; " + "; ".join(HELPER_SHORT),
    "search": "search(query, max_results=3): look facts up in an offline encyclopedia",
}


def system_prompt(names: Sequence[str] = TOOL_NAMES, compact: bool = False) -> str:
    """The system prompt: a role line, the Qwen-style tool block (one JSON schema per line) and the
    answer format (think, then one tool call or the final boxed answer). `compact`: one short line per tool
    instead of the JSON schemas (see `_COMPACT`)."""
    names = _check_names(names)
    role = "You are a helpful assistant that answers questions about images.\n\n"
    if names:
        turn = (
            "do exactly one of the following:\n"
            '- call one tool, as <tool_call>{"name": ..., "arguments": {...}}</tool_call>; its result is '
            "returned to you inside <tool_response></tool_response> and you continue in the next turn;\n"
            "- give the final answer as <answer>\\boxed{...}</answer>, which ends the conversation."
        )
    else:
        turn = "give the final answer as <answer>\\boxed{...}</answer>."
    answer = (
        "# Response format\n\nIn every turn, first think step by step inside <think></think>. Then " + turn
    )
    if not names:
        return role + answer
    if compact:  # the same contract in a fraction of the tokens
        lines = "\n".join(f"- {_COMPACT[n]}" for n in names)
        return (
            "You answer questions about images.\nTools:\n" + lines + "\n"
            'Think in <think></think>, then call one tool as <tool_call>{"name": ..., "arguments": {...}}'
            "</tool_call> or answer as <answer>\\boxed{...}</answer>."
        )
    tools = "\n".join(json.dumps(schema, ensure_ascii=False) for schema in tool_schemas(names))
    return (
        role + "# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{tools}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n"
        "<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n'
        "</tool_call>\n\n" + answer
    )


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict


#: A tool call's outcome (DESIGN §4): "ok"; "format": the call itself is malformed (not parseable JSON,
#: unknown or unavailable tool, arguments that break the schema, an unopened or unclosed tag); "execution":
#: a well-formed call that failed or missed (empty crop, image index out of range, an exception or timeout
#: in the code, the call budget spent).
OUTCOMES = ("ok", "format", "execution")


@dataclass
class ToolResult:
    text: str  # what goes inside <tool_response>...</tool_response> (besides images)
    images: list[Image.Image] = field(default_factory=list)  # new images returned by the tool
    error: str | None = None  # None on success; a short error text on failure
    name: str | None = None  # the tool name, when the call named a known tool
    outcome: str = "ok"  # one of OUTCOMES


# ---------------------------------------------------------------------------------------------- parsing


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")


def valid_text(text: str) -> str:
    """`text` with every lone surrogate (JSON's "\\ud800": UTF-8 cannot encode it, so neither the tokenizer
    nor a UTF-8 JSONL file takes it) replaced by U+FFFD."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def _show(value: Any) -> str:
    """A short JSON rendering of a model-provided value for error messages (control characters escaped
    by JSON, lone surrogates replaced)."""
    try:
        text = valid_text(json.dumps(value, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= _MAX_SHOWN_CHARS else text[: _MAX_SHOWN_CHARS - 3] + "..."


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a lone surrogate in any string or key (iterative: no recursion
    limit on deeply nested input)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_zoom(args: dict) -> str | None:
    bbox = args["bbox_2d"]
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return f'"bbox_2d" must be a list of 4 numbers [x1, y1, x2, y2], got {_show(bbox)}'
    if not all(0 <= v <= 1000 for v in bbox):  # also rejects NaN
        return f'"bbox_2d" values must be between 0 and 1000 (relative coordinates), got {_show(bbox)}'
    if not isinstance(args["label"], str):
        return f'"label" must be a string, got {_show(args["label"])}'
    idx = args.get("img_idx", 0)
    if not _is_int(idx) or idx < 0:
        return f'"img_idx" must be a non-negative integer, got {_show(idx)}'
    return None


def _validate_python(args: dict) -> str | None:
    code = args["code"]
    if not isinstance(code, str):
        return f'"code" must be a string, got {_show(code)}'
    if not code.strip():
        return '"code" is empty'
    return None


def _validate_search(args: dict) -> str | None:
    query = args["query"]
    if not isinstance(query, str):
        return f'"query" must be a string, got {_show(query)}'
    if not query.strip():
        return '"query" is empty'
    if len(query) > MAX_QUERY_CHARS:
        return f'"query" is too long ({len(query)} characters; at most {MAX_QUERY_CHARS})'
    n = args.get("max_results", DEFAULT_MAX_RESULTS)
    if not _is_int(n) or not 1 <= n <= MAX_RESULTS:
        return f'"max_results" must be an integer from 1 to {MAX_RESULTS}, got {_show(n)}'
    return None


# tool -> (required arguments, optional arguments, validator)
_ARGUMENTS = {
    "image_zoom_in": (("bbox_2d", "label"), ("img_idx",), _validate_zoom),
    "python": (("code",), (), _validate_python),
    "search": (("query",), ("max_results",), _validate_search),
}


def _parse(raw: str) -> tuple[str | None, ToolCall | str]:
    """(known tool name or None, ToolCall or error message)."""
    if not isinstance(raw, str):
        return None, "Error: the tool call must be text."
    text = raw.strip()
    if not text:
        return None, 'Error: the tool call is empty; expected {"name": ..., "arguments": {...}}.'
    try:
        call = json.loads(text)
    except json.JSONDecodeError as exc:
        return (
            None,
            f"Error: the tool call is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}).",
        )
    except (ValueError, RecursionError):
        return None, "Error: the tool call is not valid JSON."
    if _has_lone_surrogate(call):  # JSON's "\ud800" escape: no tool, tokenizer or UTF-8 file takes it
        return None, 'Error: the tool call holds invalid Unicode (a lone surrogate escape such as "\\ud800").'
    if not isinstance(call, dict):
        return None, 'Error: the tool call must be a JSON object like {"name": ..., "arguments": {...}}.'
    if "name" not in call:
        return None, 'Error: the tool call has no "name".'
    name = call["name"]
    if not isinstance(name, str):
        return None, f'Error: the tool "name" must be a string, got {_show(name)}.'
    if name not in _ARGUMENTS:
        return None, f"Error: unknown tool {_show(name)}; available tools: {', '.join(TOOL_NAMES)}."
    if "arguments" not in call:
        return name, f'Error: the call to {name} has no "arguments".'
    args = call["arguments"]
    if isinstance(args, str):  # OpenAI style: the arguments object encoded as a JSON string
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return name, f'Error: the "arguments" of {name} are a string that is not a valid JSON object.'
        if _has_lone_surrogate(args):
            return name, f'Error: the "arguments" of {name} hold invalid Unicode (a lone surrogate escape).'
    if not isinstance(args, dict):
        return name, f'Error: the "arguments" of {name} must be a JSON object, got {_show(args)}.'
    required, optional, validate = _ARGUMENTS[name]
    missing = [a for a in required if a not in args]
    if missing:
        return name, f"Error: {name} is missing the required argument(s) {', '.join(map(_show, missing))}."
    extra = [a for a in args if a not in required and a not in optional]
    if extra:
        allowed = ", ".join((*required, *optional))
        return (
            name,
            f"Error: {name} got unexpected argument(s) {', '.join(map(_show, extra))}; allowed: {allowed}.",
        )
    problem = validate(args)
    if problem is not None:
        return name, f"Error: {name}: {problem}."
    return name, ToolCall(name, dict(args))


def parse_tool_call(raw: str) -> ToolCall | str:
    """Parse the text between <tool_call> and </tool_call>. Total: returns a ToolCall with validated
    arguments, or an error message (starting with "Error:") that says what was wrong."""
    return _parse(raw)[1]


# ---------------------------------------------------------------------------------------------- images


def check_image(img: Image.Image, max_pixels: int) -> None:
    """Raise ValueError if the image has no pixels, more than `max_pixels` pixels (decompression-bomb
    guard), or an aspect ratio above MAX_CROP_ASPECT_RATIO (the Qwen-VL processors refuse those)."""
    width, height = img.size
    if width < 1 or height < 1:
        raise ValueError(f"image of {width}x{height} pixels is empty")
    if width * height > max_pixels:
        raise ValueError(
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels"
        )
    if max(width, height) > MAX_CROP_ASPECT_RATIO * min(width, height):
        raise ValueError(
            f"image of {width}x{height} pixels has an aspect ratio above {MAX_CROP_ASPECT_RATIO}:1, "
            "which the vision processor refuses"
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, with 16-bit grey (PIL's I;16 modes, and 16-bit data held in its 32-bit I mode) divided
    by 256 rather than clipped (PIL's own conversion turns every value above 255 white); float images in
    [0, 1] are scaled to [0, 255]."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):  # I;16, I;16B, ... and I (32-bit; 16-bit PNGs decode to it too)
        img = img.convert("I")
        if img.getextrema()[1] > 255:
            img = img.point(lambda v: v * (1 / 256))
        img = img.convert("L")
    elif img.mode == "F":
        low, high = img.getextrema()
        if 0 <= low and high <= 1:
            img = img.point(lambda v: v * 255)
        img = img.convert("L")
    return img.convert("RGB")


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says (cameras store it sideways); unchanged when the
    EXIF data is broken (as viewers do)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - malformed EXIF must not make an image unreadable
        return img


def load_image(path_or_bytes: str | PathLike | bytes, max_pixels: int) -> Image.Image:
    """Open an image file (or its bytes) as upright 8-bit RGB (an animation's first frame), refusing
    decompression bombs and extreme aspect ratios before decoding. Every failure is a ValueError naming
    the file: refused, truncated, or not an image at all."""
    name = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)  # reads the header only: the size is known before decoding
        except Image.DecompressionBombError as exc:
            raise ValueError(f"refusing to load {name}: {exc}") from None
        except UnidentifiedImageError:
            raise ValueError(f"cannot load {name}: not an image in a format PIL reads") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds on garbage (OSError, SyntaxError...)
            raise ValueError(f"cannot load {name}: {type(exc).__name__}: {exc}") from None
        with img:
            try:
                check_image(img, max_pixels)
            except ValueError as exc:
                raise ValueError(f"refusing to load {name}: {exc}") from None
            try:
                img.load()
                return to_rgb(_upright(img))
            except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
                raise ValueError(f"cannot load {name}: {type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------------------------------------- session


def _clean(text: str) -> str:
    """Single-line, bounded, encodable text for echoing model-provided strings (control characters
    dropped, lone surrogates replaced)."""
    text = " ".join(_CONTROL.sub("", valid_text(text)).split())
    return text if len(text) <= _MAX_LABEL_CHARS else text[: _MAX_LABEL_CHARS - 3] + "..."


def cap_text(text: str, limit: int) -> str:
    """`text` cut to its first `limit` characters plus a note of how many were cut; a text at most
    NOTE_CHARS longer than `limit` is kept whole (it may end in a note of its own, like python's
    "[output truncated: ...]"). So every capped text is at most `limit + NOTE_CHARS` characters."""
    if len(text) <= limit + NOTE_CHARS:
        return text
    return text[:limit] + f"\n... [{len(text) - limit} more characters cut]"


def _failure(message: str, name: str | None, outcome: str = "execution") -> ToolResult:
    message = valid_text(message)  # error texts end up in tokens and in JSONL records
    return ToolResult(
        text=message,
        images=[],
        error=message.removeprefix("Error: ").splitlines()[0],
        name=name,
        outcome=outcome,
    )


class ToolSession:
    """One rollout's tools. Holds the rollout's images (originals + zoom crops, in order), its python
    sandbox (started on the first python call) and the search index (looked up on the first search call:
    `search_index` is a SearchIndex, a path for `search.load_index`, or None for the suites' built-in
    corpus; either way loaded once per process).

    Every text a tool gives back, results and errors alike (python output, exceptions and tracebacks,
    search results, messages about malformed calls), leaves through `_respond`, which caps it at
    `python_max_output_chars` (`cap_text`): one cap for everything that reaches the context."""

    def __init__(
        self,
        images: list[Image.Image],
        *,
        tools: Sequence[str] = TOOL_NAMES,
        max_calls: int = 4,
        max_image_pixels: int = 40_000_000,
        python_timeout_s: float = 12.0,
        python_memory_mb: int = 1024,
        python_max_output_chars: int = 2000,
        python_allow_weak_isolation: bool = False,
        search_index: str | PathLike | SearchIndex | None = None,
    ):
        self.tools = tuple(_check_names(tools))
        self.images: list[Image.Image] = list(images)
        self.max_calls = max_calls
        self.max_image_pixels = max_image_pixels
        self.max_response_chars = python_max_output_chars
        self.num_calls = 0
        self._python_options = {
            "timeout_s": python_timeout_s,
            "memory_mb": python_memory_mb,
            "max_output_chars": python_max_output_chars,
            "allow_weaker": python_allow_weak_isolation,
            "preload": PRELOAD,  # the documented helpers (python_helpers.py)
        }
        self._sandbox: Sandbox | None = None
        self._search_source = search_index
        self._closed = False

    def execute(self, raw: str) -> ToolResult:
        """Parse, validate and run one tool call. Total: every problem becomes an error result. Every call,
        valid or not, counts toward `max_calls`."""
        return self._respond(self._execute(raw))

    def unopened_call(self) -> ToolResult:
        """The response to a lone `</tool_call>` (the engine finds those; no tool runs, no call counts)."""
        return self._respond(_failure(UNOPENED_CALL, None, "format"))

    def _respond(self, result: ToolResult) -> ToolResult:
        """The one exit of every tool text: capped (class doc)."""
        result.text = cap_text(result.text, self.max_response_chars)
        if result.error is not None:
            result.error = cap_text(result.error, self.max_response_chars)
        return result

    def _execute(self, raw: str) -> ToolResult:
        name: str | None = None
        try:
            self.num_calls += 1
            if self._closed:
                return _failure("Error: the tool session is closed.", None)
            if self.num_calls > self.max_calls:
                return _failure(
                    f"Error: the tool call limit ({self.max_calls} per episode) has been reached; "
                    "give your final answer now.",
                    None,
                )
            name, call = _parse(raw)
            if isinstance(call, str):
                return _failure(call, name, "format")
            if call.name not in self.tools:
                available = ", ".join(self.tools) if self.tools else "none"
                return _failure(
                    f'Error: the tool "{call.name}" is not available here; available tools: {available}.',
                    name,
                    "format",
                )
            if call.name == "image_zoom_in":
                return self._zoom(call.arguments)
            if call.name == "search":
                return self._search(call.arguments)
            return self._python(call.arguments)
        except Exception as exc:  # noqa: BLE001 - the contract is that execute never raises
            return _failure(f"Error: the tool failed unexpectedly ({type(exc).__name__}).", name)

    def _zoom(self, args: dict) -> ToolResult:
        name = "image_zoom_in"
        idx = args.get("img_idx", 0)
        if idx >= len(self.images):
            return _failure(
                f"Error: image_zoom_in: img_idx {_show(idx)} is out of range; there are {len(self.images)} "
                f"image(s), numbered 0 to {len(self.images) - 1}.",
                name,
            )
        x1, y1, x2, y2 = args["bbox_2d"]
        if not (x1 < x2 and y1 < y2):  # well-formed (4 numbers in range), but an empty region: a miss
            return _failure(
                'Error: image_zoom_in: "bbox_2d" must have x1 < x2 and y1 < y2, got '
                f"{_show(args['bbox_2d'])}.",
                name,
            )
        img = self.images[idx]
        width, height = img.size
        left, right = (min(width, math.floor(v * width / 1000 + 0.5)) for v in (x1, x2))
        top, bottom = (min(height, math.floor(v * height / 1000 + 0.5)) for v in (y1, y2))
        crop_w, crop_h = right - left, bottom - top
        if crop_w < 1 or crop_h < 1:
            return _failure(
                f"Error: image_zoom_in: the region {_show(args['bbox_2d'])} of image {idx} "
                f"({width}x{height} pixels) is empty: it is less than one pixel wide or high.",
                name,
            )
        if max(crop_w, crop_h) > MAX_CROP_ASPECT_RATIO * min(crop_w, crop_h):
            return _failure(
                f"Error: image_zoom_in: the region is {crop_w}x{crop_h} pixels; its aspect ratio must "
                f"be at most {MAX_CROP_ASPECT_RATIO}:1.",
                name,
            )
        crop = img.crop((left, top, right, bottom))
        try:
            check_image(crop, self.max_image_pixels)
            crop = to_rgb(crop)
        except (ValueError, OSError) as exc:  # OSError: a source image whose pixels cannot be read
            return _failure(f"Error: image_zoom_in: the crop of image {idx} cannot be used ({exc}).", name)
        self.images.append(crop)
        label = _clean(args["label"])
        what = f'"{label}"' if label else "the region"
        return ToolResult(
            text=f"Zoomed in on {what} (image {len(self.images) - 1}).", images=[crop], name=name
        )

    def _python(self, args: dict) -> ToolResult:
        if self._sandbox is None:
            self._sandbox = Sandbox(**self._python_options)
        result = self._sandbox.run(args["code"], self.images)
        outcome = "ok" if result.error is None else "execution"
        return ToolResult(text=result.text, images=[], error=result.error, name="python", outcome=outcome)

    def _index(self) -> SearchIndex:
        source = self._search_source
        if isinstance(source, SearchIndex):
            return source
        return builtin_index() if source is None else load_index(source)

    def _search(self, args: dict) -> ToolResult:
        name = "search"
        try:
            index = self._index()
        except (OSError, ValueError) as exc:
            return _failure(f"Error: search: no document index is available ({_clean(str(exc))}).", name)
        if len(index) == 0:
            return _failure("Error: search: the document index is empty.", name)
        text = index.render(args["query"], args.get("max_results", DEFAULT_MAX_RESULTS))
        return ToolResult(text=text, images=[], name=name)

    def close(self) -> None:
        """Kill the sandbox process and remove its scratch dir. Idempotent."""
        self._closed = True
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def __enter__(self) -> ToolSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
