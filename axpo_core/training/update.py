"""One policy update from scored trajectories (GRPO and AXPO share it; they differ only in the advantages).

Per micro-batch: recompute log-probs under the current policy (teacher-forced, images included), the
clipped loss against the rollout log-probs with the reference KL, backward. Gradients accumulate over
micro-batches so memory is bounded by `micro_batch_size`, with each micro-batch's loss weighted so the
sum equals the loss over the whole batch. Then grad-norm clipping and one optimizer step, unless the
loss or a gradient is NaN/inf, in which case the step is skipped and reported.

Plain torch: an `accelerate.Accelerator` can wrap the model and optimizer (FSDP/DeepSpeed) and drive
the same function; only `backward` would go through `accelerator.backward`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from axpo_core.algorithms.grpo import Scored, clipped_policy_loss
from axpo_core.config import AlgorithmConfig, TrainingConfig
from axpo_core.models.loader import Policy
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.logprobs import pack, sequence_logprobs


@dataclass
class UpdateStats:
    loss: float
    kl: float
    clip_fraction: float
    grad_norm: float
    entropy: float
    policy_tokens: int
    sequences: int
    skipped: bool  # True when a NaN/inf loss or gradient made the step a no-op

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def make_optimizer(model: torch.nn.Module, training: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
    )


def _padded(
    rows: Sequence[Sequence[float]], width: int, device: torch.device, dtype=torch.float32
) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(list(row), dtype=dtype)
    return out.to(device)


def policy_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    scored: Sequence[Scored],
    algorithm: AlgorithmConfig,
    training: TrainingConfig,
    chat: ChatFormat,
    reference: torch.nn.Module | None = None,
    temperature: float = 1.0,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
) -> UpdateStats:
    """One optimizer step over `scored` (all of them), in micro-batches of `training.micro_batch_size`."""
    items = [s for s in scored if any(s.mask)]
    model = policy.model
    device = policy.device
    never = policy.special.never_sampled()
    total_tokens = sum(sum(s.mask) for s in items)
    if not items:
        return UpdateStats(0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, skipped=True)

    optimizer.zero_grad(set_to_none=True)
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0}
    finite = True
    for start in range(0, len(items), training.micro_batch_size):
        micro = items[start : start + training.micro_batch_size]
        trajectories = [s.trajectory for s in micro]
        images = [[chat.encode_image(img) for img in t.images] for t in trajectories]
        batch = pack(
            [t.token_ids for t in trajectories],
            images,
            policy.special.pad,
            policy.special.image_pad,
            "right",
            device,
        )
        width = batch.input_ids.shape[1]
        old = _padded([t.logprobs for t in trajectories], width, device)
        advantages = _padded([s.advantages for s in micro], width, device)
        mask = _padded([s.mask for s in micro], width, device)
        ref = None
        if reference is not None and algorithm.kl_beta > 0:
            with torch.no_grad():
                ref, _ = sequence_logprobs(reference, batch, temperature, never)
        logprobs, entropy = sequence_logprobs(model, batch, temperature, never)
        loss, stats = clipped_policy_loss(
            logprobs,
            old,
            advantages,
            mask,
            eps_low=algorithm.eps_low,
            eps_high=algorithm.eps_high,
            ref_logprobs=ref,
            kl_beta=algorithm.kl_beta if ref is not None else 0.0,
            aggregation=algorithm.aggregation,
        )
        # The loss is a mean over this micro-batch; weight it by its share of the whole batch.
        tokens = mask.sum().item()
        weight = tokens / total_tokens if algorithm.aggregation == "token-mean" else len(micro) / len(items)
        if not torch.isfinite(loss):
            finite = False
            break
        backward(loss * weight)
        sums["loss"] += loss.item() * weight
        sums["kl"] += float(stats.get("kl", 0.0)) * tokens / total_tokens
        sums["clip_fraction"] += float(stats.get("clip_fraction", 0.0)) * tokens / total_tokens
        sums["entropy"] += (entropy.detach() * mask).sum().item() / total_tokens

    grad_norm = float("nan")
    if finite:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), training.max_grad_norm))
        finite = math.isfinite(grad_norm)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return UpdateStats(
        loss=sums["loss"] if finite else float("nan"),
        kl=sums["kl"],
        clip_fraction=sums["clip_fraction"],
        grad_norm=grad_norm,
        entropy=sums["entropy"],
        policy_tokens=int(total_tokens),
        sequences=len(items),
        skipped=not finite,
    )
