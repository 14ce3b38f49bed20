"""Pipeline stages before RL: build (or load) the base model, SFT, and the RL data filter."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task

from axpo_core.rollout.factory import build_engine, configured_model
from axpo_core.training.data import filter_rl_pool
from tasks.context import CheckpointRef, RunContext, checkpoint_folder, load_checkpoint
from tasks.persistence import RESUMABLE
from tasks.progress import progress_enabled


@task(name="build_model", task_run_name="build_model[{scale}]", **RESUMABLE)
def build_model(ctx: RunContext, scale: str) -> CheckpointRef:
    """The base policy: a tiny scale built from its config, or a real checkpoint from `model.path`."""
    folder = configured_model(ctx.config, scale)
    uri = ctx.layout(scale).checkpoint("base")
    ctx.store.put_dir(folder, uri)
    return CheckpointRef(uri=uri, stage="base", scale=scale, version=ctx.store.folder_version(uri))


@task(name="sft", task_run_name="sft[{base.scale}]", **RESUMABLE)
def sft(ctx: RunContext, base: CheckpointRef) -> tuple[CheckpointRef, dict]:
    """SFT through TRL's SFTTrainer on the suites' correct oracle trajectories (~25% with tool calls)."""
    from axpo_core.training.sft import run_sft

    with tempfile.TemporaryDirectory(prefix="axpo-sft-out-") as tmp:
        folder = checkpoint_folder(ctx, base.uri)
        result = run_sft(ctx.config, folder, Path(tmp) / "sft", show_progress=progress_enabled())
        uri = ctx.store.put_dir(result.path, ctx.layout(base.scale).checkpoint("sft"))
    summary = {k: v for k, v in result.summary.items() if isinstance(v, int | float | str | bool)}
    ref = CheckpointRef(uri=uri, stage="sft", scale=base.scale, version=ctx.store.folder_version(uri))
    return ref, summary


@task(name="filter_rl_data", task_run_name="filter_rl_data[{policy.scale} {policy.stage}]", **RESUMABLE)
def filter_rl_data(ctx: RunContext, policy: CheckpointRef) -> tuple[list[str], dict]:
    """The paper's filter: keep the pool questions the starting policy does not solve n out of n times
    and, with `training.teacher_path`, that the teacher solves at least once in n."""
    config = ctx.config
    teacher_path = config.training.teacher_path

    def teacher():  # loaded after the policy's pass, whose engine is then released
        return build_engine(config, model_path=teacher_path)[0]

    kept, summary = filter_rl_pool(
        build_engine(config, policy=load_checkpoint(ctx, policy.uri))[0],
        config,
        teacher if teacher_path else None,
    )
    ctx.store.put_json(ctx.layout(policy.scale).rl_questions(), {"kept": kept, **summary})
    return kept, summary
