"""``control_shapes``: the colour or kind of one big shape: solvable from the low-resolution image
alone, no tool. It mirrors no benchmark; it stays as the no-tool control."""

from __future__ import annotations

import random
from typing import ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import COLOURS, Question, Suite, _letter, answer_turn, format_options
from axpo_core.envs.suites.drawing import _jitter, _muted, _shape_points


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
        return self._build(
            seed,
            index,
            text=text,
            image=image,
            answer=answer,
            answer_type="choice",
            choices=choices,
            meta={"asked": asked, "colour": colour, "shape": shape, "image_size": [w, h]},
        )

    _THINK = ("The shape is a {colour} {shape}.",)

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
