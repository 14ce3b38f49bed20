"""One RL round as plain function composition, and R rounds of it in-process.

    questions → rollout (N per question) → [AXPO: trigger → candidates → rank → allocate → resample]
              → advantages → update → diagnostics

GRPO is the same round with the bracketed step off (`algorithm.name = grpo`). The Prefect tasks wrap these
same steps with storage in between; this module is the in-process version (`axpo train`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from axpo_core.config import Config
from axpo_core.envs.suites import Question
from axpo_core.models.loader import Policy
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.trajectory import Trajectory
from axpo_core.training.data import question_pool_ids, questions_by_ids, round_question_ids
from axpo_core.training.steps import detect_step, resample_step, rollout_step, update_step
from axpo_core.training.update import UpdateStats, make_optimizer


@dataclass
class RoundResult:
    round_index: int
    diagnostics: dict[str, float]
    update: UpdateStats
    originals: list[Trajectory] = field(repr=False)
    continuations: list[Trajectory] = field(repr=False)

    def metrics(self) -> dict[str, float]:
        return {**self.diagnostics, **{f"update/{k}": v for k, v in self.update.as_dict().items()}}


class RLTrainer:
    """Holds what lives across rounds: the policy, its optimizer, the frozen reference, the engine."""

    def __init__(
        self, config: Config, policy: Policy, engine: RolloutEngine, pool_ids: list[str] | None = None
    ):
        self.config = config
        # Without the RL data filter (see flows/pipeline), the whole seeded pool is eligible.
        self.pool_ids = pool_ids if pool_ids is not None else question_pool_ids(config)
        self.policy = policy
        self.engine = engine
        self.optimizer = make_optimizer(policy.model, config.training)
        # β = 0 skips the reference entirely; otherwise it is the starting (SFT) checkpoint, frozen.
        self.reference = None
        if config.algorithm.kl_beta > 0:
            self.reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
        self.special = policy.special

    def run_round(self, round_index: int, questions: list[Question] | None = None) -> RoundResult:
        """One round on `questions` (default: this round's draw from the pool)."""
        config = self.config
        if questions is None:
            questions = questions_by_ids(round_question_ids(self.pool_ids, config, round_index))
        originals = rollout_step(self.engine, config, questions, round_index)
        triggered, requests = detect_step(config, originals, len(questions), self.special, round_index)
        continuations = resample_step(self.engine, config, requests, questions, round_index)
        result = update_step(
            self.policy,
            self.optimizer,
            config,
            self.engine.chat,
            originals,
            continuations,
            requests,
            triggered,
            reference=self.reference,
            round_index=round_index,
        )
        self.engine.generator.sync_weights()
        return RoundResult(round_index, result.diagnostics, result.stats, originals, continuations)

    def train(self, rounds: int, on_round: Callable[[RoundResult], None] | None = None) -> list[RoundResult]:
        results = []
        for round_index in range(1, rounds + 1):
            result = self.run_round(round_index)
            if on_round is not None:
                on_round(result)
            results.append(result)
        return results


def write_rollouts(path: Path, trajectories: list[Trajectory]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    with tmp.open("w") as f:
        for trajectory in trajectories:
            f.write(json.dumps(trajectory.record()) + "\n")
    tmp.replace(path)
    return path
