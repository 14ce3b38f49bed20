r"""What every suite shares: the :class:`Question` record, the :class:`Suite` base class and the
assistant-turn formatting of the oracles.

An oracle returns the assistant turns of a correct trajectory (without ``<|im_end|>``) in the
rollout format: ``<think>…</think>`` then a ``<tool_call>`` block or ``<answer>\boxed{…}</answer>``.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from axpo_core import rewards
from axpo_core.rewards import AnswerType

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

    def _build(
        self,
        seed: int,
        index: int,
        *,
        text: str,
        image: Image.Image,
        answer: str,
        answer_type: AnswerType,
        meta: dict[str, Any],
        choices: Sequence[str] | None = None,
    ) -> Question:
        """Question `index` of the stream `seed`: one image, this suite's name and tool."""
        return Question(
            question_id=self._question_id(seed, index),
            suite=self.name,
            text=text,
            images=(image,),
            answer=answer,
            answer_type=answer_type,
            choices=tuple(choices) if choices is not None else None,
            tool=self.tool,
            meta=meta,
        )

    def _question_id(self, seed: int, index: int) -> str:
        return f"{self.name}-{seed}-{index}"

    @staticmethod
    def _turn_rng(question: Question, rng: random.Random | None) -> random.Random:
        """The caller's rng, or a per-question one so that oracles are reproducible by default."""
        return rng if rng is not None else random.Random(f"oracle:{question.question_id}")


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


class RenderedSuite(Suite):
    """A suite whose image is a pure function of the question's meta and its answer (``render``), so a
    test can redraw the same scene with another option and compare what the model would see."""

    @abstractmethod
    def render(self, meta: dict[str, Any], answer: str) -> Image.Image:
        """The question's image with ``answer`` as the hidden detail (everything else from ``meta``);
        ``answer=""`` draws the scene without the detail."""
