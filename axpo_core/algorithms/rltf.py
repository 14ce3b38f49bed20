"""RLTF = GRPO + self-distillation of feedback-conditioned second attempts (Song, Chen et al., "Expanding the
Capabilities of Reinforcement Learning via Text Feedback", arXiv 2602.02482, RLTF-SD), the baseline the
paper cites as "an algorithm that utilizes the text feedback from the external teacher".

  1. `select_revisions`  first attempts y₀ ~ π(·|x₀) that failed get a critique c₀; x₁ = [x₀, y₀, c₀]
  2. resample            the engine samples the second attempt y₁ ~ π(·|x₁) (`ContinuationRequest.feedback`:
                         y₀ is prefilled, the critique is a user turn, y₁ is decoded)
  3. `rltf_advantages`   GRPO on the first attempts, plus RLTF-SD's distillation term: y₁ re-rooted on the
                         bare prompt x₀ (the policy must produce it *without* the feedback) with the
                         first-turn baseline A⁽⁰⁾ = R(x₀, y₁) − mean_j R(x₀, y₀ʲ) (advantage-weighted
                         regression, no importance weight between π(y₁|x₀) and π(y₁|x₁))

What differs from RLTF-SD (and why):
  * The feedback provider. RLTF's critiques come from a judge (an LLM or a human); this project has no
    teacher model during RL, so the critique is the verifier's own: that the final answer is wrong, with
    the first tool error the rollout met, if any. It never states the gold answer (no hint leakage).
  * Budget. Only failed first attempts get a second one, at most `rltf_revisions` per question (default
    ⌊budget_ratio·N⌋, AXPO's extra budget), in rollout order, so the arm costs what AXPO and ARPO cost.
  * The loss. The distillation rows enter the same clipped loss as everything else, with old log-probs
    recomputed under x₀ by the current policy (`reroot` leaves them for the update to fill): the first
    optimizer step's gradient is exactly A⁽⁰⁾·∇log π(y₁|x₀) (AWR), later PPO epochs are clipped around it.
    RLTF's second-turn RL term on (x₁, y₁), and RLTF-FM (predicting the critique), are not implemented.
With no failed first attempt (or `rltf_revisions: 0`) the result is `grpo_advantages`, bit for bit.
`Rltf` registers the name "rltf" (algorithms/registry.py); its pre-update hook is the log-prob recompute.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from axpo_core.algorithms.axpo import trigger
from axpo_core.algorithms.grpo import Grpo, Scored, broadcast, grpo_advantages
from axpo_core.algorithms.registry import RoundData, extra_budget, register
from axpo_core.config import AlgorithmConfig
from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory

if TYPE_CHECKING:
    from axpo_core.models.loader import Policy

DISTILL_STREAM = "rltf_distill:"  # + "<question>/<sample id>": one re-rooted second attempt


def revision_budget(cfg: AlgorithmConfig, group_size: int) -> int:
    """Second attempts per question: `rltf_revisions`, else ⌊budget_ratio · N⌋ (AXPO's extra budget)."""
    if cfg.rltf_revisions is not None:
        return cfg.rltf_revisions
    return extra_budget(cfg.budget_ratio, group_size)


def critique(trajectory: Trajectory) -> str:
    """The verifier's text feedback on a failed first attempt: the verdict, and the first tool error."""
    text = "Feedback: your final answer is not correct."
    errors = [e for e in trajectory.tool_errors if e is not None]
    if errors:
        text += f" Your tool call failed: {errors[0][:200]}"
    return text + " Reconsider the question and answer it again."


def select_revisions(
    trajectories: Sequence[Trajectory], cfg: AlgorithmConfig, group_size: int
) -> list[ContinuationRequest]:
    """One second attempt per failed first attempt, in rollout order, up to the question's budget; each is
    its own group `<question>/rltf-<id>` with a sample id after the question's originals."""
    budget = revision_budget(cfg, group_size)
    by_question: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_question[t.question_id].append(t)
    requests = []
    for question, rollouts in by_question.items():
        next_id = max(t.sample_id for t in rollouts) + 1
        for t in [t for t in rollouts if not t.correct][:budget]:
            group_id = f"{question}/rltf-{next_id}"
            requests.append(ContinuationRequest(t, len(t.token_ids), 1, group_id, next_id, critique(t)))
            next_id += 1
    return requests


def second_attempt_start(revision: Trajectory) -> int:
    """Where y₁ starts: the first policy token after the prefix and the feedback turn."""
    assert revision.parent is not None
    return next(
        (i for i in range(revision.parent.prefix_tokens, len(revision.loss_mask)) if revision.loss_mask[i]),
        len(revision.loss_mask),
    )


def reroot(revision: Trajectory, vision_start: int) -> Trajectory:
    """y₁ on the bare prompt x₀: the prompt's tokens, then y₁'s (its tool responses and images included).
    Log-probs are the sampler's under x₁ until the update recomputes them under x₀."""
    start = second_attempt_start(revision)
    prompt = slice(0, revision.prompt_len)
    second = slice(start, len(revision.token_ids))
    kept_images = revision.token_ids[: revision.prompt_len].count(vision_start)
    dropped_images = revision.token_ids[revision.prompt_len : start].count(vision_start)
    return replace(
        revision,
        token_ids=revision.token_ids[prompt] + revision.token_ids[second],
        logprobs=revision.logprobs[prompt] + revision.logprobs[second],
        entropies=revision.entropies[prompt] + revision.entropies[second],
        loss_mask=revision.loss_mask[prompt] + revision.loss_mask[second],
        images=revision.images[:kept_images] + revision.images[kept_images + dropped_images :],
        tool_call_spans=[],
        tool_calls=[],
        tool_errors=[],
        tool_outcomes=[],
        tool_call_opened=[],
        group_id=f"{revision.question_id}/rltf-distill",
    )


def rltf_advantages(
    originals: Sequence[Trajectory],
    revisions: Sequence[Trajectory],
    cfg: AlgorithmConfig,
    vision_start: int,
) -> list[Scored]:
    """GRPO over the first attempts (input order), then one distillation row per second attempt: y₁ re-rooted
    on x₀, every policy token with A⁽⁰⁾ = R(y₁) − mean_j R(y₀ʲ) over the question's first attempts."""
    scored = grpo_advantages(originals, cfg)
    if not revisions:
        return scored
    first_rewards: dict[str, list[float]] = defaultdict(list)
    for t in originals:
        first_rewards[t.question_id].append(t.reward)
    for revision in revisions:
        rewards = first_rewards.get(revision.question_id)
        if not rewards:
            raise ValueError(f"second attempt {revision.question_id}/{revision.sample_id}: no first attempts")
        advantage = revision.reward - sum(rewards) / len(rewards)
        stream = f"{DISTILL_STREAM}{revision.question_id}/{revision.sample_id}"
        scored.append(broadcast(reroot(revision, vision_start), advantage, stream=stream))
    return scored


def rltf_diagnostics(revisions: Sequence[Trajectory]) -> dict[str, float]:
    """Second attempts and how many the feedback made right (the shared ones come from step_diagnostics)."""
    n = len(revisions)
    return {
        "rltf_revisions": float(n),
        "rltf_revision_success_rate": sum(r.correct for r in revisions) / n if n else 0.0,
    }


def logprobs_under_policy(
    policy: Policy, chat: Any, rows: Sequence[Scored], temperature: float, batch_size: int
) -> None:
    """Replace the rows' old log-probs by the current policy's, teacher-forced on their own tokens (RLTF's
    re-rooted second attempts: the sampler's were under the feedback context, not this one)."""
    import torch  # here, not at the top: the rest of this module is plain Python over trajectories

    from axpo_core.rollout.logprobs import pack, sequence_logprobs

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


@register
class Rltf(Grpo):
    """RLTF-SD: its plan is one second attempt per failed first attempt, its advantages GRPO plus the
    distillation rows, whose old log-probs it recomputes under the bare prompt before the update. Its
    triggered list is AXPO's, so the shared flip_rate says how often the second attempts recover them."""

    name = "rltf"

    def plan(self, data: RoundData) -> tuple[list[str], list[ContinuationRequest]]:
        requests = select_revisions(data.originals, data.config.algorithm, data.group_size)
        return trigger(data.originals, data.config.algorithm), requests

    def advantages(self, data: RoundData) -> list[Scored]:
        cfg = data.config.algorithm
        return rltf_advantages(data.originals, data.continuations, cfg, data.special.vision_start)

    def before_update(self, data: RoundData, policy: Policy, chat: Any, scored: Sequence[Scored]) -> None:
        distilled = [s for s in scored if s.stream.startswith(DISTILL_STREAM)]
        config = data.config
        temperature = config.rollout.sampling.temperature
        logprobs_under_policy(policy, chat, distilled, temperature, config.training.micro_batch_size)

    def diagnostics(self, data: RoundData) -> dict[str, float]:
        return rltf_diagnostics(data.continuations)
