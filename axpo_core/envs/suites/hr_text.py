"""``hr_text_4k`` / ``hr_text_8k`` (mirror HR-Bench-4K/8K): the text of a small red-framed sign, read
with ``image_zoom_in``; the 8K text is half the 4K's size."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import (
    COLOURS,
    Colour,
    Question,
    RenderedSuite,
    _letter,
    answer_turn,
    format_options,
    tool_call_turn,
)
from axpo_core.envs.suites.drawing import _draw_clutter, _font, _grow, _muted, _place, _to_bbox_1000, _where

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
    The answer is the option's letter, as HR-Bench asks for it (a blind guess is right 1 time in 4).
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
            f"Options: {format_options(choices)}. Answer with the option's letter."
        )
        return self._build(
            seed,
            index,
            text=text,
            image=self.render(meta, answer),
            answer=answer,
            answer_type="choice",
            choices=choices,
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

    _ZOOM_THINK = ("The red sign is in the {where}. Its text is too small to read, so I zoom in.",)
    _ANSWER_THINK = ("Now I can read the sign.",)
    _GUESS_THINK = ("The sign is too small to read, so I guess.",)

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        w, h = question.meta["image_size"]
        box = _grow(tuple(question.meta["target_px"]), rng.randint(*self.MARGIN))  # type: ignore[arg-type]
        zoom = tool_call_turn(
            rng.choice(self._ZOOM_THINK).format(where=question.meta["where"]),
            "image_zoom_in",
            {"bbox_2d": _to_bbox_1000(box, w, h), "label": "sign"},
        )
        letter = _letter(question.choices or (), question.answer)
        final = rng.choice(self._ANSWER_THINK).format(text=question.answer, letter=letter)
        return [zoom, answer_turn(final, letter)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A blind guess among the options."""
        rng = self._turn_rng(question, rng)
        letter = _letter(question.choices or (), rng.choice(question.choices or (question.answer,)))
        return [answer_turn(rng.choice(self._GUESS_THINK), letter)]


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
