"""The policy update from scored trajectories (GRPO and AXPO share it; they differ only in the advantages).

PPO-style, as the verl/ProRL recipe the paper builds on: `training.ppo_epochs` passes over the rollout
batch, each shuffled and split into mini-batches of `training.mini_batch_size` sequences, one optimizer step
per mini-batch. The importance ratio is exactly 1 at the first step (the sampler's own log-probs) and
departs from 1 afterwards, which is where the clip acts.

Mini-batches (`training.minibatch`): "groups" (the default) fills each with whole questions, every
rollout and continuation of a question together, mini_batch_size / group_size questions a mini-batch, as
verl counts `ppo_mini_batch_size` in prompts; so AXPO's and ARPO's extra rows ride in their question's
mini-batch and every arm takes the same optimizer steps. "rows" shuffles single rollouts (the sweeps that
ran before 2026-12-08 pin it).

Per micro-batch (`micro_batch_size` sequences, bounding memory): recompute log-probs under the current
policy (teacher-forced, images included), the clipped loss against the rollout log-probs with the reference
KL, backward. With `training.shared_prefix` the micro-batch's sequences are forwarded as one prefix tree per
question (rollout/prefix_tree.py): the group's prompt and the continuations' kept prefix once, for the
policy and the reference, the same loss and gradients as the flat forward up to float rounding.
Gradients accumulate over a mini-batch's micro-batches exactly. Then grad-norm clipping and
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
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from axpo_core.algorithms.grpo import CONTINUATION_STREAM, GRPO_STREAM, Scored, clipped_policy_loss
from axpo_core.config import AlgorithmConfig, TrainingConfig, scaled_count
from axpo_core.models.loader import Policy
from axpo_core.randomness import stream
from axpo_core.rollout.chat import ChatFormat, EncodedImage
from axpo_core.rollout.logprobs import PackedBatch, pack, sequence_logprobs
from axpo_core.rollout.prefix_tree import TreeBatch, pack_tree, supports_tree, tree_logprobs


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
    # Tokens the policy forward processed over all steps, and what the flat forward would have (Σ lengths):
    # their ratio is what `training.shared_prefix` saves.
    forwarded_tokens: int = 0
    flat_tokens: int = 0
    # Where the update's time went (s, all steps): packing the inputs (images encoded, prefix trees), the
    # reference's forward, the policy's forward + loss + backward, gradient clipping + the optimizer step.
    seconds_pack: float = 0.0
    seconds_reference: float = 0.0
    seconds_policy: float = 0.0
    seconds_optimizer: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The update's statistics: deterministic for a given batch and seed (the cost is `cost()`)."""
        return {k: float(v) for k, v in asdict(self).items() if k not in _COST}

    def cost(self) -> dict[str, float]:
        """What the update cost, for the profile: wall seconds per part, and the tokens forwarded against
        the flat forward's (one rank's, when sharded); neither is part of the algorithm's statistics."""
        return {
            **{f"seconds_update_{key.removeprefix('seconds_')}": getattr(self, key) for key in _TIMED},
            "tokens_update_forwarded": float(self.forwarded_tokens),
            "tokens_update_flat": float(self.flat_tokens),
        }


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
_TIMED = ("seconds_pack", "seconds_reference", "seconds_policy", "seconds_optimizer")  # UpdateStats' clock
_COST = (*_TIMED, "forwarded_tokens", "flat_tokens")  # UpdateStats.cost(), not its statistics


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


def _chunks(rows: Sequence[int], size: int) -> list[list[int]]:
    return [list(rows[k : k + size]) for k in range(0, len(rows), size)]


def _question_blocks(items: Sequence[Scored], rows: Sequence[int]) -> list[list[int]]:
    """`rows` grouped by question, in order of first appearance (a question's rows keep their order)."""
    blocks: dict[str, list[int]] = {}
    for i in rows:
        blocks.setdefault(items[i].trajectory.question_id, []).append(i)
    return list(blocks.values())


