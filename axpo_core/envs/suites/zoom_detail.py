"""``zoom_detail`` (mirrors V*): the answer is the colour of a 4-pixel mark inside a black frame of a
~1000 px image: invisible at 128×128, clear in a 128×128 view of the frame's crop (``image_zoom_in``)."""

from __future__ import annotations

import random
from typing import ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import (
    COLOURS,
    Box,
    Colour,
    Question,
    Suite,
    _letter,
    answer_turn,
    format_options,
    tool_call_turn,
)
from axpo_core.envs.suites.drawing import (
    _blend,
    _draw_clutter,
    _fill,
    _grow,
    _muted,
    _overlaps,
    _to_bbox_1000,
    _where,
)


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
        return self._build(
            seed,
            index,
            text=text,
            image=image,
            answer=colour,
            answer_type="choice",
            choices=choices,
            meta=meta,
        )

    # One short template per turn: a tiny policy learns a regular format; what varies is the call's arguments.
    _ZOOM_THINK = ("The frame is in the {where}. The square in it is too small to see, so I zoom in.",)
    _ANSWER_THINK = ("The square is {colour}.",)
    _GUESS_THINK = ("The square is too small to see. I guess {colour}.",)

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        w, h = question.meta["image_size"]
        margin = rng.randint(4, 10)  # varied crops: all contain the frame and no distractor mark
        bbox = _to_bbox_1000(_grow(tuple(question.meta["frame_px"]), margin), w, h)  # type: ignore[arg-type]
        zoom = tool_call_turn(
            rng.choice(self._ZOOM_THINK).format(where=question.meta["where"]),
            "image_zoom_in",
            {"bbox_2d": bbox, "label": "frame"},
        )
        letter = _letter(question.choices or (), question.answer)
        final = rng.choice(self._ANSWER_THINK).format(colour=question.answer, letter=letter)
        return [zoom, answer_turn(final, question.answer)]

    def no_tool_oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        """A blind guess among the options: right about 1 time in ``N_CHOICES``."""
        rng = self._turn_rng(question, rng)
        guess = rng.choice(question.choices or (question.answer,))
        return [answer_turn(rng.choice(self._GUESS_THINK).format(colour=guess), guess)]
