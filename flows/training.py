"""SFT and RL flows. One RL round reads as the experiment:

rollout → detect_failures → resample (a no-op for GRPO) → update

With `rollout.num_workers` > 1, rollout and resample are each mapped over that many shards on the
configured task runner (pipeline.task_runner) and gathered back in question order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect import Flow, flow, unmapped

from axpo_core.config import Config
from axpo_core.runs import Arm
from flows.evaluation import task_runner
from tasks.artifacts import artifact_key, publish_table
from tasks.context import CheckpointRef, DetectRef, ResampleRef, RolloutRef, RoundRecord, RunContext
from tasks.progress import progress
from tasks.rl import detect_failures, gather_resampled, gather_rollouts, resample, rollout, update
from tasks.stages import sft


@flow(name="sft", flow_run_name="sft[{base.scale}]")
def sft_flow(ctx: RunContext, base: CheckpointRef) -> CheckpointRef:
    checkpoint, summary = sft(ctx, base)
    publish_table(
        table=[{"metric": k, "value": v} for k, v in summary.items()],
        key=artifact_key("sft", ctx.run_name, base.scale),
        description=f"SFT data and training summary ({base.scale})",
    )
    return checkpoint


@flow(name="axpo_round", flow_run_name="axpo_round[{policy.scale} {arm.stage} r{round_index}]")
def axpo_round(
    ctx: RunContext,
    arm: Arm,
    round_index: int,
    policy: CheckpointRef,
    reference: CheckpointRef,
    pool_ids: list[str],
    tracking_run_id: str | None = None,
    start_accuracy: dict[str, float] | None = None,
) -> RoundRecord:
    rollouts = sharded_rollout(ctx, arm, round_index, policy, pool_ids)
    detected = detect_failures(ctx, arm, round_index, rollouts, policy)
    resampled = sharded_resample(ctx, arm, round_index, policy, rollouts, detected)
    return update(
        ctx, arm, round_index, policy, reference, rollouts, detected, resampled, tracking_run_id,
        start_accuracy=start_accuracy,
    )  # fmt: skip


def sharded_rollout(
    ctx: RunContext, arm: Arm, round_index: int, policy: CheckpointRef, pool_ids: list[str]
) -> RolloutRef:
    """The rollout task, or (rollout.num_workers > 1) its shards mapped on the flow's runner and gathered."""
    shards = ctx.config.rollout.num_workers
    if shards == 1:
        return rollout(ctx, arm, round_index, policy, pool_ids)
    with shard_resources(ctx.config):
        parts = rollout.map(
            unmapped(ctx), unmapped(arm), round_index, unmapped(policy), unmapped(pool_ids),
            shard=list(range(shards)), num_shards=shards,
        )
    return gather_rollouts(ctx, arm, round_index, policy, parts)


def sharded_resample(
    ctx: RunContext,
    arm: Arm,
    round_index: int,
    policy: CheckpointRef,
    rollouts: RolloutRef,
    detected: DetectRef,
) -> ResampleRef:
    """The resample task, or its shards (as sharded_rollout) when there is something to resample."""
    shards = ctx.config.rollout.num_workers
    if shards == 1 or detected.uri is None:
        return resample(ctx, arm, round_index, policy, rollouts, detected)
    with shard_resources(ctx.config):
        parts = resample.map(
            unmapped(ctx), unmapped(arm), round_index, unmapped(policy), unmapped(rollouts),
            unmapped(detected), shard=list(range(shards)), num_shards=shards,
        )
    return gather_resampled(ctx, arm, round_index, policy, parts)


@contextmanager
def shard_resources(config: Config) -> Iterator[None]:
    """On Ray, each shard task asks for `rollout.num_gpus` GPUs (prefect-ray's remote_options)."""
    if config.pipeline.task_runner != "ray":
        yield
        return
    from prefect_ray.context import remote_options

    with remote_options(num_gpus=config.rollout.num_gpus):
        yield


def on_shard_runner(round_flow: Flow, config: Config) -> Flow:
    """A flow that maps rollout shards, on the configured task runner (one worker per shard) when they are
    sharded; unchanged otherwise."""
    if config.rollout.num_workers == 1:
        return round_flow
    runner = task_runner(config.pipeline.task_runner, config.rollout.num_workers)
    return round_flow.with_options(task_runner=runner)


@flow(name="train", flow_run_name="train[{start.scale} {arm.stage}]")
def train(
    ctx: RunContext,
    arm: Arm,
    start: CheckpointRef,
    pool_ids: list[str],
    tracking_run_id: str | None = None,
    start_accuracy: dict[str, float] | None = None,
) -> list[RoundRecord]:
    """R rounds from `start` (the SFT checkpoint, also the frozen KL reference); `start_accuracy` (the RL
    data filter's, per pool question) gives each round its reward gain on the same questions."""
    records = []
    policy = start
    rounds = range(1, ctx.config.training.rounds + 1)
    for round_index in progress(rounds, desc=f"{start.scale} {arm.stage} rounds", leave=None):
        round_flow = on_shard_runner(axpo_round, ctx.config)
        record = round_flow(ctx, arm, round_index, policy, start, pool_ids, tracking_run_id, start_accuracy)
        records.append(record)
        policy = record.checkpoint
    publish_table(
        table=[{"round": r.round, **{k: round(v, 4) for k, v in r.metrics.items()}} for r in records],
        key=artifact_key("train", ctx.run_name, start.scale, arm.slug),
        description=f"Per-round diagnostics of {arm.stage} ({start.scale})",
    )
    return records
