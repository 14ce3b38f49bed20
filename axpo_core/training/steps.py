"""The four steps of one RL round, as plain functions over in-memory objects.

    rollout → detect (AXPO: trigger, candidates, rank, allocate; ARPO: entropy branch points under the
              budget; RLTF: failed first attempts and their critiques) → resample (AXPO, ARPO, RLTF) → update

`RLTrainer` chains them in one process; the Prefect tasks call the same functions with object storage in
between. Every step is seeded by (config.seed, round), so a rerun after a crash redoes the same work.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from axpo_core.algorithms.arpo import arpo_advantages, arpo_diagnostics, select_branches
from axpo_core.algorithms.axpo import (
    SpecialTokens,
    axpo_advantages,
    resample,
    resampling_on,
    select_prefixes,
    trigger,
)
from axpo_core.algorithms.diagnostics import step_diagnostics
from axpo_core.algorithms.grpo import Scored, grpo_advantages
from axpo_core.algorithms.rltf import DISTILL_STREAM, rltf_advantages, rltf_diagnostics, select_revisions
from axpo_core.config import Config, scaled_count
from axpo_core.envs.suites import Question
from axpo_core.models.loader import Policy
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.logprobs import pack, sequence_logprobs
from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory
from axpo_core.training.update import ONE_PROCESS, Shard, UpdateStats, policy_update


def group_size(config: Config) -> int:
    """N rollouts per question; `rollout_multiplier` 2 is the paper's equal-compute GRPO baseline, 1.25 the
    budget-matched one."""
    return scaled_count(config.rollout.group_size, config.algorithm.rollout_multiplier, "rollout.group_size")



def sampling_seed(config: Config, round_index: int, step: str) -> int:
    """The base seed of a round's rollouts or resamples; the engine derives each request's seed from it and
    the request's question, sample and turn, so no worker, shard or batch changes a trajectory."""
    digest = hashlib.sha256(f"{config.seed}:{step}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def rollout_step(engine: RolloutEngine, config: Config, questions: Sequence[Question], round_index: int):
    return engine.rollout(questions, group_size(config), seed=sampling_seed(config, round_index, "rollout"))


def detect_step(
    config: Config,
    originals: Sequence[Trajectory],
    num_questions: int,
    special: SpecialTokens,
    round_index: int,
) -> tuple[list[str], list[ContinuationRequest]]:
    """Which groups failed at the tool call and which prefixes to resample (nothing for GRPO). ARPO's
    requests are its branches (and the fill), RLTF's its second attempts; for both the triggered list is
    AXPO's, so the shared flip_rate says how often their extra rollouts recover those groups."""
    if config.algorithm.name == "arpo":
        rng = random.Random(f"{config.seed}:arpo:{round_index}")
        n = group_size(config)
        _, requests = select_branches(originals, config.algorithm, n, rng, special.vocab_size)
        return trigger(originals, config.algorithm), requests
    if config.algorithm.name == "rltf":
        requests = select_revisions(originals, config.algorithm, group_size(config))
        return trigger(originals, config.algorithm), requests
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
    by_id = {q.question_id: q for q in questions}
    seed = sampling_seed(config, round_index, "resample")
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
    """Advantages (GRPO, AXPO's two streams, ARPO's over the branched group, or RLTF's first attempts plus
    its distillation rows), then one policy update."""
    algorithm = config.algorithm
    if algorithm.name == "axpo" and (algorithm.tool_bonus or algorithm.tool_penalty):
        raise ValueError("algorithm.tool_bonus / tool_penalty are GRPO baselines; AXPO reads the raw reward")
    if algorithm.name == "arpo":
        scored = arpo_advantages(originals, continuations, algorithm)
    elif algorithm.name == "rltf":
        scored = rltf_advantages(originals, continuations, algorithm, chat.special.vision_start)
        temperature = config.rollout.sampling.temperature
        distilled = [s for s in scored if s.stream.startswith(DISTILL_STREAM)]
        _logprobs_under_policy(policy, chat, distilled, temperature, config.training.micro_batch_size)
    elif resampling_on(algorithm):
        scored = axpo_advantages(originals, continuations, requests, algorithm)
    else:
        scored = grpo_advantages(originals, config.algorithm)
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
        seed=config.seed * 7919 + round_index,  # the mini-batch order
        shard=shard,
        group_size=group_size(config),
    )
    policy.model.eval()
    diagnostics = step_diagnostics(
        originals, continuations, requests, scored, list(triggered), algorithm
    )
    if algorithm.name == "arpo":
        vocab_size = SpecialTokens.from_tokenizer(chat.tokenizer).vocab_size
        diagnostics.update(arpo_diagnostics(originals, requests, algorithm, vocab_size))
    if algorithm.name == "rltf":
        diagnostics.update(rltf_diagnostics(continuations))
    return UpdateResult(stats, diagnostics)


def _logprobs_under_policy(
    policy: Policy, chat, rows: Sequence[Scored], temperature: float, batch_size: int
) -> None:
    """Replace the rows' old log-probs by the current policy's, teacher-forced on their own tokens (RLTF's
    re-rooted second attempts: the sampler's were under the feedback context, not this one)."""
    never = policy.special.never_sampled()
    policy.model.eval()
    for start in range(0, len(rows), batch_size):
        chunk = [s.trajectory for s in rows[start : start + batch_size]]
        images = [[chat.encode_image(img) for img in t.images] for t in chunk]
        batch = pack(
            [t.token_ids for t in chunk], images, policy.special.pad, policy.special.image_pad, "right",
            policy.device,
        )
        with torch.no_grad():
            logprobs, _ = sequence_logprobs(policy.model, batch, temperature, never)
        for row, t in enumerate(chunk):
            values = logprobs[row, : len(t.token_ids)].tolist()
            t.logprobs = [v if m else 0.0 for v, m in zip(values, t.loss_mask, strict=True)]
