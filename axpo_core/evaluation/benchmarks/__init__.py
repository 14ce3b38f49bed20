"""Adapters for the paper's nine benchmarks (docs/design.md §6): each reads its published format from a local
folder, one module per benchmark (its adapter and its scorer), registered here.

Every adapter turns benchmark items into :class:`~axpo_core.envs.suites.Question` objects, so the rollout
engine and :func:`axpo_core.evaluation.runner.evaluate` run them unchanged. Question ids are stable:
``<benchmark>-<native id>``. Answer types (see :mod:`axpo_core.rewards`): ``choice`` for multiple choice
(the gold is always the option letter), ``numeric`` / ``approx`` / ``exact`` / ``contains`` for free-form
math and short answers, ``f1`` for the search benchmarks (the reward is the token F1; alternative gold
answers ride in ``Question.choices``, which the model never sees).

Scoring: each benchmark has one scorer named after it (``score_mathvision`` ... ``score_mmsearch``, also
``Benchmark.score``), written after the official evaluation code that its docstring names. The rule judge
(:class:`axpo_core.evaluation.judge.RuleJudge`) uses it for every benchmark question. Where the authors
grade with an LLM (HR-Bench, VisualProbe, Math-VR, HR-MMSearch), the rule scorer is a lower bound of
their score; ``evaluation.judge: llm`` plugs in a local LLM judge instead (rule match first).

Nothing is downloaded: ``load(folder)`` reads the files as the publishers ship them, and every problem
with them (a missing folder or file, a missing column or field, bad JSON, text that is not UTF-8, an
unreadable parquet page, bad base64, an unreadable or missing image) raises one
:class:`BenchmarkFormatError` that names the file and the row. Rows are read in file order and ``limit``
keeps the first ones, so a capped run is a stable prefix. Images go through
:func:`axpo_core.envs.tools.load_image` (decompression-bomb guard) and are decoded only for kept rows.

Hostile folders: a benchmark reads only inside its folder. Every path a file names (and every file found
by name) is resolved, symlinks included, and refused before it is opened when it leads outside
(:func:`_inside`). An image file above :data:`MAX_IMAGE_FILE_BYTES` is refused from its size unopened;
others are opened lazily, so the pixel limit is checked from the header before any pixel is read.

Row numbering in errors: ``line N`` is 1-based (JSONL, TSV), ``row N`` / ``item N`` are 0-based
(parquet, JSON lists: the index pandas and ``datasets`` show), ``entry 'key'`` names a JSON object key.
"""

from __future__ import annotations

from axpo_core.config import REAL_BENCHMARKS
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks.base import (
    MAX_IMAGE_FILE_BYTES,
    MAX_JSON_FILE_BYTES,
    Benchmark,
    BenchmarkFormatError,
    UnknownBenchmarkError,
)
from axpo_core.evaluation.benchmarks.dynamath import DynaMath, score_dynamath
from axpo_core.evaluation.benchmarks.hrbench import HRBench, score_hrbench
from axpo_core.evaluation.benchmarks.hrmmsearch import HRMMSearch, score_hrmmsearch
from axpo_core.evaluation.benchmarks.mathvision import MathVision, score_mathvision
from axpo_core.evaluation.benchmarks.mathvr import MathVR, score_mathvr
from axpo_core.evaluation.benchmarks.mmsearch import MMSearch, score_mmsearch
from axpo_core.evaluation.benchmarks.visualprobe import VisualProbe, score_visualprobe
from axpo_core.evaluation.benchmarks.vstar import VStar, score_vstar

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "BenchmarkFormatError",
    "DynaMath",
    "HRBench",
    "HRMMSearch",
    "MAX_IMAGE_FILE_BYTES",
    "MAX_JSON_FILE_BYTES",
    "MMSearch",
    "MathVR",
    "MathVision",
    "UnknownBenchmarkError",
    "VStar",
    "VisualProbe",
    "benchmark_score",
    "get_benchmark",
    "score_dynamath",
    "score_hrbench",
    "score_hrmmsearch",
    "score_mathvision",
    "score_mathvr",
    "score_mmsearch",
    "score_visualprobe",
    "score_vstar",
]


def benchmark_score(question: Question, response_text: str) -> float | None:
    """The score of a response to a benchmark question under its benchmark's scorer; None for a question
    of no registered benchmark (a synthetic suite's)."""
    benchmark = BENCHMARKS.get(str(question.meta.get("benchmark", "")))
    if benchmark is None or question.suite != benchmark.name:
        return None
    return benchmark.score(question, response_text)


# --------------------------------------------------------------------------------------------- registry

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        MathVision(),
        DynaMath(),
        MathVR(),
        VStar(),
        VisualProbe(),
        HRBench("hrbench4k", "4k"),
        HRBench("hrbench8k", "8k"),
        HRMMSearch(),
        MMSearch(),
    )
}


if tuple(BENCHMARKS) != REAL_BENCHMARKS:  # config validation names them without importing this package
    raise ImportError(f"config.REAL_BENCHMARKS {REAL_BENCHMARKS} and the registry {tuple(BENCHMARKS)} differ")


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called ``name``."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        known = ", ".join(BENCHMARKS)
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known benchmarks: {known}") from None
