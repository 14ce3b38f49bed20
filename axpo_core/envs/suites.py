r"""Seeded synthetic image task suites with verifiers and oracle trajectories (DESIGN §6).

Each suite draws its questions with Pillow from a per-question random stream, so question ``i``
of ``generate(n, seed)`` depends only on ``(suite, seed, i)``. Some suites need a tool by
construction (the policy sees every image at ≤ 128×128, DESIGN §3):

- ``zoom_detail`` — the answer is the colour of a 4-pixel mark inside a black frame of a ~1000 px
  image: invisible at 128×128, clear in a 128×128 view of the frame's crop (``image_zoom_in``).
- ``python_count`` — count (or add / subtract counts of) small coloured dots: too many and too
  small to count at 128×128; the oracle counts connected components with ``python``.
- ``control_shapes`` — the colour or kind of one big shape: solvable from the low-resolution
  image alone, no tool.

Nine suites mirror the skills of the paper's nine benchmarks (``MIRRORS``, in its table's order in
``BENCHMARK_SUITES``); ``control_shapes`` stays as the no-tool control:

- reasoning (``python``): ``python_count`` (MathVision), ``dyna_chart`` (DynaMath: arithmetic over
  bar values that are only a pixel or two per unit at 128×128; the oracle reads the pixels),
  ``math_diagram`` (Math-VR: area or perimeter of a figure with big labels; python optional).
- perception (``image_zoom_in``): ``zoom_detail`` (V*), ``visual_probe`` (VisualProbe: which tiny
  shape is inside a cyan ring), ``hr_text_4k`` / ``hr_text_8k`` (HR-Bench-4K/8K: the text of a
  small red-framed sign; the 8K text is half the 4K's size).
- search (``search``): ``search_entity`` (HR-MMSearch: a fact about the organisation whose emblem
  the image shows) and ``search_fact`` (MMSearch: a fact about a named organisation). Both draw
  from a fixed fictional world (:func:`world`) whose documents are the built-in search index
  (:func:`corpus_documents`), so the facts exist nowhere else.

An oracle returns the assistant turns of a correct trajectory (without ``<|im_end|>``) in the
rollout format: ``<think>…</think>`` then a ``<tool_call>`` block or ``<answer>\boxed{…}</answer>``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from PIL import Image, ImageDraw, ImageFont

from axpo_core import rewards
from axpo_core.rewards import AnswerType

__all__ = [
    "BENCHMARK_SUITES",
    "COLOURS",
    "MIRRORS",
    "SUITES",
    "ControlShapes",
    "DynaChart",
    "Entity",
    "HRText4K",
    "HRText8K",
    "MathDiagram",
    "PythonCount",
    "Question",
    "RenderedSuite",
    "SearchEntity",
    "SearchFact",
    "Suite",
    "UnknownSuiteError",
    "VisualProbe",
    "ZoomDetail",
    "answer_turn",
    "corpus_documents",
    "format_options",
    "get_suite",
    "question_by_id",
    "tool_call_turn",
    "world",
]

Colour = tuple[int, int, int]
Box = tuple[int, int, int, int]  # pixel box, half-open: (x0, y0, x1, y1)

#: Named saturated colours. Every pair differs by ≥ 60 in some channel, so a per-channel
#: tolerance of 40 (with ±8 jitter) never confuses two of them.
COLOURS: dict[str, Colour] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}


@dataclass(frozen=True)
class Question:
    """One task instance. Images and meta are excluded from ==/hash (the id already identifies it)."""

    question_id: str
    suite: str
    text: str
    images: tuple[Image.Image, ...] = field(compare=False)
    answer: str
    answer_type: AnswerType
    choices: tuple[str, ...] | None = None
    tool: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------- turn formatting


def tool_call_turn(think: str, name: str, arguments: dict[str, Any]) -> str:
    """An assistant turn that thinks, then calls ``name`` (the exact format the parser expects)."""
    call = json.dumps({"name": name, "arguments": arguments})
    return f"<think>{think}</think>\n<tool_call>\n{call}\n</tool_call>"


def answer_turn(think: str, answer: str) -> str:
    """The final assistant turn: thinking, then the boxed answer."""
    return f"<think>{think}</think>\n<answer>\\boxed{{{answer}}}</answer>"


def format_options(choices: Sequence[str]) -> str:
    """Options as "(A) red (B) blue ...": the letters :func:`rewards.match_choice` accepts."""
    return " ".join(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))


def _letter(choices: Sequence[str], answer: str) -> str:
    return chr(ord("A") + list(choices).index(answer))


# --------------------------------------------------------------------------- the base class


class Suite(ABC):
    """A family of generated questions with a verifier and oracle trajectories."""

    name: ClassVar[str]
    description: ClassVar[str]
    tool: ClassVar[str | None] = None
    #: True when the tool helps but is not needed: ``no_tool_oracle`` then reasons to the right answer.
    tool_optional: ClassVar[bool] = False

    def generate(self, n: int, seed: int) -> list[Question]:
        """``n`` questions; deterministic in ``seed``, and question ``i`` is the same whatever ``n``."""
        _check_n(n)
        return [self._make(seed, i) for i in range(n)]

    @abstractmethod
    def _make(self, seed: int, index: int) -> Question:
        """Question ``index`` of the stream seeded by ``seed`` (its own rng: independent of the others)."""

    @abstractmethod
    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """Assistant turns of a correct trajectory: tool-call turn(s), then the final answer turn."""

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A single final-answer turn without tools (SFT "pure reasoning"); tool suites may guess."""
        if question.tool is None:
            return self.oracle(question, rng)
        raise NotImplementedError(f"{type(self).__name__} has no tool-free oracle")

    def verify(self, question: Question, response_text: str) -> float:
        """Binary reward of a full response to ``question``."""
        return rewards.score_question(response_text, question)

    # helpers shared by the suites below
    def _question_rng(self, seed: int, index: int) -> random.Random:
        return random.Random(f"{self.name}:{seed}:{index}")

    def _question_id(self, seed: int, index: int) -> str:
        return f"{self.name}-{seed}-{index}"

    @staticmethod
    def _turn_rng(question: Question, rng: random.Random | None) -> random.Random:
        """The caller's rng, or a per-question one so that oracles are reproducible by default."""
        return rng if rng is not None else random.Random(f"oracle:{question.question_id}")


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


# --------------------------------------------------------------------------- drawing helpers


def _blend(a: Colour, b: Colour, t: float) -> Colour:
    """``t`` of ``a`` over ``1 - t`` of ``b``."""
    return tuple(round(t * x + (1 - t) * y) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _muted(rng: random.Random, lo: int = 110, hi: int = 225) -> Colour:
    """A low-saturation grey, so that clutter never looks like one of the named colours."""
    g = rng.randint(lo, hi)
    return tuple(min(255, max(0, g + rng.randint(-12, 12))) for _ in range(3))  # type: ignore[return-value]


def _jitter(c: Colour, rng: random.Random, amount: int = 8) -> Colour:
    return tuple(min(255, max(0, x + rng.randint(-amount, amount))) for x in c)  # type: ignore[return-value]


def _draw_clutter(draw: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int, count: int) -> None:
    """Grey rectangles, ellipses and lines: a busy background that hides nothing in colour."""
    for _ in range(count):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randint(20, 220), y0 + rng.randint(20, 220)
        kind = rng.random()
        if kind < 0.4:
            draw.rectangle((x0, y0, x1, y1), fill=_muted(rng))
        elif kind < 0.75:
            draw.ellipse((x0, y0, x1, y1), fill=_muted(rng))
        else:
            draw.line((x0, y0, rng.randrange(w), rng.randrange(h)), fill=_muted(rng), width=rng.randint(1, 4))


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _grow(box: Box, m: int) -> Box:
    return (box[0] - m, box[1] - m, box[2] + m, box[3] + m)


def _fill(draw: ImageDraw.ImageDraw, box: Box, colour: Colour) -> None:
    draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=colour)


