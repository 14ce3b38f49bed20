"""``math_diagram`` (mirrors Math-VR): area or perimeter of a figure with big labels; ``python`` is
optional."""

from __future__ import annotations

import math
import random
from typing import ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import COLOURS, Colour, Question, Suite, answer_turn, tool_call_turn
from axpo_core.envs.suites.drawing import _blend, _font, _muted

_TRIPLES = ((3, 4, 5), (5, 12, 13), (8, 15, 17), (7, 24, 25), (20, 21, 29), (9, 40, 41))


class MathDiagram(Suite):
    """Area or perimeter of a rectangle or right triangle with labelled sides (Math-VR-like).

    The labels are big (readable at 128×128) and small numbers (``SIDES``), so the answer is a matter of
    arithmetic: ``python`` helps with the products but is not needed, and the tool-free oracle reasons to
    the right answer.
    """

    name = "math_diagram"
    description = (
        "Area or perimeter of a labelled rectangle or right triangle; python optional (Math-VR-like)."
    )
    tool = "python"
    tool_optional = True

    OUTLINE: ClassVar[Colour] = (20, 20, 20)
    #: Side lengths (a right triangle's hypotenuse included). Small, so a label is one or two digits a
    #: tiny vision encoder can read, and the answer at most three digits to copy out of the tool's output.
    SIDES: ClassVar[tuple[int, int]] = (2, 20)

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
            a, b = rng.sample(range(self.SIDES[0], self.SIDES[1] + 1), 2)
            sides = [a, b]
        else:
            triple = rng.choice([t for t in _TRIPLES if t[2] <= self.SIDES[1]])
            k = rng.randint(1, self.SIDES[1] // triple[2])
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
        return self._build(
            seed,
            index,
            text=text,
            image=image,
            answer=str(value),
            answer_type="numeric",
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

    _CODE_THINK = ("{given} I compute the {asked} with code.",)
    _ANSWER_THINK = ("The code printed {value}.",)
    _MENTAL_THINK = ("{given} The {asked} is {words} = {value}.",)

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
