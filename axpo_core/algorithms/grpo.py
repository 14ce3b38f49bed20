"""GRPO: group-relative advantages and the token-level clipped policy loss (docs/design.md §4, paper §2.1,
App. A).

Read top to bottom:
  1. `group_advantages`   Â_i = (r_i − mean(r)) / (std(r) + ε) within one group of rollouts.
  2. `grpo_advantages`    groups trajectories by `Trajectory.group` and broadcasts Â_i to rollout i's policy
                          tokens, giving one `Scored` per trajectory (per-token advantages + the loss mask).
                          r_i is `shaped_reward`: the raw reward unless a tool bonus/penalty is configured.
  3. `clipped_policy_loss` the PPO-clip surrogate of App. A Eq. (clip-app) over padded [B, T] tensors, with
                          DAPO's asymmetric clip range and the k3 KL estimator toward the frozen reference.

AXPO (axpo.py) reuses all three; it only changes which tokens get which advantage. `Grpo` registers the
name "grpo" (algorithms/registry.py), CISPO and the tool bonus/penalty included: they are its variants.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch

from axpo_core.algorithms.registry import GRPO_STREAM, Algorithm, RoundData, Scored, register
from axpo_core.config import AlgorithmConfig
from axpo_core.rollout.trajectory import Trajectory

CONTINUATION_STREAM = "continuation:"  # + "<advantage group>/<sample id>": one resampled continuation


def group_advantages(rewards: Sequence[float], eps: float) -> list[float]:
    """Â_i = (r_i − mean(r)) / (std(r) + ε) over one group (paper §2.1; Eq. 2 and Eq. 4 reuse it).

    std is the *sample* standard deviation (Bessel's correction, n − 1), as TRL's GRPOTrainer
    (`trl.trainer.utils.nanstd`) and verl's GRPO (`torch.std`) compute it. A group of one has no spread:
    std = 0, so its advantage is 0 (TRL gets NaN there and zeroes it; same result).
    """
    n = len(rewards)
    if n == 0:
        return []
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1)) if n > 1 else 0.0
    return [(r - mean) / (std + eps) for r in rewards]


def broadcast(
    trajectory: Trajectory, advantage: float, mask: Sequence[int] | None = None, stream: str = GRPO_STREAM
) -> Scored:
    """Give every token in `mask` (default: the policy's tokens, `loss_mask`) the same advantage."""
    mask = list(trajectory.loss_mask if mask is None else mask)
    return Scored(trajectory, [advantage if m else 0.0 for m in mask], mask, stream)


def shaped_reward(trajectory: Trajectory, cfg: AlgorithmConfig) -> float:
    """The reward the advantage reads: the raw answer reward, plus the comparison table's reward shaping.

    * tool bonus b (DeepEyes, arXiv 2505.14362; Pixel-Reasoner and PyVision-RL reward tool use alike):
      + b for a rollout with a successful tool call (`tool_bonus_unit: rollout`, DeepEyes: its tool reward
      is 1 when a zoom returned an image and the answer is right), or + b per successful call (`call`, the
      paper's "per-tool-call reward", tab_comparison.tex caption); only on correct rollouts
      (`tool_bonus_on: correct`, DeepEyes) or on all. DeepEyes weighs it 1.2 against 0.8 for accuracy:
      b = 1.5 on this project's 0/1 reward is the same ratio (GRPO's normalization is scale-free).
    * tool penalty p (OTC, arXiv 2504.14870): − p per tool call (`tool_penalty_unit: call`) or once per
      tool-using rollout (`rollout`), on correct rollouts (`tool_penalty_on: correct`: OTC multiplies its
      tool reward into the correctness reward, so a wrong answer's 0 is never moved) or on all. OTC's own
      tool reward is cos(m·π / (2m + c)) × the answer reward (OTC-PPO; OTC-GRPO centres it on the group's
      fewest calls); the linear −p·m here has its direction (fewer calls for the same correct answer score
      higher), not its curve.
    Calls are opened `<tool_call>` blocks (a lone closing tag is a format error, not a call); the bonus
    counts the successful ones. With both at 0 (the default) this is `trajectory.reward` itself, so GRPO is
    unchanged bit for bit.
    """
    reward = trajectory.reward
    if cfg.tool_bonus == 0.0 and cfg.tool_penalty == 0.0:
        return reward
    opened = trajectory.tool_call_opened
    calls = sum(opened)
    successful = sum(o and e is None for o, e in zip(opened, trajectory.tool_errors, strict=True))
    if cfg.tool_bonus and (cfg.tool_bonus_on == "all" or trajectory.correct):
        reward += cfg.tool_bonus * (successful if cfg.tool_bonus_unit == "call" else float(successful > 0))
    if cfg.tool_penalty and (cfg.tool_penalty_on == "all" or trajectory.correct):
        reward -= cfg.tool_penalty * (calls if cfg.tool_penalty_unit == "call" else float(calls > 0))
    return reward


def grpo_advantages(trajectories: Sequence[Trajectory], cfg: AlgorithmConfig) -> list[Scored]:
    """GRPO: normalize (shaped) rewards within each `Trajectory.group`, broadcast to policy tokens (order
    kept)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, trajectory in enumerate(trajectories):
        groups[trajectory.group].append(i)
    advantage = [0.0] * len(trajectories)
    for members in groups.values():
        rewards = [shaped_reward(trajectories[i], cfg) for i in members]
        for i, a in zip(members, group_advantages(rewards, cfg.adv_eps), strict=True):
            advantage[i] = a
    return [broadcast(t, a) for t, a in zip(trajectories, advantage, strict=True)]


@register
class Grpo(Algorithm):
    """GRPO: no extra rollouts, group-normalized (shaped) rewards; the objective is `algorithm.loss`."""

    name = "grpo"

    def advantages(self, data: RoundData) -> list[Scored]:
        return grpo_advantages(data.originals, data.config.algorithm)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    token_weights: torch.Tensor,
    eps_low: float,
    eps_high: float,
    ref_logprobs: torch.Tensor | None = None,
    kl_beta: float = 0.0,
    objective: str = "ppo_clip",
    cispo_eps_low: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss to *minimize*: −L_clip of App. A (Eq. clip-app), per token, then Σ ℓ·w over the batch.

    All inputs are padded [B, T] tensors of the same shape (`advantages` may also be [B]: one per sequence).
    Per token, with ρ = exp(logπθ − logπold):
        ℓ = −min(ρ·Â, clip(ρ, 1 − ε_low, 1 + ε_high)·Â) + β·k3,   k3 = exp(ref − logπθ) − (ref − logπθ) − 1
    (k3 is the unbiased, non-negative KL(πθ‖πref) estimator TRL's GRPOTrainer and verl use).
    `token_weights` [B, T] (zero off the mask) aggregate: the loss is Σ ℓ·w. The update computes w from
    `algorithm.aggregation` and `algorithm.loss_normalization` (training/update.py `token_weights`):
    "token-mean" is w = 1/Σ mask over the batch (TRL `loss_type="bnpo"`, = "dapo" on one batch),
    "seq-mean-token-mean" w = 1/(B·T_row), the mean of the rows' token means (TRL `loss_type="grpo"`).
    `objective="cispo"` (CISPO, MiniMax-M1, arXiv 2506.13585, Eq. 4-5) clips the importance weight instead
    of the update: ℓ = −sg(r̂)·Â·logπθ with r̂ = clip(ρ, 1 − ε_low^IS, 1 + ε_high^IS), so a token past the
    bound still gets the gradient −r̂·Â·∇logπθ (PPO-clip gives it none). ε_high^IS is `eps_high`;
    ε_low^IS is `cispo_eps_low`, None for no lower bound, as MiniMax-M1 sets it. Inside the bounds the
    gradient equals PPO-clip's.
    Masked-out positions never reach an exp, so padding garbage cannot turn into inf/NaN.
    Stats (detached): token-means over masked tokens of kl, ratio, the clip fractions (TRL's definitions:
    low = ρ < 1 − ε_low with Â < 0, high = ρ > 1 + ε_high with Â > 0), and the loss without the KL term.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    on = mask.bool()
    mask_f = on.to(logprobs.dtype)
    zero = torch.zeros_like(logprobs)

    ratio = torch.exp(torch.where(on, logprobs - old_logprobs, zero))
    if objective == "cispo":
        low_bound = None if cispo_eps_low is None else 1 - cispo_eps_low
        weight = torch.clamp(ratio, min=low_bound, max=1 + eps_high).detach()
        policy_loss = -weight * advantages * torch.where(on, logprobs, zero)
    elif objective == "ppo_clip":
        clipped_ratio = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
        policy_loss = -torch.min(ratio * advantages, clipped_ratio * advantages)
    else:
        raise ValueError(f"unknown objective {objective!r}; expected ppo_clip or cispo")
    per_token = policy_loss
    kl = zero
    if ref_logprobs is not None and kl_beta != 0.0:
        delta = torch.where(on, ref_logprobs - logprobs, zero)
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_beta * kl

    def aggregate(x: torch.Tensor) -> torch.Tensor:
        return (x * token_weights).sum()

    loss = aggregate(per_token)

    with torch.no_grad():
        n_tokens = mask_f.sum().clamp(min=1.0)

        def token_mean(x: torch.Tensor) -> torch.Tensor:
            return (x.to(mask_f.dtype) * mask_f).sum() / n_tokens

        if objective == "cispo":  # tokens whose importance weight was clipped (whatever the advantage's sign)
            low = ratio < 1 - cispo_eps_low if cispo_eps_low is not None else torch.zeros_like(on)
            high = ratio > 1 + eps_high
        else:
            low = (ratio < 1 - eps_low) & (advantages < 0)
            high = (ratio > 1 + eps_high) & (advantages > 0)
        stats = {
            "policy_loss": aggregate(policy_loss).detach(),
            "kl": token_mean(kl),
            "ratio_mean": token_mean(ratio),
            "ratio_max": torch.where(on, ratio, zero).max() if on.any() else torch.zeros(()),
            "clip_fraction_low": token_mean(low),
            "clip_fraction_high": token_mean(high),
            "clip_fraction": token_mean(low | high),
            "num_tokens": mask_f.sum(),
        }
    return loss, stats
