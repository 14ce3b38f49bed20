r"""Seeded synthetic image task suites with verifiers and oracle trajectories (DESIGN §6): the registry.

Each suite draws its questions with Pillow from a per-question random stream, so question ``i``
of ``generate(n, seed)`` depends only on ``(suite, seed, i)``. Some suites need a tool by
construction (the policy sees every image at ≤ 128×128, DESIGN §3).

One module per suite, as a gymnasium env registry reads (this module holds the registry);
:mod:`.base` holds :class:`Question`, the :class:`Suite` base class and the oracles' turn formatting,
:mod:`.drawing` the Pillow helpers the suites share:

- reasoning (``python``): :mod:`.python_count` (MathVision), :mod:`.dyna_chart` (DynaMath),
  :mod:`.math_diagram` (Math-VR);
- perception (``image_zoom_in``): :mod:`.zoom_detail` (V*), :mod:`.visual_probe` (VisualProbe),
  :mod:`.hr_text` (``hr_text_4k`` / ``hr_text_8k``: HR-Bench-4K/8K);
- search (``search``): :mod:`.search` (``search_entity``: HR-MMSearch, ``search_fact``: MMSearch, and
  the fictional world behind the built-in search index);
- no tool: :mod:`.control_shapes`.

Nine suites mirror the skills of the paper's nine benchmarks (``MIRRORS``, in its table's order in
``BENCHMARK_SUITES``); ``control_shapes`` stays as the no-tool control.
"""

from __future__ import annotations

from axpo_core.envs.suites.base import (
    COLOURS,
    Question,
    RenderedSuite,
    Suite,
    answer_turn,
    format_options,
    tool_call_turn,
)
from axpo_core.envs.suites.control_shapes import ControlShapes
from axpo_core.envs.suites.dyna_chart import DynaChart
from axpo_core.envs.suites.hr_text import HRText4K, HRText8K
from axpo_core.envs.suites.math_diagram import MathDiagram
from axpo_core.envs.suites.python_count import PythonCount
from axpo_core.envs.suites.search import N_ENTITIES as N_ENTITIES
from axpo_core.envs.suites.search import Entity, SearchEntity, SearchFact, corpus_documents, world
from axpo_core.envs.suites.visual_probe import VisualProbe
from axpo_core.envs.suites.zoom_detail import ZoomDetail

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
