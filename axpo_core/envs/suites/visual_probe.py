"""``visual_probe`` (mirrors VisualProbe): which tiny shape is inside a cyan ring, seen through
``image_zoom_in``."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import (
    Colour,
    Question,
    RenderedSuite,
    _letter,
    answer_turn,
    format_options,
    tool_call_turn,
)
from axpo_core.envs.suites.drawing import (
    _EQUAL_AREA,
    _draw_clutter,
    _draw_shape,
    _grow,
    _muted,
    _place,
    _to_bbox_1000,
    _where,
)


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
        for kind, x, y, r in meta["specks"]:
            _draw_shape(draw, kind, x, y, r * _EQUAL_AREA[kind], self.INK)
        x0, y0, x1, y1 = meta["ring_px"]
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=self.INSIDE, outline=self.RING, width=meta["ring_width"])
        x, y, r = meta["target"]
        if answer:
            _draw_shape(draw, answer, x, y, r * _EQUAL_AREA[answer], self.INK)
        return image

    _ZOOM_THINK = ("The cyan ring is in the {where}. The shape in it is too small to see, so I zoom in.",)
    _ANSWER_THINK = ("The shape is a {shape}.",)
    _GUESS_THINK = ("The shape is too small to see. I guess {shape}.",)

    def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
        rng = self._turn_rng(question, rng)
        w, h = question.meta["image_size"]
        box = _grow(tuple(question.meta["ring_px"]), rng.randint(2, 12))  # type: ignore[arg-type]
        zoom = tool_call_turn(
            rng.choice(self._ZOOM_THINK).format(where=question.meta["where"]),
            "image_zoom_in",
            {
                "bbox_2d": _to_bbox_1000(box, w, h),
                "label": "ring",
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
