"""Tracking tasks: MLflow runs opened, tagged and closed with explicit run ids (tasks run in worker threads,
where MLflow's active-run context does not follow). The only mlflow use is inside axpo_core.tracking."""

from __future__ import annotations

import functools

from prefect import task

from axpo_core.tracking import Tracker
from tasks.context import RunContext


@functools.lru_cache(maxsize=8)
def _tracker(tracking_uri: str, output_dir: str, experiment: str) -> Tracker:
    return Tracker(tracking_uri, output_dir, experiment)


def tracker(ctx: RunContext) -> Tracker:
    return _tracker(ctx.tracking_uri, ctx.output_dir, ctx.config.tracking.experiment)


@task(name="open_tracking_run", retries=2, retry_delay_seconds=1)
def open_tracking_run(
    ctx: RunContext,
    name: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    log_config: bool = False,
) -> str:
    """A (child) run, reused when a rerun of the flow opens the same name under the same parent."""
    t = tracker(ctx)
    run_id = t.start_run(name, parent_run_id=parent_run_id, tags=tags, resume=True)
    if log_config:
        t.log_config(run_id, ctx.config)
    return run_id


@task(name="close_tracking_run", retries=2, retry_delay_seconds=1)
def close_tracking_run(ctx: RunContext, run_id: str, status: str = "FINISHED") -> None:
    tracker(ctx).end_run(run_id, status)


@task(name="log_metrics", retries=2, retry_delay_seconds=1)
def log_metrics(ctx: RunContext, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    tracker(ctx).log_metrics(run_id, metrics, step=step)


def log_round_metrics(ctx: RunContext, run_id: str, metrics: dict[str, float], round_index: int) -> None:
    """Per-round diagnostics and update stats with step = round (called inside the update task)."""
    tracker(ctx).log_metrics(run_id, metrics, step=round_index)


@task(name="log_artifacts", retries=2, retry_delay_seconds=1)
def log_artifacts(ctx: RunContext, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
    tracker(ctx).log_artifact(run_id, local_path, artifact_path)
