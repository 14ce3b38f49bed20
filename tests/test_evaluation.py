"""A stage's evaluation in full batches: its benchmarks in one engine run give each one its own results."""

from __future__ import annotations

from axpo_core.evaluation.runner import (
    benchmark_questions,
    benchmark_seed,
    evaluate,
    evaluate_benchmarks,
    evaluation_config,
)
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.transformers_backend import TransformersGenerator

BENCHMARKS = ["zoom_detail", "python_count", "control_shapes"]


class BatchSizes(TransformersGenerator):
    """The real backend, remembering how many requests each generation batch held."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def _generate_batch(self, requests, sampling, stop_ids):
        self.batches.append(len(requests))
        return super()._generate_batch(requests, sampling, stop_ids)


def test_pooled_benchmarks_equal_one_run_per_benchmark(policy, config):
    """The evaluation protocol's sampling (T 0.7, top-p, top-k), 2 questions x 2 samples per benchmark: the
    pooled run's first batch holds every benchmark's rollouts, and each benchmark's records and metrics are
    those of its own run with its own seed (the pipeline's evaluate task before pooling)."""
    small = config.evaluation.model_copy(update={"questions": 2, "samples": 2, "k": [1, 2], "max_turns": 2})
    ev = evaluation_config(config.model_copy(update={"evaluation": small}))
    rollout = ev.rollout.model_copy(update={"max_new_tokens_per_turn": 12})
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    questions = {name: benchmark_questions(ev, name) for name in BENCHMARKS}
    samples, ks = ev.evaluation.samples, ev.evaluation.k

    def engine(seed: int | None) -> RolloutEngine:
        generator = BatchSizes(policy, batch_size=rollout.batch_size, seed=seed)
        return RolloutEngine(generator, chat, rollout, ev.tools)

    pooled_engine = engine(None)
    pooled = evaluate_benchmarks(pooled_engine, questions, ev.seed, samples, ks)
    assert pooled_engine.generator.batches[0] == len(BENCHMARKS) * 2 * samples
    assert list(pooled) == BENCHMARKS
    for name in BENCHMARKS:
        own_engine = engine(benchmark_seed(ev.seed, name))
        own = evaluate(own_engine, name, questions[name], samples, ks)
        assert own_engine.generator.batches[0] == 2 * samples
        assert pooled[name].records == own.records  # texts, tool calls, rewards, turns, ...
        assert pooled[name].metrics == own.metrics


class RunSizes(RolloutEngine):
    """The real engine, remembering how many rollouts each of its runs held."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def rollout(self, questions, group_size, seed=None):
        self.sizes.append(len(questions) * group_size)
        return super().rollout(questions, group_size, seed)


def test_a_stage_runs_in_bounded_engine_runs_with_the_same_results(policy, config):
    """With at most 8 rollouts per engine run, the three benchmarks (4 rollouts each) run as [2, 1]: the
    same records and metrics as one run of all of them, and no run held more than 8 rollouts."""
    from axpo_core.evaluation.runner import _fitting_runs

    small = config.evaluation.model_copy(update={"questions": 2, "samples": 2, "k": [1, 2], "max_turns": 2})
    ev = evaluation_config(config.model_copy(update={"evaluation": small}))
    rollout = ev.rollout.model_copy(update={"max_new_tokens_per_turn": 12})
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    questions = {name: benchmark_questions(ev, name) for name in BENCHMARKS}
    assert _fitting_runs(questions, 2, 8) == [BENCHMARKS[:2], BENCHMARKS[2:]]
    assert _fitting_runs(questions, 2, 3) == [[name] for name in BENCHMARKS]  # one alone when too big
    runs = []
    for limit in (100, 8):
        engine = RunSizes(BatchSizes(policy, batch_size=64), chat, rollout, ev.tools)
        runs.append(evaluate_benchmarks(engine, questions, ev.seed, 2, [1, 2], max_rollouts=limit))
        assert engine.sizes == ([12] if limit == 100 else [8, 4])
    for name in BENCHMARKS:
        assert runs[0][name].records == runs[1][name].records
        assert runs[0][name].metrics == runs[1][name].metrics
