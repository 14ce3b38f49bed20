"""The four tasks of one RL round: rollout → detect_failures → resample → update (AXPO, ARPO and RLTF
resample; GRPO skips it).

Each reads its inputs by URI, calls the matching `axpo_core.training.steps` function and writes its
outputs back to storage; what it returns is a small record.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from prefect import task

from axpo_core.config import Config
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.factory import build_engine
from axpo_core.rollout.serialization import (
    requests_from_records,
    requests_to_records,
    trajectories_from_bytes,
    trajectories_to_bytes,
)
from axpo_core.runs import Arm
from axpo_core.storage import content_version
from axpo_core.threads import task_threads
from axpo_core.training.checkpoint import load_optimizer_state, save_checkpoint
from axpo_core.training.data import questions_by_ids, round_question_ids, shard_of, start_reward
from axpo_core.training.distributed import launch, write_job
from axpo_core.training.steps import detect_step, resample_step, rollout_step, update_step
from axpo_core.training.update import make_optimizer
from tasks.context import (
    CheckpointRef,
    DetectRef,
    ResampleRef,
    RolloutRef,
    RoundRecord,
    RunContext,
    checkpoint_folder,
    load_checkpoint,
    load_trainable,
)
from tasks.persistence import RESUMABLE


@task(
    name="rollout",
    task_run_name="rollout[{policy.scale} {arm.stage} r{round_index} shard {shard}/{num_shards}]",
    **RESUMABLE,
)
def rollout(
    ctx: RunContext,
    arm: Arm,
    round_index: int,
    policy: CheckpointRef,
    pool_ids: list[str],
    shard: int = 0,
    num_shards: int = 1,
) -> RolloutRef:
    """The round's rollouts, or with num_shards > 1 one contiguous shard of its questions (gather_rollouts
    joins them)."""
    started = time.monotonic()
    config = arm.config(ctx.config)
    question_ids = shard_of(round_question_ids(pool_ids, config, round_index), shard, num_shards)
    with task_threads(num_shards):  # the shards run side by side: they share the cores
        engine, _ = build_engine(config, policy=load_checkpoint(ctx, policy.uri))
        trajectories = rollout_step(engine, config, questions_by_ids(question_ids), round_index)
    records = ctx.layout(policy.scale, arm.slug).rollouts(round_index)  # rollouts/round-N.jsonl
    if num_shards > 1:
        records = records.removesuffix(".jsonl") + _shard_suffix(shard, num_shards) + ".jsonl"
    return _put_rollouts(ctx, records, trajectories, question_ids, time.monotonic() - started)


@task(
    name="gather_rollouts",
    task_run_name="gather_rollouts[{policy.scale} {arm.stage} r{round_index}]",
    **RESUMABLE,
)
def gather_rollouts(
    ctx: RunContext, arm: Arm, round_index: int, policy: CheckpointRef, shards: list[RolloutRef]
) -> RolloutRef:
    """The shards' trajectories in shard order (= question order), stored as one unsharded rollout; its
    seconds are the slowest shard's (they ran side by side)."""
    store = ctx.store
    trajectories = [t for ref in shards for t in trajectories_from_bytes(store.get_bytes(ref.uri))]
    question_ids = [q for ref in shards for q in ref.question_ids]
    records = ctx.layout(policy.scale, arm.slug).rollouts(round_index)
    return _put_rollouts(ctx, records, trajectories, question_ids, max(ref.seconds for ref in shards))


def _shard_suffix(shard: int, num_shards: int) -> str:
    return "" if num_shards == 1 else f".shard-{shard}-of-{num_shards}"


def _put_rollouts(
    ctx: RunContext, records: str, trajectories: list, question_ids: list[str], seconds: float
) -> RolloutRef:
    """Trajectories to `<records>.pkl` (the next tasks read it) and one JSON record each to `records`."""
    store = ctx.store
    data = trajectories_to_bytes(trajectories)
    uri = store.put_bytes(records + ".pkl", data)
    records_uri = store.put_jsonl(records, [t.record() for t in trajectories])
    n = max(len(trajectories), 1)  # a shard may get no question
    return RolloutRef(
        uri=uri,
        records_uri=records_uri,
        version=content_version(data),
        question_ids=question_ids,
        rollouts=len(trajectories),
        tool_use_rate=sum(t.used_tool for t in trajectories) / n,
        reward_mean=sum(t.reward for t in trajectories) / n,
        seconds=seconds,
    )


