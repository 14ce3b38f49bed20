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

An oracle returns the assistant turns of a correct trajectory (without ``<|im_end|>``) in the
rollout format: ``<think>…</think>`` then a ``<tool_call>`` block or ``<answer>\boxed{…}</answer>``.
"""

from __future__ import annotations

import json
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image, ImageDraw

from axpo_core import rewards
from axpo_core.rewards import AnswerType

__all__ = [
    "COLOURS",
    "SUITES",
    "ControlShapes",
    "PythonCount",
    "Question",
    "Suite",
    "UnknownSuiteError",
    "ZoomDetail",
    "answer_turn",
    "format_options",
    "get_suite",
    "tool_call_turn",
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
        return rewards.score(response_text, question.answer, question.answer_type, question.choices)

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


# --------------------------------------------------------------------------- registry


class UnknownSuiteError(ValueError, KeyError):
    """Raised by :func:`get_suite`; a ValueError that ``except KeyError`` also catches."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


SUITES: dict[str, Suite] = {s.name: s for s in (ZoomDetail(), PythonCount(), ControlShapes())}


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
