"""The four steps of one RL round, as plain functions over in-memory objects.

    rollout → detect (AXPO: trigger, candidates, rank, allocate; ARPO: entropy branch points under the
              budget; RLTF: failed first attempts and their critiques) → resample (AXPO, ARPO, RLTF) → update

What each algorithm does at detect and update is its registered object's (algorithms/registry.py); these
functions never ask which algorithm runs. `RLTrainer` chains them in one process; the Prefect tasks call
the same functions with object storage in between. Every step draws from its own stream of (config.seed,
purpose, round) (axpo_core/randomness.py), so a rerun after a crash redoes the same work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from axpo_core.algorithms.axpo import resample
from axpo_core.algorithms.diagnostics import step_diagnostics
from axpo_core.algorithms.registry import RoundData, get_algorithm
from axpo_core.config import Config, scaled_count
from axpo_core.envs.suites import Question
from axpo_core.models.loader import Policy, SpecialIds
from axpo_core.randomness import engine_seed
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory
from axpo_core.training.update import ONE_PROCESS, Shard, UpdateStats, policy_update


def group_size(config: Config) -> int:
    """N rollouts per question; `rollout_multiplier` 2 is the paper's equal-compute GRPO baseline, 1.25 the
    budget-matched one."""
    return scaled_count(config.rollout.group_size, config.algorithm.rollout_multiplier, "rollout.group_size")


def rollout_step(engine: RolloutEngine, config: Config, questions: Sequence[Question], round_index: int):
    seed = engine_seed(config.seed, "rollout", round_index)
    return engine.rollout(questions, group_size(config), seed=seed)


def detect_step(
    config: Config,
    originals: Sequence[Trajectory],
    num_questions: int,
    special: SpecialIds,
    round_index: int,
) -> tuple[list[str], list[ContinuationRequest]]:
    """The algorithm's plan: which groups it counts as triggered and which prefixes to continue (AXPO's
    resamples, ARPO's branches and fill, RLTF's second attempts; nothing for GRPO)."""
    data = RoundData(config, originals, special, round_index, num_questions, group_size(config))
    return get_algorithm(config.algorithm.name).plan(data)


def resample_step(
    engine: RolloutEngine,
    config: Config,
    requests: Sequence[ContinuationRequest],
    questions: Sequence[Question],
    round_index: int,
) -> list[Trajectory]:
    if not requests:
        return []
    by_id = {q.question_id: q for q in questions}
    seed = engine_seed(config.seed, "resample", round_index)
    return resample(requests, lambda reqs: engine.continue_from(reqs, by_id, seed=seed))


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
    shard: Shard = ONE_PROCESS,
) -> UpdateResult:
    """The algorithm's advantages and pre-update hook, one policy update, then the shared and the
    algorithm's diagnostics."""
    algorithm = get_algorithm(config.algorithm.name)
    num_questions = len({t.question_id for t in originals})
    data = RoundData(
        config, originals, chat.special, round_index, num_questions, group_size(config),
        requests=requests, continuations=continuations,
    )
    scored = algorithm.advantages(data)
    algorithm.before_update(data, policy, chat, scored)
    policy.model.train()
    if config.training.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    stats = policy_update(
        policy,
        optimizer,
        scored,
        config.algorithm,
        config.training,
        chat,
        reference=reference,
        temperature=config.rollout.sampling.temperature,
        seed=config.seed,
        round_index=round_index,
        shard=shard,
        group_size=group_size(config),
    )
    policy.model.eval()
    diagnostics = step_diagnostics(
        originals, continuations, requests, scored, list(triggered), config.algorithm
    )
    diagnostics.update(algorithm.diagnostics(data))
    return UpdateResult(stats, diagnostics)