def _mini_batches(
    items: Sequence[Scored],
    training: TrainingConfig,
    mini_size: int,
    group_size: int | None,
    order: random.Random,
) -> list[list[int]]:
    """Every epoch's mini-batches, in the order they are taken (module doc: "groups" or "rows")."""
    minis = []
    blocks = _question_blocks(items, range(len(items)))
    if group_size is None:  # the most original rollouts any question has
        group_size = max(sum(items[i].trajectory.parent is None for i in b) for b in blocks)
    per_mini = max(1, mini_size // max(group_size, 1))  # both scaled by rollout_multiplier
    for _epoch in range(training.ppo_epochs):
        if training.minibatch == "rows":
            indices = list(range(len(items)))
            order.shuffle(indices)
            minis += _chunks(indices, mini_size)
            continue
        shuffled = list(blocks)  # each epoch shuffles the questions' first-appearance order
        order.shuffle(shuffled)
        for k in range(0, len(shuffled), per_mini):
            minis.append([i for block in shuffled[k : k + per_mini] for i in block])
    return minis


def _micro_batches(items: Sequence[Scored], rows: Sequence[int], size: int) -> list[list[int]]:
    """Micro-batches of at most `size` rows that keep a question's rows together where they fit."""
    micro: list[list[int]] = []
    for block in _question_blocks(items, rows):
        for part in _chunks(block, size):
            if micro and len(micro[-1]) + len(part) <= size:
                micro[-1].extend(part)
            else:
                micro.append(part)
    return micro


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
    group_size: int | None = None,
    round_index: int = 0,
) -> UpdateStats:
    """`training.ppo_epochs` passes over `scored` (shuffled per epoch by the experiment `seed`'s update
    stream of round `round_index`, axpo_core/randomness.py), one optimizer step per
    mini-batch (module doc), each accumulated over micro-batches of `training.micro_batch_size` (of this
    rank's rows when sharded). `group_size`: the round's rollouts per question (None: the most original
    rollouts any question has), which sizes "groups" mini-batches."""
    items = [s for s in scored if any(s.mask)]
    if not items:
        return UpdateStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, skipped=True)
    weights = token_weights(items, algorithm)
    total_weight = sum(w * sum(s.mask) for w, s in zip(weights, items, strict=True))
    total_tokens = sum(sum(s.mask) for s in items)
    original_weight = _original_token_weight(items, weights)

    order = stream(seed, "update", round_index)
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "grad_norm": 0.0}
    ratio_max, steps, skipped, seen_tokens = 0.0, 0, 0, 0.0
    timed = dict.fromkeys(_COST, 0.0)
    encoded: dict[int, EncodedImage] = {}  # id(image) -> its encoding, for every step of this update
    # id(trajectory) -> its reference log-probs: the reference is frozen, so one forward per row per update
    reference_rows: dict[int, torch.Tensor] = {}
    # A bigger group (rollout_multiplier) gets bigger mini-batches, not more optimizer steps.
    multiplier = algorithm.rollout_multiplier
    mini_size = scaled_count(training.mini_batch_size, multiplier, "training.mini_batch_size")
    for mini in _mini_batches(items, training, mini_size, group_size, order):
        # Scaled to the full batch's total weight: the mini-batch's own weighted token mean.
        scale = total_weight / sum(weights[i] * sum(items[i].mask) for i in mini)
        mine = shard.rows(mini)
        # The same number of micro-batches on every rank; a rank short of rows repeats one, weighted 0.
        size = training.micro_batch_size
        chunks = math.ceil(math.ceil(len(mini) / shard.world) / size)
        # One process: micro-batches of whole questions where they fit (more prefix to share); sharded, plain
        # chunks, whose count every rank can compute.
        split = _micro_batches(items, mine, size) if shard.world == 1 else _chunks(mine, size)
        micro = [[(i, weights[i] * scale) for i in chunk] for chunk in split]
        chunks = max(chunks, len(micro))
        micro += [[(mini[0], 0.0)]] * (chunks - len(micro))
        step = _step(
            policy, optimizer, [[(items[i], w) for i, w in rows] for rows in micro], algorithm, chat,
            reference, temperature, backward, training.max_grad_norm, shard,
            autocast=training.autocast_bf16 and shard.world == 1, shared_prefix=training.shared_prefix,
            clock=timed, encoded=encoded, reference_rows=reference_rows,
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
        **{key: timed[key] for key in _TIMED},
        forwarded_tokens=int(timed["forwarded_tokens"]),
        flat_tokens=int(timed["flat_tokens"]),
    )


@dataclass
class _Inputs:
    """A micro-batch's policy inputs: the flat right-padded batch, and its prefix tree when shared."""

    flat: PackedBatch
    tree: TreeBatch | None

    @property
    def input_ids(self) -> torch.Tensor:
        return self.flat.input_ids  # the [n, T] layout every per-token tensor of the loss follows

    @property
    def flat_tokens(self) -> int:
        return int(self.flat.attention_mask.sum())

    @property
    def policy_batch(self) -> PackedBatch | TreeBatch:
        return self.tree if self.tree is not None else self.flat

    @property
    def forwarded(self) -> int:
        return self.tree.packed_tokens if self.tree is not None else self.flat_tokens


