"""Evaluate a policy on a benchmark: n samples per question under the paper's protocol, scored by pass@k.

`evaluate_benchmarks` runs several benchmarks' rollouts as one engine run, so the generator's batches stay
full across benchmarks (and a question's samples share its prompt's prefill) rather than one small batch per
benchmark; each request keeps the seed its benchmark's own run gives it (`benchmark_seed`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from axpo_core.config import Config
from axpo_core.envs.suites import Question, get_suite
from axpo_core.evaluation.judge import Judge, apply_judge
from axpo_core.evaluation.passk import expected_max_at_k, mean_and_ci
from axpo_core.randomness import EVAL_SEED_OFFSET
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.trajectory import Trajectory


@dataclass
class EvalResult:
    benchmark: str
    metrics: dict[str, float]  # pass@k, its 95% half-width, tool-call rate, ...
    records: list[dict]  # one per sample, for eval/<benchmark>.jsonl


def score_samples(benchmark: str, trajectories: Sequence[Trajectory], ks: Sequence[int]) -> EvalResult:
    by_question: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_question[t.question_id].append(t)
    metrics: dict[str, float] = {"questions": float(len(by_question))}
    for k in ks:
        # Graded: equals the unbiased 1 - C(n-c,k)/C(n,k) on 0/1 rewards, and mean F1 at k=1 on search.
        per_question = [expected_max_at_k([t.reward for t in ts], k) for ts in by_question.values()]
        mean, half_width = mean_and_ci(per_question)
        metrics[f"pass@{k}"] = mean
        metrics[f"pass@{k}_ci95"] = half_width
    records = [{"benchmark": benchmark, **t.record()} for t in trajectories]
    metrics.update(tool_metrics(records))
    return EvalResult(benchmark, metrics, records)


def tool_metrics(records: Sequence[dict]) -> dict[str, float]:
    """Tool use and tool-call outcomes of evaluation samples (their stored records), as fractions.

    tool_call_rate       samples that open ≥ 1 `<tool_call>` (the paper's tool use)
    tool_error_rate      tool-call attempts that failed / attempts (every opened block and lone closing tag)
    tool_format_error_rate, tool_execution_error_rate   the same split by outcome (envs/tools.py OUTCOMES)
    accuracy_tool, accuracy_no_tool   mean reward of the tool-using / the other samples (0.0 when there
                         are none: `tool_samples` and `no_tool_samples` say how many there were)
    """
    n = max(len(records), 1)
    outcomes = [o for r in records for o in r.get("tool_outcomes", [])]
    calls = max(len(outcomes), 1)
    tool = [float(r.get("reward", 0.0)) for r in records if r.get("used_tool")]
    no_tool = [float(r.get("reward", 0.0)) for r in records if not r.get("used_tool")]
    return {
        "tool_call_rate": len(tool) / n,
        "tool_error_rate": sum(int(r.get("tool_errors", 0)) for r in records) / calls,
        "tool_format_error_rate": outcomes.count("format") / calls,
        "tool_execution_error_rate": outcomes.count("execution") / calls,
        "accuracy_tool": sum(tool) / len(tool) if tool else 0.0,
        "accuracy_no_tool": sum(no_tool) / len(no_tool) if no_tool else 0.0,
        "tool_samples": float(len(tool)),
        "no_tool_samples": float(len(no_tool)),
        "tool_calls": float(len(outcomes)),
        "mean_turns": sum(int(r.get("turns", 0)) for r in records) / n,
        "truncated_rate": sum(bool(r.get("truncated")) for r in records) / n,
    }


def evaluate(
    engine: RolloutEngine,
    benchmark: str,
    questions: Sequence[Question],
    samples: int,
    ks: Sequence[int],
    judge: Judge | None = None,
) -> EvalResult:
    """`samples` rollouts per question with the engine's (evaluation) sampling and turn limit; a judge, when
    given, re-scores each finished rollout (e.g. an LLM judge where rule matching is too strict)."""
    trajectories = engine.rollout(questions, group_size=samples)
    if judge is not None:
        apply_judge(judge, questions, trajectories)
    return score_samples(benchmark, trajectories, ks)


def benchmark_seed(seed: int, benchmark: str) -> int:
    """A benchmark's sampling seed: the same for every stage on a benchmark, whichever worker runs it."""
    return int(hashlib.sha256(f"{seed}:{benchmark}".encode()).hexdigest()[:8], 16)


# An evaluation engine run's rollouts at most (8 batches of make run's 64): a stage of 9 benchmarks x 12
# questions x 4 samples (432) is one run; at 48 questions a run held every rollout's tool images and
# sandbox at once and ran out of 24 GB.
MAX_ROLLOUTS_PER_RUN = 512


def _fitting_runs(benchmarks: Mapping[str, Sequence[Question]], samples: int, limit: int) -> list[list[str]]:
    """Consecutive benchmarks grouped so that each group's rollouts fit in `limit` (or it is one alone)."""
    runs: list[list[str]] = []
    size = 0
    for name, questions in benchmarks.items():
        rollouts = len(questions) * samples
        if runs and size + rollouts <= limit:
            runs[-1].append(name)
            size += rollouts
        else:
            runs.append([name])
            size = rollouts
    return runs


def evaluate_benchmarks(
    engine: RolloutEngine,
    benchmarks: Mapping[str, Sequence[Question]],
    seed: int,
    samples: int,
    ks: Sequence[int],
    judge: Judge | None = None,
    max_rollouts: int = MAX_ROLLOUTS_PER_RUN,
) -> dict[str, EvalResult]:
    """`evaluate` on each benchmark, as engine runs over all their questions (the module doc): consecutive
    benchmarks share a run while their rollouts fit in `max_rollouts` (a benchmark bigger than that runs
    alone), so the engine's batches stay full across benchmarks and a stage's memory (trajectories, the
    images tools return, live sandboxes) stays bounded however many questions it evaluates. A request's
    seed comes from its benchmark's (`benchmark_seed(seed, name)`), its rollout and its context, as in a
    run of its benchmark alone with that seed; only the batches' padding differs, float noise."""
    ids = [q.question_id for qs in benchmarks.values() for q in qs]
    if len(set(ids)) < len(ids):
        raise ValueError("evaluate_benchmarks needs question ids unique across the benchmarks")
    results: dict[str, EvalResult] = {}
    for chunk in _fitting_runs(benchmarks, samples, max_rollouts):
        questions = [q for name in chunk for q in benchmarks[name]]
        seeds = {q.question_id: benchmark_seed(seed, name) for name in chunk for q in benchmarks[name]}
        trajectories = engine.rollout(questions, group_size=samples, seed=seeds)
        start = 0
        for name in chunk:  # rollout keeps the questions' order, `samples` each
            qs = benchmarks[name]
            own, start = trajectories[start : start + len(qs) * samples], start + len(qs) * samples
            if judge is not None:
                apply_judge(judge, qs, own)
            results[name] = score_samples(name, own, ks)
    return results




def benchmark_questions(config: Config, benchmark: str) -> list[Question]:
    """The evaluation questions of a benchmark: one of the paper's nine (read from
    ``<evaluation.data_root>/<name>``, capped at ``evaluation.questions``), else a synthetic suite by name."""
    from pathlib import Path  # local imports: only this function of the module reads real benchmarks

    from axpo_core.evaluation.benchmarks import BENCHMARKS, get_benchmark

    ev = config.evaluation
    if benchmark in BENCHMARKS:
        if ev.data_root is None:
            raise ValueError(
                f"benchmark {benchmark!r} reads its published files from disk: set evaluation.data_root to "
                f"the folder holding one sub-folder per benchmark (it is read from <data_root>/{benchmark})"
            )
        return get_benchmark(benchmark).load(
            Path(ev.data_root) / benchmark, limit=ev.questions, max_image_pixels=config.tools.max_image_pixels
        )
    return get_suite(benchmark).generate(ev.questions, EVAL_SEED_OFFSET + config.seed)


@dataclass
class BenchmarkCheck:
    """What `validate_benchmarks` found for one real benchmark."""

    benchmark: str
    folder: str
    questions: int | None  # how many load; None when the folder is missing or a row is bad
    error: str | None = None  # the one BenchmarkFormatError message (file: row: field problem)
    required: bool = True  # named in evaluation.benchmarks (a missing folder is then a failure)

    @property
    def ok(self) -> bool:
        return self.questions is not None or (not self.required and self.error is None)


def validate_benchmarks(config: Config) -> list[BenchmarkCheck]:
    """Check the real benchmarks' data under ``evaluation.data_root`` without loading a model: every row
    and image of each benchmark is read as an evaluation would read it (one question in memory at a
    time) and counted. Checked: the real benchmarks in ``evaluation.benchmarks``, or all nine when it
    names none (the synthetic default), those without a folder then skipped rather than failed."""
    from pathlib import Path

    from axpo_core.evaluation.benchmarks import BENCHMARKS, BenchmarkFormatError

    ev = config.evaluation
    if ev.data_root is None:
        raise ValueError("set evaluation.data_root to the folder holding one sub-folder per benchmark")
    root = Path(ev.data_root).expanduser()
    named = [b for b in ev.benchmarks if b in BENCHMARKS]
    checks = []
    for name in named or list(BENCHMARKS):
        folder = root / name
        if not folder.is_dir():
            checks.append(BenchmarkCheck(name, str(folder), None, None, required=bool(named)))
            continue
        try:
            count = BENCHMARKS[name].validate(folder, config.tools.max_image_pixels)
            checks.append(BenchmarkCheck(name, str(folder), count))
        except BenchmarkFormatError as exc:
            checks.append(BenchmarkCheck(name, str(folder), None, str(exc)))
    return checks


def evaluation_config(config: Config) -> Config:
    """The paper's protocol: evaluation sampling (T 0.7, top-p 0.8, top-k 20, presence 1.5), 5 turns, and
    the evaluation token budgets where set (the paper: 32,768 response tokens)."""
    ev = config.evaluation
    update = {"max_turns": ev.max_turns, "sampling": ev.sampling}
    if ev.max_new_tokens_per_turn is not None:
        update["max_new_tokens_per_turn"] = ev.max_new_tokens_per_turn
    if ev.max_total_tokens is not None:
        update["max_total_tokens"] = ev.max_total_tokens
    rollout = config.rollout.model_copy(update=update)
    return config.model_copy(update={"rollout": rollout})
