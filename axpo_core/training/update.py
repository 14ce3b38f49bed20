"""The policy update from scored trajectories (GRPO and AXPO share it; they differ only in the advantages).

PPO-style, as the verl/ProRL recipe the paper builds on: `training.ppo_epochs` passes over the rollout
batch, each shuffled and split into mini-batches of `training.mini_batch_size` sequences, one optimizer step
per mini-batch. The importance ratio is exactly 1 at the first step (the sampler's own log-probs) and
departs from 1 afterwards, which is where the clip acts.

Per micro-batch (`micro_batch_size` sequences, bounding memory): recompute log-probs under the current
policy (teacher-forced, images included), the clipped loss against the rollout log-probs with the reference
KL, backward. Gradients accumulate over a mini-batch's micro-batches exactly. Then grad-norm clipping and
the optimizer step, unless the loss or a gradient is NaN/inf: that step is skipped and counted.

How tokens are weighted (`token_weights`): every scored rollout gets one weight per token, from
`algorithm.loss_normalization` (batch_token_mean or per_stream, see config.py) and `algorithm.aggregation`.
The full-batch loss is Σ weight·ℓ over all masked tokens; a mini-batch's loss is its own weighted token mean
scaled to the full batch's total weight, so for batch_token_mean it is that mini-batch's token mean (verl)
and with one mini-batch it is the full-batch loss exactly.

Sharded (`training.world_size` > 1, training/distributed.py): every rank runs this same function on the
whole batch with its `Shard`, and takes rows rank, rank + world, ... of each mini-batch. The weights above
are global, so the ranks' losses sum to the one-process loss; FSDP averages gradients over the ranks, so
each rank's loss is scaled by the world size. Every rank runs the same number of micro-batches (a rank
short of rows runs one of the mini-batch's with weight 0), as FSDP's collectives need.
"""

from __future__ import annotations

import functools
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from axpo_core.algorithms.grpo import CONTINUATION_STREAM, GRPO_STREAM, Scored, clipped_policy_loss
from axpo_core.config import AlgorithmConfig, TrainingConfig, scaled_count
from axpo_core.models.loader import Policy
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.logprobs import pack, sequence_logprobs


@dataclass
class UpdateStats:
    loss: float  # mean over the optimizer steps of each step's loss
    kl: float  # token means over all steps' tokens (the first step's are at the rollout policy)
    clip_fraction: float
    ratio_max: float
    grad_norm: float  # mean over the steps (before clipping)
    entropy: float
    policy_tokens: int
    sequences: int
    steps: int  # optimizer steps taken
    skipped: bool  # True when every step was skipped (NaN/inf loss or gradient)
    skipped_steps: int = 0
    # The loss weight of an original (GRPO-stream) rollout's token relative to GRPO's 1/T over the same
    # originals: 1.0 under GRPO; below 1 when AXPO's continuations share one token mean (batch_token_mean).
    original_token_weight: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Shard:
    """This process's part of a sharded update: `rank` of `world` (the default is the one-process update)."""

    rank: int = 0
    world: int = 1

    def rows(self, mini: Sequence[int]) -> list[int]:
        return list(mini[self.rank :: self.world])

    def sum(self, values: Sequence[float]) -> list[float]:
        """Sums over the ranks (no-op for one process)."""
        return list(values) if self.world == 1 else self._reduce(values, "SUM")

    def max(self, value: float) -> float:
        return value if self.world == 1 else self._reduce([value], "MAX")[0]

    @staticmethod
    def _reduce(values: Sequence[float], op: str) -> list[float]:
        import torch.distributed as dist

        device = torch.cuda.current_device() if dist.get_backend() == "nccl" else "cpu"  # NCCL: GPU tensors
        t = torch.tensor(list(values), dtype=torch.float64, device=device)
        dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
        return t.tolist()


ONE_PROCESS = Shard()


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


