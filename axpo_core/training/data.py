"""RL training questions: a seeded pool over the training suites, the paper's data filter, per-round draws.

Seeds: the RL pool uses seed `RL_SEED_OFFSET + config.seed`; evaluation and SFT use their own offsets
(axpo_core/randomness.py), so no question is shared between SFT, RL and evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from axpo_core.config import Config
from axpo_core.envs.suites import Question, get_suite, question_by_id
from axpo_core.randomness import RL_SEED_OFFSET, stream
from axpo_core.rollout.engine import RolloutEngine

T = TypeVar("T")


def _per_suite(config: Config) -> list[tuple[str, int]]:
    suites = config.training.suites
    size = config.training.pool_size
    return [(name, size // len(suites) + (i < size % len(suites))) for i, name in enumerate(suites)]


def question_pool(config: Config) -> list[Question]:
    """`training.pool_size` questions spread evenly over `training.suites`."""
    seed = RL_SEED_OFFSET + config.seed
    return [q for name, n in _per_suite(config) if n for q in get_suite(name).generate(n, seed)]


def question_pool_ids(config: Config) -> list[str]:
    """The ids of :func:`question_pool`, in its order, without generating a question (`<suite>-<seed>-
    <index>`, the form :func:`axpo_core.envs.suites.question_by_id` regenerates): a real-scale pool of
    tens of thousands of questions is never held in memory at once."""
    seed = RL_SEED_OFFSET + config.seed
    return [f"{name}-{seed}-{i}" for name, n in _per_suite(config) for i in range(n)]


FILTER_CHUNK = 256  # questions generated (images and all) and rolled out at a time by `filter_pool`


def filter_pool(
    engine: RolloutEngine,
    ids: Sequence[str],
    samples: int,
    drop: Callable[[int], bool],
    chunk: int = FILTER_CHUNK,
) -> tuple[list[str], dict[str, int]]:
    """`samples` rollouts per question, `chunk` questions at a time; returns the ids `drop(correct
    count)` does not drop, in order, and how many rollouts were correct per id."""
    kept: list[str] = []
    correct: dict[str, int] = {}
    for start in range(0, len(ids), chunk):
        part = list(ids[start : start + chunk])
        for t in engine.rollout(questions_by_ids(part), group_size=samples):
            correct[t.question_id] = correct.get(t.question_id, 0) + int(t.correct)
        kept += [i for i in part if not drop(correct.get(i, 0))]
    return kept, correct


def filter_rl_pool(
    engine: RolloutEngine,
    config: Config,
    teacher: Callable[[], RolloutEngine] | None = None,
) -> tuple[list[str], dict]:
    """The paper's RL data filter (App. A): drop the pool questions the (SFT) policy solves on all
    `training.filter_samples` rollouts and, with a teacher (`training.teacher_path`; `teacher` builds its
    engine, after the policy's engine is released), those the teacher fails on all of them. Fails when
    fewer than `training.questions_per_round` questions remain (a round would silently reuse them)."""
    samples = config.training.filter_samples
    pool = question_pool_ids(config)
    kept, correct = filter_pool(engine, pool, samples, drop=lambda c: c == samples)
    summary: dict = {
        "questions": len(pool),
        "dropped_all_solved": len(pool) - len(kept),
        "mean_accuracy": sum(correct.values()) / max(len(pool) * samples, 1),
    }
    if teacher is not None:
        del engine  # the caller passes its only reference: the policy is freed before the teacher loads
        before = len(kept)
        kept, _ = filter_pool(teacher(), kept, samples, drop=lambda c: c == 0)
        summary["dropped_teacher_all_failed"] = before - len(kept)
    summary["kept"] = len(kept)
    # The starting policy's accuracy on each kept question, from this same pass: a round's training reward
    # minus it on the round's questions is its gain, free of which questions the round happened to draw.
    summary["start_accuracy"] = {i: correct.get(i, 0) / samples for i in kept}
    check_pool(kept, config, "after the RL data filter")
    return kept, summary


def start_reward(start_accuracy: Mapping[str, float], question_ids: Sequence[str]) -> float:
    """The starting policy's mean accuracy (the RL data filter's pass) on a round's questions: the paired
    baseline of the round's `reward_mean` (each question weighs the same in both)."""
    missing = [i for i in question_ids if i not in start_accuracy]
    if missing:
        raise KeyError(f"no starting-policy accuracy for {len(missing)} round questions, e.g. {missing[0]!r}")
    return sum(start_accuracy[i] for i in question_ids) / max(len(question_ids), 1)


def check_pool(pool_ids: Sequence[str], config: Config, where: str = "") -> None:
    """A round draws `training.questions_per_round` distinct questions: a smaller pool is an error, not a
    silently smaller (or repeated) batch."""
    need = config.training.questions_per_round
    if not pool_ids:
        raise ValueError(f"the RL question pool is empty {where} (did the data filter drop every question?)")
    if len(pool_ids) < need:
        raise ValueError(
            f"the RL question pool has {len(pool_ids)} questions {where}, fewer than "
            f"training.questions_per_round={need}: raise training.pool_size or lower questions_per_round"
        )


def round_question_ids(pool_ids: Sequence[str], config: Config, round_index: int) -> list[str]:
    """B questions for a round, drawn without replacement from the pool; seeded by (seed, round)."""
    check_pool(pool_ids, config)
    rng = stream(config.seed, "round", round_index)
    return sorted(rng.sample(list(pool_ids), config.training.questions_per_round))


def shard_of(items: Sequence[T], shard: int, num_shards: int) -> list[T]:
    """The `shard`-th of `num_shards` contiguous, near-equal parts of `items`: concatenated in shard order,
    the parts are `items` again (results reassemble in question order)."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} outside [0, {num_shards})")
    size, extra = divmod(len(items), num_shards)
    start = shard * size + min(shard, extra)
    return list(items[start : start + size + (shard < extra)])


def questions_by_ids(ids: Sequence[str]) -> list[Question]:
    return [question_by_id(i) for i in ids]
