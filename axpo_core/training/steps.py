"""The four steps of one RL round, as plain functions over in-memory objects.

    rollout → detect (AXPO: trigger, candidates, rank, allocate) → resample (AXPO) → update

`RLTrainer` chains them in one process; the Prefect tasks call the same functions with object storage in
between. Every step is seeded by (config.seed, round), so a rerun after a crash redoes the same work.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from axpo_core.algorithms.axpo import SpecialTokens, axpo_advantages, resample, resampling_on, select_prefixes
from axpo_core.algorithms.diagnostics import step_diagnostics
from axpo_core.algorithms.grpo import grpo_advantages
from axpo_core.config import Config, scaled_count
from axpo_core.envs.suites import Question
from axpo_core.models.loader import Policy
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory
from axpo_core.training.update import UpdateStats, policy_update


def group_size(config: Config) -> int:
    """N rollouts per question; `rollout_multiplier` 2 is the paper's equal-compute GRPO baseline, 1.25 the
    budget-matched one."""
    return scaled_count(config.rollout.group_size, config.algorithm.rollout_multiplier, "rollout.group_size")



def rollout_step(engine: RolloutEngine, config: Config, questions: Sequence[Question], round_index: int):
    torch.manual_seed(config.seed * 7919 + round_index)
    return engine.rollout(questions, group_size(config))


def detect_step(
    config: Config,
    originals: Sequence[Trajectory],
    num_questions: int,
    special: SpecialTokens,
    round_index: int,
) -> tuple[list[str], list[ContinuationRequest]]:
    """Which groups failed at the tool call and which prefixes to resample (nothing for GRPO)."""
    if not resampling_on(config.algorithm):
        return [], []
    rng = random.Random(f"{config.seed}:rank:{round_index}")
    triggered, _, requests = select_prefixes(
        originals, config.algorithm, num_questions, group_size(config), rng, special
    )
    return triggered, requests


def resample_step(
    engine: RolloutEngine,
    config: Config,
    requests: Sequence[ContinuationRequest],
    questions: Sequence[Question],
    round_index: int,
) -> list[Trajectory]:
    if not requests:
        return []
    torch.manual_seed(config.seed * 7919 + round_index + 1)
    by_id = {q.question_id: q for q in questions}
    return resample(requests, lambda reqs: engine.continue_from(reqs, by_id))


@dataclass
class UpdateResult:
    stats: UpdateStats
    diagnostics: dict[str, float]

    def metrics(self) -> dict[str, float]:
        return {**self.diagnostics, **{f"update/{k}": v for k, v in self.stats.as_dict().items()}}


def update_step(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    config: Config,
    chat,
    originals: Sequence[Trajectory],
    continuations: Sequence[Trajectory],
    requests: Sequence[ContinuationRequest],
    triggered: Sequence[str],
    reference: torch.nn.Module | None = None,
    round_index: int = 0,
) -> UpdateResult:
    """Advantages (GRPO, or AXPO's two streams when there are continuations), then one policy update."""
    if resampling_on(config.algorithm):
        scored = axpo_advantages(originals, continuations, requests, config.algorithm)
    else:
        scored = grpo_advantages(originals, config.algorithm)
    policy.model.train()
    stats = policy_update(
        policy,
        optimizer,
        scored,
        config.algorithm,
        config.training,
        chat,
        reference=reference,
        temperature=config.rollout.sampling.temperature,
        seed=config.seed * 7919 + round_index,  # the mini-batch order
    )
    policy.model.eval()
    diagnostics = step_diagnostics(originals, continuations, requests, scored, list(triggered))
    return UpdateResult(stats, diagnostics)