@task(
    name="detect_failures",
    task_run_name="detect_failures[{policy.scale} {arm.stage} r{round_index}]",
    **RESUMABLE,
)
def detect_failures(
    ctx: RunContext, arm: Arm, round_index: int, rollouts: RolloutRef, policy: CheckpointRef
) -> DetectRef:
    """AXPO's trigger, candidate prefixes, uncertainty ranking and budgeted allocation; ARPO's entropy branch
    points; RLTF's failed first attempts and their critiques (nothing for GRPO)."""
    config = arm.config(ctx.config)
    originals = trajectories_from_bytes(ctx.store.get_bytes(rollouts.uri))
    special = load_checkpoint(ctx, policy.uri).special
    triggered, requests = detect_step(config, originals, len(rollouts.question_ids), special, round_index)
    if not requests:
        return DetectRef(uri=None, triggered=triggered, requests=0)
    uri = ctx.layout(policy.scale, arm.slug).requests(round_index)
    records = requests_to_records(requests)
    ctx.store.put_json(uri, records)
    version = content_version(json.dumps(records, sort_keys=True).encode())
    return DetectRef(uri=uri, version=version, triggered=triggered, requests=len(requests))


@task(
    name="resample",
    task_run_name="resample[{policy.scale} {arm.stage} r{round_index} shard {shard}/{num_shards}]",
    **RESUMABLE,
)
def resample(
    ctx: RunContext,
    arm: Arm,
    round_index: int,
    policy: CheckpointRef,
    rollouts: RolloutRef,
    detected: DetectRef,
    shard: int = 0,
    num_shards: int = 1,
) -> ResampleRef:
    """The requested continuations (prefix prefilled once): AXPO's K per prefix, ARPO's branches and fill,
    RLTF's second attempts; a no-op when nothing was requested. With num_shards > 1, one contiguous shard
    of the requests (gather_resampled joins them)."""
    if detected.uri is None:
        return ResampleRef(uri=None, continuations=0)
    started = time.monotonic()
    config = arm.config(ctx.config)
    store = ctx.store
    originals = trajectories_from_bytes(store.get_bytes(rollouts.uri))
    requests = shard_of(requests_from_records(store.get_json(detected.uri), originals), shard, num_shards)
    with task_threads(num_shards):
        engine, _ = build_engine(config, policy=load_checkpoint(ctx, policy.uri))
        continuations = resample_step(
            engine, config, requests, questions_by_ids(rollouts.question_ids), round_index
        )
    where = ctx.layout(policy.scale, arm.slug).resampled(round_index)
    seconds = time.monotonic() - started
    return _put_resampled(ctx, where + _shard_suffix(shard, num_shards), continuations, seconds)


@task(
    name="gather_resampled",
    task_run_name="gather_resampled[{policy.scale} {arm.stage} r{round_index}]",
    **RESUMABLE,
)
def gather_resampled(
    ctx: RunContext, arm: Arm, round_index: int, policy: CheckpointRef, shards: list[ResampleRef]
) -> ResampleRef:
    """The shards' continuations in shard order (= request order), stored as one unsharded resample."""
    if all(ref.uri is None for ref in shards):
        return ResampleRef(uri=None, continuations=0)
    store = ctx.store
    continuations = [t for ref in shards for t in trajectories_from_bytes(store.get_bytes(ref.uri))]
    where = ctx.layout(policy.scale, arm.slug).resampled(round_index)
    return _put_resampled(ctx, where, continuations, max(ref.seconds for ref in shards))


def _put_resampled(ctx: RunContext, where: str, continuations: list, seconds: float) -> ResampleRef:
    """Continuations to `<where>.pkl` (the update reads it) and `<where>.jsonl`."""
    store = ctx.store
    data = trajectories_to_bytes(continuations)
    uri = store.put_bytes(where + ".pkl", data)
    store.put_jsonl(where + ".jsonl", [t.record() for t in continuations])
    n = len(continuations)
    return ResampleRef(uri=uri, version=content_version(data), continuations=n, seconds=seconds)