def _teacher_forcing(
    policy: Policy,
    reference: torch.nn.Module | None,
    micro: Sequence[Scored],
    chat: ChatFormat,
    shared_prefix: bool,
    encoded: dict[int, EncodedImage] | None = None,
) -> tuple[_Inputs, Callable[[], PackedBatch | TreeBatch], Callable]:
    """The micro-batch's inputs for the policy, a maker of the reference's (packed again only when it
    lives on another device), and the log-prob function both go through (flat or prefix tree). `encoded`
    keeps each image's encoding (by id) across the update's steps (the image processor is not free)."""
    device, special = policy.device, policy.special
    trajectories = [s.trajectory for s in micro]
    encoded = {} if encoded is None else encoded
    for t in trajectories:  # a group's rollouts hold the same image objects (also as deserialized)
        for img in t.images:
            if id(img) not in encoded:
                encoded[id(img)] = chat.encode_image(img)
    images = [[encoded[id(img)] for img in t.images] for t in trajectories]
    ids = [t.token_ids for t in trajectories]
    packed = functools.partial(pack, ids, images, special.pad, special.image_pad, "right")
    flat = packed(device)
    tree = None
    if shared_prefix and supports_tree(policy.model):
        keys = [t.question_id for t in trajectories]
        tree = pack_tree(policy.model, flat, images, keys, special.pad, special.image_pad)
    inputs = _Inputs(flat, tree)
    ref_device = next(reference.parameters()).device if reference is not None else device

    def ref_batch() -> PackedBatch | TreeBatch:
        if ref_device == device:
            return tree if tree is not None else flat
        moved = packed(ref_device)
        return pack_tree(reference, moved, images, keys, special.pad, special.image_pad) if tree else moved

    return inputs, ref_batch, tree_logprobs if tree is not None else sequence_logprobs


def _first(
    forward: Callable, model: torch.nn.Module, batch: Callable, temperature: float, never: object
) -> torch.Tensor:
    """The log-probs `forward` gives for `model` on `batch()` (made only when called)."""
    return forward(model, batch(), temperature, never)[0]


def _reference_logprobs(
    micro: Sequence[Scored],
    width: int,
    device: torch.device,
    cache: dict[int, torch.Tensor] | None,
    forward: Callable[[], torch.Tensor],
    shard: Shard = ONE_PROCESS,
) -> torch.Tensor:
    """The frozen reference's log-probs of the micro-batch's rows, [n, width]: a row forwarded in an earlier
    step of this update (another PPO epoch) is taken from `cache`, so each row costs one reference forward
    per update, not one per epoch. Positions past a row's end are 0 (the loss masks them). Sharded, the
    ranks forward together or not at all (a sharded reference's forward is a collective)."""
    trajectories = [s.trajectory for s in micro]
    missing = cache is None or any(id(t) not in cache for t in trajectories)
    if shard.world > 1:
        missing = shard.sum([float(missing)])[0] > 0
    if missing:
        with torch.no_grad():
            ref = forward().to(device)
        if cache is not None:
            for t, row in zip(trajectories, ref, strict=True):
                cache[id(t)] = row[: len(t.token_ids)].clone()
        return ref
    ref = torch.zeros((len(trajectories), width), device=device)
    for i, t in enumerate(trajectories):
        ref[i, : len(t.token_ids)] = cache[id(t)]
    return ref


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
    shared_prefix: bool = False,
    clock: dict[str, float] | None = None,
    encoded: dict[int, EncodedImage] | None = None,
    reference_rows: dict[int, torch.Tensor] | None = None,
) -> dict[str, float] | None:
    """One optimizer step on a mini-batch's (scored row, loss weight) micro-batches (loss Σ weight·ℓ), or None
    when it was skipped (NaN/inf on any rank). `clock` accumulates this rank's cost (`_COST`: seconds per
    part, forwarded and flat tokens), skipped steps included."""
    clock = clock if clock is not None else dict.fromkeys(_COST, 0.0)
    tick = time.perf_counter()

    def lap(part: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        clock[part] += now - tick
        tick = now

    model, device = policy.model, policy.device
    never = policy.special.never_sampled()
    optimizer.zero_grad(set_to_none=True)
    out = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "entropy": 0.0, "tokens": 0.0, "ratio_max": 0.0}
    for rows in micro_batches:
        micro = [s for s, _ in rows]
        counted = any(w for _, w in rows)  # a stand-in micro-batch (weight 0) adds nothing to the stats
        batch, ref_batch, forward = _teacher_forcing(policy, reference, micro, chat, shared_prefix, encoded)
        width = batch.input_ids.shape[1]
        old = _padded([s.trajectory.logprobs for s in micro], width, device)
        advantages = _padded([s.advantages for s in micro], width, device)
        mask = _padded([s.mask for s in micro], width, device)
        row_weights = torch.tensor([w for _, w in rows], device=device)
        clock["forwarded_tokens"] += batch.forwarded
        clock["flat_tokens"] += batch.flat_tokens
        lap("seconds_pack")
        ref = None
        if reference is not None and algorithm.kl_beta > 0:
            ref = _reference_logprobs(
                micro, width, device, reference_rows,
                functools.partial(_first, forward, reference, ref_batch, temperature, never), shard,
            )
            lap("seconds_reference")
        # One process: autocast for bf16 compute; sharded, FSDP's mixed-precision policy does it.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logprobs, entropy = forward(model, batch.policy_batch, temperature, never)
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
        lap("seconds_policy")
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
    lap("seconds_optimizer")
    keys = ("loss", "kl", "clip_fraction", "entropy", "tokens")
    out.update(zip(keys, shard.sum([out[k] for k in keys]), strict=True))
    out["ratio_max"] = shard.max(out["ratio_max"])
    out["grad_norm"] = grad_norm
    return out
