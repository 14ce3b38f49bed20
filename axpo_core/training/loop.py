"""One RL round as plain function composition, and R rounds of it in-process.

    questions → rollout (N per question) → [AXPO: trigger → candidates → rank → allocate → resample]
              → advantages → update → diagnostics

GRPO is the same round with the bracketed step off (`algorithm.name = grpo`). The Prefect tasks wrap these
same steps with storage in between; this module is the in-process version (`axpo train`).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from axpo_core.algorithms.axpo import SpecialTokens, axpo_step
from axpo_core.algorithms.diagnostics import step_diagnostics
from axpo_core.config import Config
from axpo_core.envs.suites import Question, get_suite
from axpo_core.models.loader import Policy
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.trajectory import Trajectory
from axpo_core.training.update import UpdateStats, make_optimizer, policy_update


def round_questions(config: Config, round_index: int) -> list[Question]:
    """B questions for a round, spread over the training suites; seeded by (seed, round)."""
    suites = config.training.suites
    count = config.training.questions_per_round
    per_suite = [count // len(suites) + (i < count % len(suites)) for i in range(len(suites))]
    seed = config.seed * 100_003 + round_index
    return [q for name, n in zip(suites, per_suite) if n for q in get_suite(name).generate(n, seed)]


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

    def __init__(self, config: Config, policy: Policy, engine: RolloutEngine):
        self.config = config
        self.policy = policy
        self.engine = engine
        self.optimizer = make_optimizer(policy.model, config.training)
        # β = 0 skips the reference entirely; otherwise it is the starting (SFT) checkpoint, frozen.
        self.reference = None
        if config.algorithm.kl_beta > 0:
            self.reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
        self.special = SpecialTokens.from_tokenizer(policy.tokenizer)
        self.rng = random.Random(config.seed)

    def run_round(self, round_index: int) -> RoundResult:
        config = self.config
        questions = round_questions(config, round_index)
        by_id = {q.question_id: q for q in questions}
        group_size = config.rollout.group_size * config.algorithm.rollout_multiplier
        torch.manual_seed(config.seed * 7919 + round_index)

        originals = self.engine.rollout(questions, group_size)
        step = axpo_step(
            originals,
            config.algorithm,
            continue_fn=lambda requests: self.engine.continue_from(requests, by_id),
            num_questions=len(questions),
            group_size=group_size,
            rng=self.rng,
            special_tokens=self.special,
        )
        self.policy.model.train()
        update = policy_update(
            self.policy,
            self.optimizer,
            step.scored,
            config.algorithm,
            config.training,
            self.engine.chat,
            reference=self.reference,
            temperature=config.rollout.sampling.temperature,
        )
        self.policy.model.eval()
        self.engine.generator.sync_weights()
        diagnostics = step_diagnostics(
            originals, step.continuations, step.requests, step.scored, step.triggered
        )
        return RoundResult(round_index, diagnostics, update, originals, step.continuations)

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