def _update_in_process(
    ctx: RunContext,
    config: Config,
    policy: CheckpointRef,
    reference: CheckpointRef,
    rollout_bytes: bytes,
    detected: DetectRef,
    resampled: ResampleRef,
    round_index: int,
    where: str,
) -> tuple[dict[str, float], str]:
    store = ctx.store
    started = time.monotonic()
    originals = trajectories_from_bytes(rollout_bytes)
    continuations = trajectories_from_bytes(store.get_bytes(resampled.uri)) if resampled.uri else []
    requests = requests_from_records(store.get_json(detected.uri), originals) if detected.uri else []
    trainee = load_trainable(ctx, policy.uri)
    optimizer = make_optimizer(trainee.model, config.training)
    load_optimizer_state(optimizer, checkpoint_folder(ctx, policy.uri))
    # The frozen reference (the SFT checkpoint) gets its own copy: the cached one may be generating.
    ref_model = None
    if config.algorithm.kl_beta > 0:
        ref_model = load_trainable(ctx, reference.uri).model.requires_grad_(False)
        if config.training.reference_device is not None:
            ref_model.to(config.training.reference_device)
    chat = ChatFormat(trainee.tokenizer, trainee.image_processor, trainee.special)
    loaded = time.monotonic()
    result = update_step(
        trainee, optimizer, config, chat, originals, continuations, requests, detected.triggered,
        reference=ref_model, round_index=round_index,
    )
    updated = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(trainee, tmp, optimizer)
        uri = store.put_dir(tmp, where)
    # The task's time around the update itself (the profile's "update: load / save").
    timing = {"seconds_update_load": loaded - started, "seconds_update_save": time.monotonic() - updated}
    return {**result.metrics(), **result.stats.cost(), **timing}, uri


@task(name="update", task_run_name="update[{policy.scale} {arm.stage} r{round_index}]", **RESUMABLE)
def update(
    ctx: RunContext,
    arm: Arm,
    round_index: int,
    policy: CheckpointRef,
    reference: CheckpointRef,
    rollouts: RolloutRef,
    detected: DetectRef,
    resampled: ResampleRef,
    tracking_run_id: str | None,
    start_accuracy: dict[str, float] | None = None,
) -> RoundRecord:
    """Advantages + one policy update; writes checkpoints/round-N (with optimizer state) and the metrics
    (with `start_accuracy`, the RL data filter's per question, also the round's reward gain over it)."""
    from tasks.tracking import log_round_metrics

    started = time.monotonic()
    config = arm.config(ctx.config)
    store = ctx.store
    layout = ctx.layout(policy.scale, arm.slug)
    rollout_bytes = store.get_bytes(rollouts.uri)
    if config.training.world_size > 1:  # torchrun + FSDP2, the same update_step on each rank
        with tempfile.TemporaryDirectory() as tmp:
            job = write_job(
                Path(tmp) / "job", config.model_dump(mode="json"), checkpoint_folder(ctx, policy.uri),
                checkpoint_folder(ctx, reference.uri) if config.algorithm.kl_beta > 0 else None,
                Path(tmp) / "out", round_index, detected.triggered, rollout_bytes,
                store.get_bytes(resampled.uri) if resampled.uri else None,
                store.get_bytes(detected.uri) if detected.uri else None,
            )
            metrics = launch(job, config.training.world_size)
            uri = store.put_dir(Path(tmp) / "out", layout.checkpoint(round_index))
    else:
        metrics, uri = _update_in_process(ctx, config, policy, reference, rollout_bytes, detected, resampled,
                                          round_index, layout.checkpoint(round_index))
    # Wall time of this round's tasks as they first ran (a resumed round keeps its original figures).
    metrics["seconds_rollout"] = rollouts.seconds
    metrics["seconds_resample"] = resampled.seconds
    metrics["seconds_update"] = time.monotonic() - started
    if start_accuracy:
        metrics["reward_start_policy"] = start_reward(start_accuracy, rollouts.question_ids)
        metrics["reward_gain_vs_start"] = metrics["reward_mean"] - metrics["reward_start_policy"]
    store.put_json(layout.metrics(round_index), metrics)
    if tracking_run_id is not None:
        log_round_metrics(ctx, tracking_run_id, metrics, round_index)
    return RoundRecord(
        stage=arm.stage,
        round=round_index,
        checkpoint=CheckpointRef(
            uri=uri, stage=arm.stage, scale=policy.scale, round=round_index, version=store.folder_version(uri)
        ),
        metrics={k: float(v) for k, v in metrics.items()},
    )