def _to_bbox_1000(box: Box, w: int, h: int) -> list[int]:
    """A pixel box as ``image_zoom_in`` coordinates (0–1000), rounded outwards and clamped."""
    x0, y0, x1, y1 = box
    return [
        max(0, math.floor(x0 * 1000 / w)),
        max(0, math.floor(y0 * 1000 / h)),
        min(1000, math.ceil(x1 * 1000 / w)),
        min(1000, math.ceil(y1 * 1000 / h)),
    ]


def _where(cx: float, cy: float, w: int, h: int) -> str:
    """Where a point lies, in words ("top left", "centre", ...), for the oracle's thinking."""
    row = ("top", "middle", "bottom")[min(2, int(3 * cy / h))]
    col = ("left", "centre", "right")[min(2, int(3 * cx / w))]
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


# --------------------------------------------------------------------------- zoom_detail


class ZoomDetail(Suite):
    """The colour of a tiny mark inside a black frame: visible only through ``image_zoom_in``.

    The frame (10–13 px border, 96–128 px wide, in a 896–1024 px cluttered image) stays visible
    at 128×128. The 4 px mark inside it covers a fraction of one low-resolution pixel, and the
    frame's inside is mottled with pale blotches of all the candidate colours, so at low
    resolution the mark's faint tint looks like one more blotch. In the crop of the frame,
    downscaled to ≤ 128×128, the mark is a solid patch of its colour. Marks of other colours are
    scattered outside the frame, so "find the coloured speck" without the frame does not work.
    """

    name = "zoom_detail"
    description = "Colour of a tiny square inside a black frame; needs image_zoom_in on the frame."
    tool = "image_zoom_in"

    FRAME: ClassVar[Colour] = (15, 15, 15)
    MARK_SIZE: ClassVar[int] = 4
    BLOTCH_TINT: ClassVar[tuple[float, float]] = (0.15, 0.45)  # share of a candidate colour in a blotch
    BLOTCH_AREA: ClassVar[int] = 50  # one blotch per this many pixels of the frame's inside
    BLOTCH_SIZE: ClassVar[tuple[int, int]] = (6, 12)
    N_CHOICES: ClassVar[int] = 4

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        w, h = rng.randint(896, 1024), rng.randint(896, 1024)
        image = Image.new("RGB", (w, h), _muted(rng, 190, 235))
        draw = ImageDraw.Draw(image)
        _draw_clutter(draw, rng, w, h, rng.randint(40, 60))

        side, border = rng.randint(96, 128), rng.randint(10, 13)
        fx, fy = rng.randint(24, w - side - 24), rng.randint(24, h - side - 24)
        frame: Box = (fx, fy, fx + side, fy + side)

        # Distractor marks, well outside any crop of the frame the oracle (or a decent policy) takes.
        keep_out = _grow(frame, 40)
        s = self.MARK_SIZE
        for _ in range(rng.randint(10, 20)):
            for _attempt in range(50):
                x, y = rng.randint(4, w - s - 4), rng.randint(4, h - s - 4)
                if not _overlaps((x, y, x + s, y + s), keep_out):
                    _fill(draw, (x, y, x + s, y + s), rng.choice(list(COLOURS.values())))
                    break

        inside_colour = _muted(rng, 228, 242)
        draw.rectangle(
            (fx, fy, frame[2] - 1, frame[3] - 1), fill=inside_colour, outline=self.FRAME, width=border
        )
        inside: Box = _grow(frame, -border)
        area = (inside[2] - inside[0]) * (inside[3] - inside[1])
        for _ in range(area // self.BLOTCH_AREA):
            d = rng.randint(*self.BLOTCH_SIZE)
            x, y = rng.randint(inside[0], inside[2] - d), rng.randint(inside[1], inside[3] - d)
            tint = _blend(rng.choice(list(COLOURS.values())), inside_colour, rng.uniform(*self.BLOTCH_TINT))
            draw.ellipse((x, y, x + d - 1, y + d - 1), fill=tint)

        colour = rng.choice(list(COLOURS))
        mx, my = rng.randint(inside[0] + 8, inside[2] - 8 - s), rng.randint(inside[1] + 8, inside[3] - 8 - s)
        mark: Box = (mx, my, mx + s, my + s)
        _fill(draw, mark, COLOURS[colour])

        others = rng.sample([c for c in COLOURS if c != colour], self.N_CHOICES - 1)
        choices = [colour, *others]
        rng.shuffle(choices)
        text = (
            "There is a black square frame in the image with a tiny coloured square inside it. "
            f"What colour is that tiny square? Options: {format_options(choices)}. "
            "Answer with the colour name."
        )
        meta = {
            "image_size": [w, h],
            "frame_px": list(frame),
            "mark_px": list(mark),
            "mark_rgb": list(COLOURS[colour]),
            "bbox_2d": _to_bbox_1000(_grow(frame, 6), w, h),
            "where": _where((frame[0] + frame[2]) / 2, (frame[1] + frame[3]) / 2, w, h),
        }
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=text,
            images=(image,),
            answer=colour,
            answer_type="choice",
            choices=tuple(choices),
            tool=self.tool,
            meta=meta,
        )

    _ZOOM_THINK = (
        "The black frame is in the {where} of the image, but the square inside it is too small to make "
        "out at this resolution, so I zoom in on the frame.",
        "I can see a black frame in the {where}. Its contents are only a few pixels wide here; zooming "
        "in on it should show the square's colour.",
        "The detail I need sits inside the black frame at the {where} and is far too small to see. "
        "Let me zoom in on the frame.",
    )
    _ANSWER_THINK = (
        "Zoomed in, the small square inside the frame is clearly {colour}.",
        "The crop shows the tiny square inside the frame: it is {colour}, option ({letter}).",
        "In the zoomed view the square in the frame is {colour}.",
    )
    _GUESS_THINK = (
        "The square inside the black frame is too small to make out at this resolution; my best guess "
        "is {colour}.",
        "I cannot resolve the tiny square in the frame, so I guess {colour}.",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        w, h = question.meta["image_size"]
        margin = rng.randint(4, 10)  # varied crops: all contain the frame and no distractor mark
        bbox = _to_bbox_1000(_grow(tuple(question.meta["frame_px"]), margin), w, h)  # type: ignore[arg-type]
        label = rng.choice(("frame", "black frame", "square in the frame"))
        zoom = tool_call_turn(
            rng.choice(self._ZOOM_THINK).format(where=question.meta["where"]),
            "image_zoom_in",
            {"bbox_2d": bbox, "label": label, "img_idx": 0},
        )
        letter = _letter(question.choices or (), question.answer)
        final = rng.choice(self._ANSWER_THINK).format(colour=question.answer, letter=letter)
        return [zoom, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A blind guess among the options: right about 1 time in ``N_CHOICES``."""
        rng = self._turn_rng(question, rng)
        guess = rng.choice(question.choices or (question.answer,))
        return [answer_turn(rng.choice(self._GUESS_THINK).format(colour=guess), guess)]


# --------------------------------------------------------------------------- python_count

# Kept short on purpose: the policy writes this code token by token, within a turn's token budget.
_COUNT_CODE = """px = _pil_images[0].convert("RGB").load()
W, H = _pil_images[0].size

def count_dots(c):
    todo = {(x, y) for y in range(H) for x in range(W) if max(abs(a - b) for a, b in zip(px[x, y], c)) < 40}
    n = 0
    while todo:
        n += 1
        stack = [todo.pop()]
        while stack:
            x, y = stack.pop()
            for p in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if p in todo:
                    todo.remove(p)
                    stack.append(p)
    return n
"""


class PythonCount(Suite):
    """Counts of small coloured dots (one colour, the sum of two, or a difference): needs ``python``.

    15–40 non-touching dots (radius 4–8 px, ≥ 4 px apart, colours jittered ±8 per channel) on a
    384–512 px image: at 128×128 a dot is one or two blurred pixels, so counting by eye fails.
    """

    name = "python_count"
    description = "Count coloured dots (or add/subtract two counts); needs python."
    tool = "python"

    BACKGROUND: ClassVar[Colour] = (245, 245, 242)

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        w, h = rng.randint(384, 512), rng.randint(384, 512)
        image = Image.new("RGB", (w, h), self.BACKGROUND)
        draw = ImageDraw.Draw(image)
        present = rng.sample(list(COLOURS), rng.randint(3, 5))
        counts = dict.fromkeys(present, 0)
        placed: list[tuple[int, int, int]] = []
        for _ in range(rng.randint(15, 40)):
            r = rng.randint(4, 8)
            for _attempt in range(200):
                x, y = rng.randint(r + 2, w - r - 3), rng.randint(r + 2, h - r - 3)
                if all(math.hypot(x - px, y - py) >= r + pr + 4 for px, py, pr in placed):
                    colour = rng.choice(present)
                    draw.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(COLOURS[colour], rng))
                    placed.append((x, y, r))
                    counts[colour] += 1
                    break

        seen = [c for c in present if counts[c] > 0]
        kind = rng.choices(("count", "sum", "diff"), weights=(2, 1, 1))[0]
        if kind == "count" or len(seen) < 2:
            kind, targets = "count", [rng.choice(seen)]
            value = counts[targets[0]]
            text = f"How many {targets[0]} dots are in the image?"
        else:
            targets = rng.sample(seen, 2)
            a, b = targets
            if kind == "sum":
                value = counts[a] + counts[b]
                text = f"How many dots in the image are either {a} or {b}?"
            else:
                value = counts[a] - counts[b]
                text = f"What is the number of {a} dots minus the number of {b} dots in the image?"
        text += " Answer with a number."
        meta = {
            "kind": kind,
            "targets": targets,
            "counts": counts,
            "n_dots": len(placed),
            "image_size": [w, h],
        }
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=text,
            images=(image,),
            answer=str(value),
            answer_type="numeric",
            tool=self.tool,
            meta=meta,
        )

    @staticmethod
    def code(question: Question) -> str:
        """Python that prints the answer, computed from ``_pil_images[0]`` alone (no numpy)."""
        targets = question.meta["targets"]
        lines = [_COUNT_CODE]
        for t in targets:
            lines.append(f"{t} = count_dots({COLOURS[t]})")
        op = {"count": "", "sum": " + ", "diff": " - "}[question.meta["kind"]]
        lines.append(f"print({op.join(targets)})")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _what(question: Question) -> str:
        targets = question.meta["targets"]
        return f"the {targets[0]} dots" if len(targets) == 1 else f"the {targets[0]} and {targets[1]} dots"

    _CODE_THINK = (
        "There are many small dots of several colours, too many to count reliably by eye at this "
        "resolution, so I count {what} with code.",
        "Counting {what} by eye is error-prone here; I will count them as connected blobs of colour "
        "in Python.",
        "The dots are tiny at this resolution. I'll let code count {what} as connected components.",
    )
    _ANSWER_THINK = (
        "The script printed {value}, so the answer is {value}.",
        "The code counted the blobs and printed {value}.",
        "According to the program's output the answer is {value}.",
    )
    _GUESS_THINK = (
        "Counting {what} by eye at this resolution, I estimate the answer is about {value}.",
        "The dots are small, but looking at {what} my best estimate is {value}.",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        what = self._what(question)
        think = rng.choice(self._CODE_THINK).format(what=what)
        call = tool_call_turn(think, "python", {"code": self.code(question)})
        final = rng.choice(self._ANSWER_THINK).format(value=question.answer)
        return [call, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """An eyeballed estimate: the true value off by up to 3, so right about 1 time in 7."""
        rng = self._turn_rng(question, rng)
        guess = int(question.answer) + rng.randint(-3, 3)
        if question.meta["kind"] != "diff":
            guess = max(0, guess)
        think = rng.choice(self._GUESS_THINK).format(what=self._what(question), value=guess)
        return [answer_turn(think, str(guess))]


# --------------------------------------------------------------------------- control_shapes


def _shape_points(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of "radius" ``r`` centred at (cx, cy)."""
    if kind == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if kind == "star":
        radii, n, start = (r, r * 0.45), 10, -math.pi / 2
    else:
        radii, n, start = (r,), {"triangle": 3, "diamond": 4, "hexagon": 6}[kind], -math.pi / 2
    return [
        (
            cx + radii[i % len(radii)] * math.cos(start + 2 * math.pi * i / n),
            cy + radii[i % len(radii)] * math.sin(start + 2 * math.pi * i / n),
        )
        for i in range(n)
    ]


class ControlShapes(Suite):
    """The colour or the kind of one big shape: answerable from the 128×128 view, no tool needed."""

    name = "control_shapes"
    description = "Colour or kind of one large shape; solvable without tools (control)."
    tool = None

    SHAPES: ClassVar[tuple[str, ...]] = ("circle", "square", "triangle", "diamond", "star", "hexagon")
    N_CHOICES: ClassVar[int] = 4

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        w, h = rng.randint(224, 384), rng.randint(224, 384)
        image = Image.new("RGB", (w, h), _muted(rng, 215, 250))
        draw = ImageDraw.Draw(image)
        colour, shape = rng.choice(list(COLOURS)), rng.choice(self.SHAPES)
        r = min(w, h) * rng.uniform(0.28, 0.4)
        cx, cy = rng.uniform(r + 4, w - r - 4), rng.uniform(r + 4, h - r - 4)
        fill = _jitter(COLOURS[colour], rng)
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(_shape_points(shape, cx, cy, r), fill=fill)

        asked = rng.choice(("colour", "shape"))
        pool = list(COLOURS) if asked == "colour" else list(self.SHAPES)
        answer = colour if asked == "colour" else shape
        choices = [answer, *rng.sample([p for p in pool if p != answer], self.N_CHOICES - 1)]
        rng.shuffle(choices)
        if asked == "colour":
            text = f"What colour is the large shape in the image? Options: {format_options(choices)}. "
            text += "Answer with the colour name."
        else:
            text = f"Which shape is shown in the image? Options: {format_options(choices)}. "
            text += "Answer with the shape name."
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=text,
            images=(image,),
            answer=answer,
            answer_type="choice",
            choices=tuple(choices),
            tool=None,
            meta={"asked": asked, "colour": colour, "shape": shape, "image_size": [w, h]},
        )

    _THINK = (
        "The image shows one large {colour} {shape}, so the {asked} is {answer}.",
        "There is a single big {shape} in the image, coloured {colour}. The answer is {answer}.",
        "I see one {colour} {shape} filling much of the image; its {asked} is {answer}, option ({letter}).",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        think = rng.choice(self._THINK).format(
            colour=question.meta["colour"],
            shape=question.meta["shape"],
            asked=question.meta["asked"],
            answer=question.answer,
            letter=_letter(question.choices or (), question.answer),
        )
        return [answer_turn(think, question.answer)]


# --------------------------------------------------------------------------- shared by the suites below


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled FreeType font (no system fonts needed) at ``size`` pixels."""
    return ImageFont.load_default(size=size)


def _place(rng: random.Random, size: tuple[int, int], area: tuple[int, int], avoid: list[Box]) -> Box | None:
    """A random ``size`` box inside ``area`` (with a 16 px margin) that overlaps none of ``avoid``."""
    (bw, bh), (w, h) = size, area
    for _attempt in range(100):
        x, y = rng.randint(16, w - bw - 16), rng.randint(16, h - bh - 16)
        box = (x, y, x + bw, y + bh)
        if not any(_overlaps(box, a) for a in avoid):
            return box
    return None


def _polygon_area(points: list[tuple[float, float]]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))) / 2


#: Radius factor per shape so that all shapes of "radius" r cover the area of a circle of radius r: at
#: low resolution a tiny shape is a blob whose darkness then says nothing about its kind.
_EQUAL_AREA = {
    kind: 1.0 if kind == "circle" else math.sqrt(math.pi / _polygon_area(_shape_points(kind, 0, 0, 1)))
    for kind in ("circle", "square", "triangle", "diamond", "star", "hexagon")
}


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: Colour) -> None:
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_shape_points(kind, cx, cy, r), fill=fill)


class RenderedSuite(Suite):
    """A suite whose image is a pure function of the question's meta and its answer (``render``), so a
    test can redraw the same scene with another option and compare what the model would see."""

    @abstractmethod
    def render(self, meta: dict[str, Any], answer: str) -> Image.Image:
        """The question's image with ``answer`` as the hidden detail (everything else from ``meta``);
        ``answer=""`` draws the scene without the detail."""


# --------------------------------------------------------------------------- hr_text_4k / hr_text_8k

_WORDS = (
    "amber cedar cloud ember frost glass honey lemon lunar maple north ocean orbit piano quill raven "
    "river sable stone tiger tulip vapor wheat zebra"
).split()


class HRText(RenderedSuite):
    """What a tiny sign inside a red frame says (HR-Bench-like): readable only through ``image_zoom_in``.

    A ~1000 px cluttered image holds several small signs in coloured frames; the one in the red frame
    carries the answer, the others carry the other options (and more), so reading "some text" is not
    enough. The frame's border stays visible at 128×128; the text is 1–2 low-resolution pixels tall.
    Every sign has the same size whatever its text, so the sign's shape leaks nothing.
    """

    tool = "image_zoom_in"
    FONT_SIZE: ClassVar[tuple[int, int]]
    BORDER: ClassVar[tuple[int, int]]
    PAD: ClassVar[int]
    KINDS: ClassVar[tuple[str, ...]]
    N_CHOICES: ClassVar[int] = 4
    MARGIN: ClassVar[tuple[int, int]]  # around the sign in the oracle's crop
    KEEP_OUT: ClassVar[int] = 40  # distractor signs stay this far from the red one (beyond any crop's margin)
    TARGET_FRAME: ClassVar[str] = "red"
    OTHER_FRAMES: ClassVar[tuple[str, ...]] = ("blue", "green", "purple")
    INK: ClassVar[Colour] = (20, 20, 20)
    PAPER: ClassVar[Colour] = (246, 246, 240)

    @staticmethod
    def _texts(rng: random.Random, kind: str, n: int) -> list[str]:
        if kind == "word":
            return rng.sample(_WORDS, n)
        return [str(v) for v in rng.sample(range(100, 1000), n)]

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        w, h = rng.randint(896, 1024), rng.randint(896, 1024)
        kind = rng.choice(self.KINDS)
        choices = self._texts(rng, kind, self.N_CHOICES)
        answer = choices[0]
        rng.shuffle(choices)
        extra = [t for t in self._texts(rng, kind, self.N_CHOICES + 3) if t not in choices][:3]
        size = rng.randint(*self.FONT_SIZE)
        border = rng.randint(*self.BORDER)
        font = _font(size)
        text_w = max(font.getbbox(t)[2] for t in choices + extra)
        sign = (text_w + 2 * self.PAD + 2 * border, size + 2 * self.PAD + 2 * border)
        target = _place(rng, sign, (w, h), [])
        assert target is not None
        panels = [[*target, self.TARGET_FRAME, answer]]
        avoid = [_grow(target, self.KEEP_OUT)]
        for text in [c for c in choices if c != answer] + extra:
            box = _place(rng, sign, (w, h), avoid)
            if box is not None:
                panels.append([*box, rng.choice(self.OTHER_FRAMES), text])
                avoid.append(_grow(box, 8))
        meta = {
            "image_size": [w, h],
            "background": list(_muted(rng, 190, 235)),
            "clutter_seed": rng.getrandbits(32),
            "font_size": size,
            "border": border,
            "panels": panels,  # [x0, y0, x1, y1, frame colour, text]; the first is the red one
            "target_px": list(target),
            "where": _where((target[0] + target[2]) / 2, (target[1] + target[3]) / 2, w, h),
        }
        text = (
            "Somewhere in the image there is a small sign in a red frame. What does the sign say? "
            f"Options: {format_options(choices)}. Answer with the option's text."
        )
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=text,
            images=(self.render(meta, answer),),
            answer=answer,
            answer_type="choice",
            choices=tuple(choices),
            tool=self.tool,
            meta=meta,
        )

    def render(self, meta: dict[str, Any], answer: str) -> Image.Image:
        w, h = meta["image_size"]
        image = Image.new("RGB", (w, h), tuple(meta["background"]))
        draw = ImageDraw.Draw(image)
        _draw_clutter(draw, random.Random(meta["clutter_seed"]), w, h, 50)
        font, border = _font(meta["font_size"]), meta["border"]
        for i, (x0, y0, x1, y1, frame, text) in enumerate(meta["panels"]):
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=self.PAPER, outline=COLOURS[frame], width=border)
            draw.text(((x0 + x1) / 2, (y0 + y1) / 2), answer if i == 0 else text, self.INK, font, "mm")
        return image

    _ZOOM_THINK = (
        "The red-framed sign is in the {where} of the image, but its text is far too small to read at "
        "this resolution, so I zoom in on it.",
        "I can make out a small sign with a red frame in the {where}. Its text is only a pixel or two "
        "tall here; zooming in should make it readable.",
        "Several small signs are scattered around; the red-framed one is in the {where}. Let me zoom in "
        "on it.",
    )
    _ANSWER_THINK = (
        'Zoomed in, the sign in the red frame clearly reads "{text}".',
        'The crop shows the red-framed sign: it says "{text}", option ({letter}).',
        'In the zoomed view the text on the sign is "{text}".',
    )
    _GUESS_THINK = (
        "The text on the red-framed sign is too small to read at this resolution; my best guess is {text}.",
        "I cannot read the tiny sign, so I guess {text}.",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        w, h = question.meta["image_size"]
        box = _grow(tuple(question.meta["target_px"]), rng.randint(*self.MARGIN))  # type: ignore[arg-type]
        zoom = tool_call_turn(
            rng.choice(self._ZOOM_THINK).format(where=question.meta["where"]),
            "image_zoom_in",
            {"bbox_2d": _to_bbox_1000(box, w, h), "label": rng.choice(("red sign", "sign")), "img_idx": 0},
        )
        letter = _letter(question.choices or (), question.answer)
        final = rng.choice(self._ANSWER_THINK).format(text=question.answer, letter=letter)
        return [zoom, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A blind guess among the options."""
        rng = self._turn_rng(question, rng)
        guess = rng.choice(question.choices or (question.answer,))
        return [answer_turn(rng.choice(self._GUESS_THINK).format(text=guess), guess)]


class HRText4K(HRText):
    """HR-Bench-4K-like: text about 11 px tall (font 15–17) on a ~1000 px image."""

    name = "hr_text_4k"
    description = "Text on a small red-framed sign in a large image; needs image_zoom_in (HR-Bench-4K-like)."
    FONT_SIZE = (15, 17)
    BORDER = (9, 11)
    PAD = 8
    MARGIN = (3, 10)
    KINDS = ("word", "number")


class HRText8K(HRText):
    """HR-Bench-8K-like: the same scene with a sign half the size (font 8–9, digits about 6 px tall)."""

    name = "hr_text_8k"
    description = (
        "A number on a tiny red-framed sign (half of hr_text_4k's); needs image_zoom_in (HR-Bench-8K-like)."
    )
    FONT_SIZE = (8, 9)
    BORDER = (8, 9)
    PAD = 5
    MARGIN = (8, 14)  # a crop of at least 48 px a side, which the processor does not shrink to 32
    KINDS = ("number",)


# --------------------------------------------------------------------------- visual_probe


class VisualProbe(RenderedSuite):
    """Which tiny object lies inside a thin cyan ring (VisualProbe-like): needs ``image_zoom_in``.

    Dozens of tiny dark shapes (all kinds, all the same colour and area) are scattered over a ~1000 px
    cluttered image; one sits inside the ring. At 128×128 each shape is a one-pixel speck, the ring a
    thin cyan circle; in the ring's crop the shape is a dozen pixels across.
    """

    name = "visual_probe"
    description = "Which tiny shape lies inside a thin cyan ring; needs image_zoom_in (VisualProbe-like)."
    tool = "image_zoom_in"

    SHAPES: ClassVar[tuple[str, ...]] = ("circle", "square", "triangle", "diamond", "star", "hexagon")
    RING: ClassVar[Colour] = (40, 185, 205)
    INSIDE: ClassVar[Colour] = (236, 236, 230)
    INK: ClassVar[Colour] = (45, 45, 50)
    SHAPE_RADIUS: ClassVar[tuple[float, float]] = (4.5, 5.5)  # equal-area radius of the tiny shapes
    N_CHOICES: ClassVar[int] = 4

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        w, h = rng.randint(896, 1024), rng.randint(896, 1024)
        radius, width = rng.randint(40, 56), rng.randint(8, 10)
        ring = _place(rng, (2 * radius, 2 * radius), (w, h), [])
        assert ring is not None
        cx, cy = (ring[0] + ring[2]) / 2, (ring[1] + ring[3]) / 2
        room = radius - width - 2 * self.SHAPE_RADIUS[1] - 4
        target = [cx + rng.uniform(-room, room) / 1.5, cy + rng.uniform(-room, room) / 1.5]
        r = rng.uniform(*self.SHAPE_RADIUS)
        choices = rng.sample(self.SHAPES, self.N_CHOICES)
        answer = choices[0]
        rng.shuffle(choices)
        specks, avoid = [], [_grow(ring, 40)]
        for _ in range(rng.randint(30, 50)):
            box = _place(rng, (20, 20), (w, h), avoid)
            if box is not None:
                kind = rng.choice(self.SHAPES)
                specks.append([kind, box[0] + 10, box[1] + 10, round(rng.uniform(*self.SHAPE_RADIUS), 2)])
                avoid.append(box)
        meta = {
            "image_size": [w, h],
            "background": list(_muted(rng, 190, 235)),
            "clutter_seed": rng.getrandbits(32),
            "ring_px": list(ring),
            "ring_width": width,
            "target": [round(target[0], 2), round(target[1], 2), round(r, 2)],
            "specks": specks,  # [shape, cx, cy, radius] outside the ring
            "where": _where(cx, cy, w, h),
        }
        text = (
            "There is a thin cyan ring in the image with one tiny object inside it. Which shape is that "
            f"object? Options: {format_options(choices)}. Answer with the shape name."
        )
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=text,
            images=(self.render(meta, answer),),
            answer=answer,
            answer_type="choice",
            choices=tuple(choices),
            tool=self.tool,
            meta=meta,
        )

    def render(self, meta: dict[str, Any], answer: str) -> Image.Image:
        w, h = meta["image_size"]
        image = Image.new("RGB", (w, h), tuple(meta["background"]))
        draw = ImageDraw.Draw(image)
        _draw_clutter(draw, random.Random(meta["clutter_seed"]), w, h, 50)
        for kind, x, y, r in meta["specks"]:
            _draw_shape(draw, kind, x, y, r * _EQUAL_AREA[kind], self.INK)
        x0, y0, x1, y1 = meta["ring_px"]
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=self.INSIDE, outline=self.RING, width=meta["ring_width"])
        x, y, r = meta["target"]
        if answer:
            _draw_shape(draw, answer, x, y, r * _EQUAL_AREA[answer], self.INK)
        return image

    _ZOOM_THINK = (
        "The thin cyan ring is in the {where} of the image; the object inside it is only a speck at this "
        "resolution, so I zoom in on the circle.",
        "I see a thin cyan ring in the {where}. Whatever is inside it is far too small to recognise here. "
        "Let me zoom in.",
        "There are many tiny specks; the one I need is inside the cyan ring at the {where}. I zoom in on it.",
    )
    _ANSWER_THINK = (
        "Zoomed in, the object inside the cyan circle is clearly a {shape}.",
        "The crop shows the inside of the ring: a small dark {shape}, option ({letter}).",
        "In the zoomed view the shape in the circle is a {shape}.",
    )
    _GUESS_THINK = (
        "The object inside the cyan circle is just a speck at this resolution; my best guess is a {shape}.",
        "I cannot make out the tiny shape in the ring, so I guess {shape}.",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        w, h = question.meta["image_size"]
        box = _grow(tuple(question.meta["ring_px"]), rng.randint(2, 12))  # type: ignore[arg-type]
        zoom = tool_call_turn(
            rng.choice(self._ZOOM_THINK).format(where=question.meta["where"]),
            "image_zoom_in",
            {
                "bbox_2d": _to_bbox_1000(box, w, h),
                "label": rng.choice(("cyan circle", "circle")),
                "img_idx": 0,
            },
        )
        letter = _letter(question.choices or (), question.answer)
        final = rng.choice(self._ANSWER_THINK).format(shape=question.answer, letter=letter)
        return [zoom, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A blind guess among the options."""
        rng = self._turn_rng(question, rng)
        guess = rng.choice(question.choices or (question.answer,))
        return [answer_turn(rng.choice(self._GUESS_THINK).format(shape=guess), guess)]


# --------------------------------------------------------------------------- dyna_chart

# Reads the bars off the pixels. Kept short: the policy must be able to write it within one turn.
_CHART_CODE = """p = _pil_images[0].convert("RGB").load()
W, H = _pil_images[0].size
top, base = [y for y in range(H) if sum(p[2, y]) < 100]
bar = lambda x, y: max(p[x, y]) - min(p[x, y]) > 80
v, x = [], 0
while x < W:
    if bar(x, base - 1):
        v.append(round({ymax} * sum(bar(x + 3, y) for y in range(top, base)) / (base - top)))
        while bar(x, base - 1):
            x += 1
    x += 1
print({expression})
"""


class DynaChart(Suite):
    """Arithmetic over the values of a bar chart (DynaMath-like): needs ``python`` to read exact values.

    4–7 bars on a 448–640 px chart whose axis runs from 0 (black baseline) to 20–60 (black top line):
    one unit is 5–20 px, about 1–5 px at 128×128, so reading exact values by eye fails. The oracle's
    code finds the two black lines in the leftmost columns and measures each bar's saturated pixels.
    """

    name = "dyna_chart"
    description = "Max-min, sum or difference of bar values in a bar chart; needs python (DynaMath-like)."
    tool = "python"

    LINE: ClassVar[Colour] = (0, 0, 0)
    GRID: ClassVar[Colour] = (215, 215, 215)
    YMAX: ClassVar[tuple[int, ...]] = (20, 30, 40, 50, 60)

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        w, h = rng.randint(448, 640), rng.randint(384, 512)
        image = Image.new("RGB", (w, h), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        ymax = rng.choice(self.YMAX)
        unit = (h - 110) // ymax
        base = h - 50
        top = base - ymax * unit
        n = rng.randint(4, 7)
        values = [rng.randint(1, ymax) for _ in range(n)]
        label_font = _font(max(16, h // 22))
        step = 5 if ymax <= 20 else 10
        for v in range(step, ymax, step):  # light grid lines with their values
            y = base - v * unit
            draw.line((44, y, w - 1, y), fill=self.GRID)
            draw.text((40, y), str(v), (90, 90, 90), label_font, "rm")
        for y, v in ((top, ymax), (base, 0)):
            draw.line((0, y, w - 1, y), fill=self.LINE)
            draw.text((40, y), str(v), self.LINE, label_font, "rm")
        gap = 14
        bar_w = min(44, (w - 60 - (n + 1) * gap) // n)
        x = 56 + gap
        for i, v in enumerate(values):
            draw.rectangle(
                (x, base - v * unit, x + bar_w - 1, base - 1), fill=rng.choice(list(COLOURS.values()))
            )
            draw.text((x + bar_w / 2, base + 8), chr(ord("A") + i), self.LINE, label_font, "mt")
            x += bar_w + gap

        kind = rng.choice(("range", "sum", "pair"))
        axis = f"The chart's vertical axis runs from 0 at the black baseline to {ymax} at the black top line."
        if kind == "range":
            value, expression = max(values) - min(values), "max(v) - min(v)"
            ask = "What is the value of the tallest bar minus the value of the shortest bar?"
        elif kind == "sum":
            value, expression = sum(values), "sum(v)"
            ask = "What is the sum of the values of all the bars?"
        else:
            i, j = rng.sample(range(n), 2)
            value, expression = values[i] - values[j], f"v[{i}] - v[{j}]"
            ask = f"What is the value of bar {chr(65 + i)} minus the value of bar {chr(65 + j)}?"
        meta = {"kind": kind, "values": values, "ymax": ymax, "expression": expression, "image_size": [w, h]}
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=f"{axis} {ask} Answer with a number.",
            images=(image,),
            answer=str(value),
            answer_type="numeric",
            tool=self.tool,
            meta=meta,
        )

    @staticmethod
    def code(question: Question) -> str:
        """Python that prints the answer, computed from ``_pil_images[0]`` alone."""
        return _CHART_CODE.format(ymax=question.meta["ymax"], expression=question.meta["expression"])

    _CODE_THINK = (
        "The bars' exact values are hard to read at this resolution: one unit is only a pixel or two. "
        "I measure the bar heights in pixels with code.",
        "Reading the bar values by eye would be error-prone, so I let Python measure each bar against the "
        "axis lines.",
        "I need exact bar values. I will scan the image in Python: the two black lines give the scale, the "
        "coloured columns the bars.",
    )
    _ANSWER_THINK = (
        "The script measured the bars and printed {value}, so the answer is {value}.",
        "The code printed {value}.",
        "According to the program's output the answer is {value}.",
    )
    _GUESS_THINK = (
        "Estimating the bar heights by eye, the answer is about {value}.",
        "Reading the chart roughly, I get {value}.",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        call = tool_call_turn(rng.choice(self._CODE_THINK), "python", {"code": self.code(question)})
        return [
            call,
            answer_turn(rng.choice(self._ANSWER_THINK).format(value=question.answer), question.answer),
        ]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """An eyeballed estimate: the true value off by up to 3, so right about 1 time in 7."""
        rng = self._turn_rng(question, rng)
        guess = str(int(question.answer) + rng.randint(-3, 3))
        return [answer_turn(rng.choice(self._GUESS_THINK).format(value=guess), guess)]


# --------------------------------------------------------------------------- math_diagram

_TRIPLES = ((3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (9, 40, 41))


class MathDiagram(Suite):
    """Area or perimeter of a rectangle or right triangle with labelled sides (Math-VR-like).

    The labels are big (readable at 128×128), so the answer is a matter of arithmetic: ``python`` helps
    with two-digit products but is not needed, and the tool-free oracle reasons to the right answer.
    """

    name = "math_diagram"
    description = (
        "Area or perimeter of a labelled rectangle or right triangle; python optional (Math-VR-like)."
    )
    tool = "python"
    tool_optional = True

    OUTLINE: ClassVar[Colour] = (20, 20, 20)

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        w, h = rng.randint(384, 512), rng.randint(384, 512)
        image = Image.new("RGB", (w, h), _muted(rng, 235, 252))
        draw = ImageDraw.Draw(image)
        font = _font(min(w, h) // 7)
        shape, asked = rng.choice(("rectangle", "triangle")), rng.choice(("area", "perimeter"))
        margin = min(w, h) // 7 + 24
        fill = _blend(rng.choice(list(COLOURS.values())), (255, 255, 255), 0.25)
        if shape == "rectangle":
            a, b = rng.sample(range(12, 100), 2)
            sides = [a, b]
        else:
            triple = rng.choice(_TRIPLES)
            k = rng.randint(max(1, -(-10 // triple[0])), 99 // triple[2])
            a, b, c = (k * s for s in triple)
            if rng.random() < 0.5:
                a, b = b, a
            sides = [a, b, c]
        scale = min((w - 2 * margin) / a, (h - 2 * margin) / b)
        dw, dh = a * scale, b * scale
        x0, y0 = (w - dw) / 2, (h - dh) / 2
        x1, y1 = x0 + dw, y0 + dh
        label = {"fill": self.OUTLINE, "font": font}
        if shape == "rectangle":
            draw.rectangle((x0, y0, x1, y1), fill=fill, outline=self.OUTLINE, width=4)
            draw.text(((x0 + x1) / 2, y1 + 10), str(a), anchor="mt", **label)
            draw.text((x0 - 12, (y0 + y1) / 2), str(b), anchor="rm", **label)
            value = a * b if asked == "area" else 2 * (a + b)
        else:
            right = rng.random() < 0.5  # the right angle at the bottom right (else bottom left)
            corner_x, far_x = (x1, x0) if right else (x0, x1)
            draw.polygon(
                [(corner_x, y1), (far_x, y1), (corner_x, y0)], fill=fill, outline=self.OUTLINE, width=4
            )
            s = 18 if right else -18
            draw.line(
                [(corner_x - s, y1), (corner_x - s, y1 - 18), (corner_x, y1 - 18)], fill=self.OUTLINE, width=3
            )
            draw.text(((x0 + x1) / 2, y1 + 10), str(a), anchor="mt", **label)
            draw.text(
                (corner_x + 12 if right else corner_x - 12, (y0 + y1) / 2),
                str(b),
                anchor="lm" if right else "rm",
                **label,
            )
            hx, hy = (corner_x + far_x) / 2, (y0 + y1) / 2  # the hypotenuse's middle; its label goes outwards
            nx, ny = (dh if not right else -dh), -dw
            away = 0.8 * font.size / math.hypot(nx, ny)
            draw.text((hx + nx * away, hy + ny * away), str(c), anchor="mm", **label)
            value = a * b // 2 if asked == "area" else a + b + c
        meta = {"shape": shape, "asked": asked, "sides": sides, "image_size": [w, h], "font_size": font.size}
        what = "a rectangle" if shape == "rectangle" else "a right triangle"
        text = f"The figure shows {what} with its side lengths labelled. What is its {asked}? "
        text += "Answer with a number."
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=text,
            images=(image,),
            answer=str(value),
            answer_type="numeric",
            tool=self.tool,
            meta=meta,
        )

    @staticmethod
    def _formula(question: Question) -> tuple[str, str, str]:
        """(what the sides are, the expression in Python, the same in words)."""
        sides, asked = question.meta["sides"], question.meta["asked"]
        if question.meta["shape"] == "rectangle":
            a, b = sides
            given = f"The rectangle's sides are labelled {a} and {b}."
            code = f"{a} * {b}" if asked == "area" else f"2 * ({a} + {b})"
        else:
            a, b, c = sides
            given = f"The right triangle's legs are {a} and {b}, and its hypotenuse is {c}."
            code = f"{a} * {b} // 2" if asked == "area" else f"{a} + {b} + {c}"
        return given, code, code.replace("//", "/").replace("*", "×")

    _CODE_THINK = (
        "{given} The {asked} is {words}; I compute it with Python to avoid an arithmetic slip.",
        "{given} So the {asked} is {words}. Let me calculate that in Python.",
    )
    _ANSWER_THINK = (
        "Python printed {value}, so the {asked} is {value}.",
        "The computation gives {value}.",
    )
    _MENTAL_THINK = (
        "{given} The {asked} is {words} = {value}.",
        "{given} Computing the {asked}: {words} = {value}.",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        given, code, words = self._formula(question)
        asked = question.meta["asked"]
        think = rng.choice(self._CODE_THINK).format(given=given, asked=asked, words=words)
        call = tool_call_turn(think, "python", {"code": f"print({code})"})
        final = rng.choice(self._ANSWER_THINK).format(value=question.answer, asked=asked)
        return [call, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """Pure reasoning: the labels are readable and the arithmetic is done in the thinking (correct)."""
        rng = self._turn_rng(question, rng)
        given, _, words = self._formula(question)
        think = rng.choice(self._MENTAL_THINK).format(
            given=given, asked=question.meta["asked"], words=words, value=question.answer
        )
        return [answer_turn(think, question.answer)]


# --------------------------------------------------------------------------- the fictional world (search)

_NAME_HEADS = (
    "Var Os Tal Bren Kel Mor Ast Fen Hal Jor Lun Nes Quar Ril Sel Tor Wen Yar Zel Cor Del Gar Pel Vin Sar "
    "Brom"
).split()
_NAME_TAILS = "holt by mere stead vik ander ling dale ton rath wyn gard ley mark ven rin".split()
_TOWN_HEADS = "Ash Bel Cal Dor Elm Fal Gil Har Ivel Kes Lor Mal Nor Pen Rad Sol Tam Ul Wes Yel".split()
_TOWN_TAILS = "ford mouth bury wick ham port".split()
_KINDS = (
    "Rowing Club",
    "Lantern Society",
    "Glassworks",
    "Observatory",
    "Choir",
    "Chess Club",
    "Weavers Guild",
    "Botanical Garden",
    "Brewery",
    "Theatre Company",
    "Cycling Club",
    "Printing House",
)
_FIRST_NAMES = (
    "Elsa Tomas Ingrid Piet Mara Anselm Livia Oskar Greta Bruno Hedda Casimir Ilse Rutger Nora Emil Sabine "
    "Lorenz Agnes Viktor"
).split()
_SURNAMES = (
    "Brandt Holm Castell Vogel Lindqvist Marek Sorensen Aalto Quist Falk Berger Nyberg Kessler Dahl Roos "
    "Weiss Lund Krantz Moll Strand"
).split()
_MASCOTS = (
    "heron otter badger lynx falcon stag hare owl fox swan boar raven salmon beaver crane wolf marten ibex "
    "kestrel seal"
).split()
_TOWN_LINES = (
    "{town} is a small market town on the river {river}. Its weekly market is held on {day}s.",
    "{town} is a quiet harbour town on the coast. Its lighthouse dates from the old shipping days.",
    "{town} is an old mining town in the northern hills. Its main street climbs towards the {river} pass.",
    "{town} is a busy river town where the {river} meets the sea. Its bridges are known across the region.",
)
_RIVERS = "Ost Vell Marr Tiva Lenn Orra".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday".split()
_PATTERNS = ("horizontal", "vertical", "diagonal", "plain")
N_ENTITIES = 240
N_TOWNS = 30


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class Entity:
    """A fictional organisation of the built-in encyclopedia."""

    id: str
    name: str
    kind: str
    town: str
    year: int
    founder: str
    mascot: str
    pattern: str  # of the emblem's background: horizontal / vertical (stripes), diagonal (halves), plain
    colours: tuple[str, ...]  # the background's colours (one when plain)
    symbol: str  # the shape in the emblem's centre
    symbol_colour: str

    @property
    def emblem(self) -> str:
        """The emblem in words (without an article), as its document and the oracle's query say it."""
        if self.pattern == "plain":
            background = f"a plain {self.colours[0]} field"
        else:
            what = "halves" if self.pattern == "diagonal" else "stripes"
            background = f"{self.colours[0]} and {self.colours[1]} {self.pattern} {what}"
        return f"{self.symbol_colour} {self.symbol} on {background}"

    def fact(self, which: str) -> str:
        return {"year": str(self.year), "town": self.town, "founder": self.founder, "mascot": self.mascot}[
            which
        ]

    def document(self) -> dict[str, str]:
        text = (
            f"The {self.name} is {_a(self.kind.lower())} based in the town of {self.town}. "
            f"It was founded in {self.year} by {self.founder}. Its emblem is {_a(self.emblem)}. "
            f"Its mascot is the {self.mascot}."
        )
        return {"id": self.id, "title": self.name, "text": text}


def _emblem_bags() -> list[tuple[str, tuple[str, ...], str]]:
    """Every (pattern, background colours, symbol, symbol colour) whose words differ from all others'
    as a set: BM25 sees a bag of words, so "a red star on yellow and blue" must not also describe
    "a yellow star on red and blue"."""
    colours, bags = list(COLOURS), []
    for pattern in _PATTERNS:
        k = 2 if pattern == "plain" else 3
        for group in itertools.combinations(colours, k):
            for symbol in ControlShapes.SHAPES:
                bags.append((pattern, group, symbol))
    return bags


@lru_cache(maxsize=1)
def world() -> tuple[tuple[Entity, ...], tuple[str, ...]]:
    """The fixed fictional world (entities and towns) behind the search suites and the built-in index."""
    rng = random.Random("axpo-world-v1")
    towns = tuple(rng.sample([h + t for h in _TOWN_HEADS for t in _TOWN_TAILS], N_TOWNS))
    words = rng.sample([h + t for h in _NAME_HEADS for t in _NAME_TAILS], N_ENTITIES)
    assert not set(words) & set(towns)
    founders = rng.sample([f"{f} {s}" for f in _FIRST_NAMES for s in _SURNAMES], N_ENTITIES)
    entities = []
    bags = rng.sample(_emblem_bags(), N_ENTITIES)
    for i, (word, (pattern, group, symbol)) in enumerate(zip(words, bags, strict=True)):
        symbol_colour = rng.choice(group)
        background = [c for c in group if c != symbol_colour]
        rng.shuffle(background)
        kind = rng.choice(_KINDS)
        entities.append(
            Entity(
                id=f"entity-{i:03d}",
                name=f"{word} {kind}",
                kind=kind,
                town=rng.choice(towns),
                year=rng.randint(1720, 1990),
                founder=founders[i],
                mascot=rng.choice(_MASCOTS),
                pattern=pattern,
                colours=tuple(background),
                symbol=symbol,
                symbol_colour=symbol_colour,
            )
        )
    return tuple(entities), towns


def corpus_documents() -> list[dict[str, str]]:
    """The built-in search index's documents: one per entity, plus town pages that share its vocabulary
    (so a search has near misses to rank below the right page)."""
    entities, towns = world()
    rng = random.Random("axpo-world-v1:towns")
    docs = [e.document() for e in entities]
    for i, town in enumerate(towns):
        line = rng.choice(_TOWN_LINES).format(town=town, river=rng.choice(_RIVERS), day=rng.choice(_DAYS))
        docs.append({"id": f"town-{i:02d}", "title": town, "text": line})
    return docs


class _SearchSuite(Suite):
    """Questions about the fictional world, whose facts are only in the built-in search index."""

    tool = "search"
    FACTS: ClassVar[tuple[str, ...]]  # which facts questions ask for
    _ASK: ClassVar[dict[str, str]]  # fact -> question text
    _SEARCH_THINK: ClassVar[tuple[str, ...]]  # the oracle's thinking before its search

    @staticmethod
    def entity(question: Question) -> Entity:
        return world()[0][question.meta["entity"]]

    @staticmethod
    def _answer_type(fact: str) -> AnswerType:
        return "exact"

    def _question(self, seed: int, index: int, image: Image.Image, meta: dict[str, Any]) -> Question:
        entity = world()[0][meta["entity"]]
        fact = meta["fact"]
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=self._ASK[fact].format(name=entity.name),
            images=(image,),
            answer=entity.fact(fact),
            answer_type=self._answer_type(fact),
            tool=self.tool,
            meta=meta,
        )

    @abstractmethod
    def query(self, question: Question, rng: random.Random) -> str:
        """The oracle's search query: built only from what the question and image show."""

    _FACT_SENTENCE: ClassVar[dict[str, str]] = {
        "year": "it was founded in {year}",
        "town": "it is based in the town of {town}",
        "founder": "it was founded by {founder}",
        "mascot": "its mascot is the {mascot}",
    }
    _ANSWER_THINK = (
        "The first result is the {name}: {sentence}. So the answer is {answer}.",
        "The search found the {name}, and {sentence}.",
        "According to the top result, the {name}, {sentence}.",
    )
    _GUESS_THINK = (
        "I do not know this organisation; my best guess is {answer}.",
        "Without looking it up I can only guess: {answer}.",
    )

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        entity = self.entity(question)
        think = rng.choice(self._SEARCH_THINK).format(emblem=_a(entity.emblem))
        call = tool_call_turn(think, "search", {"query": self.query(question, rng), "max_results": 3})
        sentence = self._FACT_SENTENCE[question.meta["fact"]].format(**vars(entity))
        final = rng.choice(self._ANSWER_THINK).format(
            name=entity.name, sentence=sentence, answer=question.answer
        )
        return [call, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A guess: a year near the right one, or one of four names of the right kind (one of them right)."""
        rng = self._turn_rng(question, rng)
        fact = question.meta["fact"]
        if fact == "year":
            guess = str(int(question.answer) + rng.randint(-3, 3))
        else:
            entities, towns = world()
            pool = {
                "town": towns,
                "founder": [e.founder for e in entities],
                "mascot": _MASCOTS,
            }[fact]
            guess = rng.choice([question.answer, *rng.sample(sorted(set(pool) - {question.answer}), 3)])
        return [answer_turn(rng.choice(self._GUESS_THINK).format(answer=guess), guess)]


# --------------------------------------------------------------------------- search_entity


class SearchEntity(_SearchSuite):
    """A fact about the organisation whose emblem the image shows (HR-MMSearch-like): needs ``search``.

    The emblem (a flag: stripes or halves or a plain field, with a big symbol) is plain to see at
    128×128, and no two organisations' emblems are described by the same words; the fact is only in
    the index, so the oracle searches for the emblem's description.
    """

    name = "search_entity"
    description = "A fact about the organisation whose emblem is shown; needs search (HR-MMSearch-like)."
    FACTS = ("year", "town", "founder")
    _ASK = {
        "year": "The image shows the emblem of an organisation. In what year was it founded? "
        "Answer with a year.",
        "town": "The image shows the emblem of an organisation. In which town is it based? "
        "Answer with the town's name.",
        "founder": "The image shows the emblem of an organisation. Who founded it? Answer with the "
        "founder's full name.",
    }
    _SEARCH_THINK = (
        "I do not recognise this emblem, so I search for its description.",
        "The emblem is {emblem}. I do not know whose it is; let me search for it.",
        "To find out whose emblem this is, I search for what it shows.",
    )

    @staticmethod
    def _answer_type(fact: str) -> AnswerType:
        return "numeric" if fact == "year" else "exact"

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        meta = {"entity": rng.randrange(N_ENTITIES), "fact": rng.choice(self.FACTS)}
        entity = world()[0][meta["entity"]]
        w, h = rng.randint(448, 640), rng.randint(384, 512)
        image = Image.new("RGB", (w, h), _muted(rng, 200, 240))
        draw = ImageDraw.Draw(image)
        fw = round(w * rng.uniform(0.55, 0.7))
        fh = round(fw * 2 / 3)
        x0, y0 = rng.randint(40, w - fw - 20), rng.randint(20, h - fh - 20)
        x1, y1 = x0 + fw, y0 + fh
        draw.rectangle((x0 - 14, y0, x0 - 6, h - 1), fill=(90, 80, 70))  # the pole
        c = [COLOURS[n] for n in entity.colours]
        if entity.pattern == "plain":
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=c[0])
        elif entity.pattern == "diagonal":
            draw.polygon([(x0, y0), (x1, y0), (x0, y1)], fill=c[0])
            draw.polygon([(x1, y0), (x1, y1), (x0, y1)], fill=c[1])
        else:
            for k in range(4):
                if entity.pattern == "horizontal":
                    box = (x0, y0 + k * fh // 4, x1 - 1, y0 + (k + 1) * fh // 4 - 1)
                else:
                    box = (x0 + k * fw // 4, y0, x0 + (k + 1) * fw // 4 - 1, y1 - 1)
                draw.rectangle(box, fill=c[k % 2])
        _draw_shape(
            draw, entity.symbol, (x0 + x1) / 2, (y0 + y1) / 2, fh * 0.3, COLOURS[entity.symbol_colour]
        )
        meta |= {"image_size": [w, h], "flag_px": [x0, y0, x1, y1]}
        return self._question(seed, index, image, meta)

    def query(self, question: Question, rng: random.Random) -> str:
        emblem = self.entity(question).emblem
        return rng.choice((f"emblem {emblem}", f"{emblem} emblem", f"organisation with emblem {emblem}"))


# --------------------------------------------------------------------------- search_fact


class SearchFact(_SearchSuite):
    """A fact about an organisation named in the question (MMSearch-like): needs ``search``.

    The image is a poster with the organisation's name; the answer (a year, a town, a person, an
    animal) is only in the index.
    """

    name = "search_fact"
    description = "A fact about a named fictional organisation; needs search (MMSearch-like)."
    FACTS = ("year", "town", "founder", "mascot")
    _ASK = {
        "year": "In what year was the {name} founded? Answer with the year.",
        "town": "In which town is the {name} based? Answer with the town's name.",
        "founder": "Who founded the {name}? Answer with the founder's full name.",
        "mascot": "What animal is the mascot of the {name}? Answer with the animal's name.",
    }
    _QUERY = {"year": "founded", "town": "town", "founder": "founded by", "mascot": "mascot"}
    _SEARCH_THINK = (
        "I do not know this organisation, so I look it up.",
        "This is not something I know; let me search for it.",
        "I need a fact about a specific organisation. I search the documents for it.",
    )

    def _make(self, seed: int, index: int) -> Question:
        rng = self._question_rng(seed, index)
        meta = {"entity": rng.randrange(N_ENTITIES), "fact": rng.choice(self.FACTS)}
        entity = world()[0][meta["entity"]]
        w, h = rng.randint(320, 448), rng.randint(224, 320)
        image = Image.new("RGB", (w, h), _blend(rng.choice(list(COLOURS.values())), (255, 255, 255), 0.2))
        draw = ImageDraw.Draw(image)
        word, kind = entity.name.split(" ", 1)
        font = _font(h // 7)
        draw.text((w / 2, h / 2 - h // 9), word, (20, 20, 20), font, "mm")
        draw.text((w / 2, h / 2 + h // 9), kind, (20, 20, 20), font, "mm")
        meta |= {"image_size": [w, h]}
        return self._question(seed, index, image, meta)

    def query(self, question: Question, rng: random.Random) -> str:
        name = self.entity(question).name
        return f"{name} {self._QUERY[question.meta['fact']]}" if rng.random() < 0.7 else name


# --------------------------------------------------------------------------- registry


class UnknownSuiteError(ValueError, KeyError):
    """Raised by :func:`get_suite`; a ValueError that ``except KeyError`` also catches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        ZoomDetail(),
        PythonCount(),
        ControlShapes(),
        DynaChart(),
        MathDiagram(),
        VisualProbe(),
        HRText4K(),
        HRText8K(),
        SearchEntity(),
        SearchFact(),
    )
}

