"""RL training questions: a seeded pool over the training suites, the paper's data filter, per-round draws.

Seeds: the RL pool uses seed `1000 + config.seed`; evaluation uses its own (see evaluation), SFT its own,
so no question is shared between SFT, RL and evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from axpo_core.config import Config
from axpo_core.envs.suites import Question, get_suite, question_by_id
from axpo_core.rollout.engine import RolloutEngine

RL_SEED_OFFSET = 1000


def question_pool(config: Config) -> list[Question]:
    """`training.pool_size` questions spread evenly over `training.suites`."""
    suites = config.training.suites
    size = config.training.pool_size
    per_suite = [size // len(suites) + (i < size % len(suites)) for i in range(len(suites))]
    seed = RL_SEED_OFFSET + config.seed
    return [q for name, n in zip(suites, per_suite) if n for q in get_suite(name).generate(n, seed)]


def filter_solved(
    engine: RolloutEngine, questions: Sequence[Question], samples: int
) -> tuple[list[str], dict]:
    """The paper's RL data filter: drop questions the (SFT) policy solves `samples` out of `samples` times.

    Returns the kept question ids and a summary (how many solved, per suite)."""
    trajectories = engine.rollout(questions, group_size=samples)
    correct: dict[str, int] = {}
    for t in trajectories:
        correct[t.question_id] = correct.get(t.question_id, 0) + int(t.correct)
    kept = [q.question_id for q in questions if correct.get(q.question_id, 0) < samples]
    summary = {
        "questions": len(questions),
        "kept": len(kept),
        "dropped_all_solved": len(questions) - len(kept),
        "mean_accuracy": sum(correct.values()) / max(len(trajectories), 1),
    }
    return kept, summary


def round_question_ids(pool_ids: Sequence[str], config: Config, round_index: int) -> list[str]:
    """B questions for a round, drawn without replacement from the pool; seeded by (seed, round)."""
    if not pool_ids:
        raise ValueError("the RL question pool is empty (did the data filter drop every question?)")
    rng = random.Random(f"{config.seed}:round:{round_index}")
    count = min(config.training.questions_per_round, len(pool_ids))
    return sorted(rng.sample(list(pool_ids), count))


def questions_by_ids(ids: Sequence[str]) -> list[Question]:
    return [question_by_id(i) for i in ids]