def token_weights(items: Sequence[Scored], algorithm: AlgorithmConfig) -> list[float]:
    """One loss weight per item, shared by its masked tokens (the loss is Σ weight·ℓ over them).

    * batch_token_mean: one normaliser for the whole batch: 1/T (token-mean), or 1/(n·T_i)
      (seq-mean-token-mean: each row's token mean, averaged over the n rows).
    * per_stream: the same within each `Scored.stream` (the GRPO term, each prefix term, each continuation
      term), and the streams' losses summed (Eq. 5).
    """
    streams: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(items):
        streams[s.stream if algorithm.loss_normalization == "per_stream" else "batch"].append(i)
    weights = [0.0] * len(items)
    for members in streams.values():
        tokens = [sum(items[i].mask) for i in members]
        for i, t in zip(members, tokens, strict=True):
            if algorithm.aggregation == "token-mean":
                weights[i] = 1.0 / sum(tokens)
            else:
                weights[i] = 1.0 / (len(members) * t)
    return weights


def _original_token_weight(items: Sequence[Scored], weights: Sequence[float]) -> float:
    """Mean loss weight of a GRPO-stream token × the originals' policy tokens (GRPO's 1/T normaliser), so
    1.0 means "as in GRPO". Originals are every rollout that is not a continuation (a source's prefix
    stream included: under GRPO its whole rollout would be in the token mean)."""
    grpo = [(w, s) for w, s in zip(weights, items, strict=True) if s.stream == GRPO_STREAM]
    grpo_tokens = sum(sum(s.mask) for _, s in grpo)
    if not grpo_tokens:
        return 1.0
    originals = sum(
        sum(s.trajectory.loss_mask) for s in items if not s.stream.startswith(CONTINUATION_STREAM)
    )
    return sum(w * sum(s.mask) for w, s in grpo) / grpo_tokens * originals


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
    seed: int = 0,
    shard: Shard = ONE_PROCESS,
) -> UpdateStats:
    """`training.ppo_epochs` × ⌈n / mini_batch_size⌉ optimizer steps over `scored` (shuffled per epoch by
    `seed`), each accumulated over micro-batches of `training.micro_batch_size` (of this rank's rows when
    sharded)."""
    items = [s for s in scored if any(s.mask)]
    if not items:
        return UpdateStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, skipped=True)
    weights = token_weights(items, algorithm)
    total_weight = sum(w * sum(s.mask) for w, s in zip(weights, items, strict=True))
    total_tokens = sum(sum(s.mask) for s in items)
    original_weight = _original_token_weight(items, weights)

    order = random.Random(f"update:{seed}")
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "grad_norm": 0.0}
    ratio_max, steps, skipped, seen_tokens = 0.0, 0, 0, 0.0
    # A bigger group (rollout_multiplier) gets bigger mini-batches, not more optimizer steps.
    multiplier = algorithm.rollout_multiplier
    mini_size = scaled_count(training.mini_batch_size, multiplier, "training.mini_batch_size")
    for _epoch in range(training.ppo_epochs):
        indices = list(range(len(items)))
        order.shuffle(indices)
        for start in range(0, len(indices), mini_size):
            mini = indices[start : start + mini_size]
            # Scaled to the full batch's total weight: the mini-batch's own weighted token mean.
            scale = total_weight / sum(weights[i] * sum(items[i].mask) for i in mini)
            mine = shard.rows(mini)
            # The same number of micro-batches on every rank; a rank short of rows repeats one, weighted 0.
            size = training.micro_batch_size
            chunks = math.ceil(math.ceil(len(mini) / shard.world) / size)
            micro = [[(i, weights[i] * scale) for i in mine[k : k + size]] for k in range(0, len(mine), size)]
            micro += [[(mini[0], 0.0)]] * (chunks - len(micro))
            step = _step(
                policy, optimizer, [[(items[i], w) for i, w in rows] for rows in micro], algorithm, chat,
                reference, temperature, backward, training.max_grad_norm, shard,
                autocast=training.autocast_bf16 and shard.world == 1,
            )
            if step is None:
                skipped += 1
                continue
            steps += 1
            sums["loss"] += step["loss"]
            sums["grad_norm"] += step["grad_norm"]
            for key in ("kl", "clip_fraction", "entropy"):
                sums[key] += step[key]  # token sums
            seen_tokens += step["tokens"]
            ratio_max = max(ratio_max, step["ratio_max"])
    optimizer.zero_grad(set_to_none=True)
    per_token = max(seen_tokens, 1.0)
    return UpdateStats(
        loss=sums["loss"] / steps if steps else float("nan"),
        kl=sums["kl"] / per_token,
        clip_fraction=sums["clip_fraction"] / per_token,
        ratio_max=ratio_max,
        grad_norm=sums["grad_norm"] / steps if steps else float("nan"),
        entropy=sums["entropy"] / per_token,
        policy_tokens=int(total_tokens),
        sequences=len(items),
        steps=steps,
        skipped=steps == 0,
        skipped_steps=skipped,
        original_token_weight=original_weight,
    )


