"""``dyna_chart`` (mirrors DynaMath): arithmetic over bar values that are only a pixel or two per unit
at 128×128; the oracle reads the pixels with ``python``."""

from __future__ import annotations

import random
from typing import ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import COLOURS, Colour, Question, Suite, answer_turn, tool_call_turn
from axpo_core.envs.suites.drawing import _font


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
        return self._build(
            seed,
            index,
            text=f"{axis} {ask} Answer with a number.",
            image=image,
            answer=str(value),
            answer_type="numeric",
            meta=meta,
        )

    @staticmethod
    def code(question: Question) -> str:
        """Python that prints the answer, computed from ``_pil_images[0]`` alone."""
        # One line (`;`), so the call's JSON needs no escapes.
        return f"v = bar_values({question.meta['ymax']}); print({question.meta['expression']})"

    _CODE_THINK = ("The bars are too fine to read by eye, so I measure them with code.",)
    _ANSWER_THINK = ("The code printed {value}.",)
    _GUESS_THINK = ("The bars are too fine to read. I guess {value}.",)

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
