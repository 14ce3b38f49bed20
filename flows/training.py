"""SFT and RL flows. One RL round reads as the experiment:

rollout → detect_failures → resample (a no-op for GRPO) → update
"""

from __future__ import annotations

from prefect import flow

from tasks.artifacts import artifact_key, publish_table
from tasks.context import Arm, CheckpointRef, RoundRecord, RunContext
from tasks.progress import progress
from tasks.rl import detect_failures, resample, rollout, update
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
) -> RoundRecord:
    rollouts = rollout(ctx, arm, round_index, policy, pool_ids)
    detected = detect_failures(ctx, arm, round_index, rollouts, policy)
    resampled = resample(ctx, arm, round_index, policy, rollouts, detected)
    return update(ctx, arm, round_index, policy, reference, rollouts, detected, resampled, tracking_run_id)


@flow(name="train", flow_run_name="train[{start.scale} {arm.stage}]")
def train(
    ctx: RunContext,
    arm: Arm,
    start: CheckpointRef,
    pool_ids: list[str],
    tracking_run_id: str | None = None,
) -> list[RoundRecord]:
    """R rounds from `start` (the SFT checkpoint, also the frozen KL reference)."""
    records = []
    policy = start
    rounds = range(1, ctx.config.training.rounds + 1)
    for round_index in progress(rounds, desc=f"{start.scale} {arm.stage} rounds", leave=None):
        record = axpo_round(ctx, arm, round_index, policy, start, pool_ids, tracking_run_id)
        records.append(record)
        policy = record.checkpoint
    publish_table(
        table=[{"round": r.round, **{k: round(v, 4) for k, v in r.metrics.items()}} for r in records],
        key=artifact_key("train", ctx.run_name, start.scale, arm.slug),
        description=f"Per-round diagnostics of {arm.stage} ({start.scale})",
    )
    return records