def _step(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    micro_batches: Sequence[Sequence[tuple[Scored, float]]],
    algorithm: AlgorithmConfig,
    chat: ChatFormat,
    reference: torch.nn.Module | None,
    temperature: float,
    backward: Callable[[torch.Tensor], None],
    max_grad_norm: float,
    shard: Shard,
    autocast: bool = False,
) -> dict[str, float] | None:
    """One optimizer step on a mini-batch's (scored row, loss weight) micro-batches (loss Σ weight·ℓ), or None
    when it was skipped (NaN/inf on any rank)."""
    model, device = policy.model, policy.device
    never = policy.special.never_sampled()
    optimizer.zero_grad(set_to_none=True)
    out = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "tokens": 0.0, "ratio_max": 0.0}
    for rows in micro_batches:
        micro = [s for s, _ in rows]
        counted = any(w for _, w in rows)  # a stand-in micro-batch (weight 0) adds nothing to the stats
        trajectories = [s.trajectory for s in micro]
        images = [[chat.encode_image(img) for img in t.images] for t in trajectories]
        packed = functools.partial(  # on a device: the policy's, and the reference's if it lives elsewhere
            pack, [t.token_ids for t in trajectories], images, policy.special.pad, policy.special.image_pad,
            "right",
        )
        batch = packed(device)
        width = batch.input_ids.shape[1]
        old = _padded([t.logprobs for t in trajectories], width, device)
        advantages = _padded([s.advantages for s in micro], width, device)
        mask = _padded([s.mask for s in micro], width, device)
        row_weights = torch.tensor([w for _, w in rows], device=device)
        ref = None
        if reference is not None and algorithm.kl_beta > 0:
            ref_device = next(reference.parameters()).device
            ref_batch = batch if ref_device == device else packed(ref_device)
            with torch.no_grad():
                ref, _ = sequence_logprobs(reference, ref_batch, temperature, never)
            ref = ref.to(device)
        # One process: autocast for bf16 compute; sharded, FSDP's mixed-precision policy does it.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logprobs, entropy = sequence_logprobs(model, batch, temperature, never)
        logprobs, entropy = logprobs.float(), entropy.float()
        loss, stats = clipped_policy_loss(
            logprobs,
            old,
            advantages,
            mask,
            eps_low=algorithm.eps_low,
            eps_high=algorithm.eps_high,
            ref_logprobs=ref,
            kl_beta=algorithm.kl_beta if ref is not None else 0.0,
            token_weights=row_weights.unsqueeze(1) * mask,
            objective=algorithm.loss,
            cispo_eps_low=algorithm.cispo_eps_low,
        )
        if shard.sum([0.0 if torch.isfinite(loss) else 1.0])[0]:
            optimizer.zero_grad(set_to_none=True)
            return None
        backward(loss * shard.world)  # FSDP averages the ranks' gradients; the loss is their sum
        if not counted:
            continue
        tokens = float(mask.sum().item())
        out["loss"] += loss.item()
        out["kl"] += float(stats["kl"]) * tokens
        out["clip_fraction"] += float(stats["clip_fraction"]) * tokens
        out["entropy"] += (entropy.detach() * mask).sum().item()
        out["tokens"] += tokens
        out["ratio_max"] = max(out["ratio_max"], float(stats["ratio_max"]))
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
    if not math.isfinite(grad_norm):
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.step()
    keys = ("loss", "kl", "clip_fraction", "entropy", "tokens")
    out.update(zip(keys, shard.sum([out[k] for k in keys]), strict=True))
    out["ratio_max"] = shard.max(out["ratio_max"])
    out["grad_norm"] = grad_norm
    return out