#: The paper's nine benchmarks, each mirrored by one suite, in the order of its results table
#: (reasoning, perception, search).
MIRRORS: dict[str, str] = {
    "python_count": "MathVision",
    "dyna_chart": "DynaMath",
    "math_diagram": "Math-VR",
    "zoom_detail": "V*",
    "visual_probe": "VisualProbe",
    "hr_text_4k": "HR-Bench-4K",
    "hr_text_8k": "HR-Bench-8K",
    "search_entity": "HR-MMSearch",
    "search_fact": "MMSearch",
}
BENCHMARK_SUITES: tuple[str, ...] = tuple(MIRRORS)


def get_suite(name: str) -> Suite:
    """The registered suite called ``name``."""
    try:
        return SUITES[name]
    except KeyError:
        known = ", ".join(sorted(SUITES))
        raise UnknownSuiteError(f"unknown suite {name!r}; known suites: {known}") from None


def question_by_id(question_id: str) -> Question:
    """Regenerate a question from its id (`<suite>-<seed>-<index>`), so ids are enough to pass around."""
    try:
        suite, seed, index = question_id.rsplit("-", 2)
        seed_value, index_value = int(seed), int(index)
    except ValueError:
        raise ValueError(f"question id {question_id!r} is not of the form <suite>-<seed>-<index>") from None
    question = get_suite(suite)._make(seed_value, index_value)
    assert question.question_id == question_id
    return question
