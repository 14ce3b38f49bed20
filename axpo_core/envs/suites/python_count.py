"""``python_count`` (mirrors MathVision): count (or add / subtract counts of) small coloured dots: too
many and too small to count at 128×128; the oracle counts connected components with ``python``."""

from __future__ import annotations

import math
import random
from typing import ClassVar

from PIL import Image, ImageDraw

from axpo_core.envs.suites.base import COLOURS, Colour, Question, Suite, answer_turn, tool_call_turn
from axpo_core.envs.suites.drawing import _jitter


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
    def code(question: Question) -> str:
        """One line of Python that prints the answer with the sandbox's preloaded ``count_dots``
        (envs/python_helpers.py): the arguments (which colours, which operation) are what the agent
        chooses. Single quotes, so the call's JSON needs no escapes."""
        op = {"count": "", "sum": " + ", "diff": " - "}[question.meta["kind"]]
        return f"print({op.join(f'count_dots({t!r})' for t in question.meta['targets'])})"

    @staticmethod
    def _what(question: Question) -> str:
        targets = question.meta["targets"]
        return f"the {targets[0]} dots" if len(targets) == 1 else f"the {targets[0]} and {targets[1]} dots"

    _CODE_THINK = ("The dots are too small to count by eye, so I count {what} with code.",)
    _ANSWER_THINK = ("The code printed {value}.",)
    _GUESS_THINK = ("The dots are too small to count. I guess {value}.",)

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
        think = rng.choice(self._GUESS_THINK).format(value=guess)
        return [answer_turn(think, str(guess))]
