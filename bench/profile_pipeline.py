"""Where `make run`'s time goes: the pipeline flow run in this process, its wall time split by stage.

The stages are read from Prefect's own record of the run (every task run's start and end), so the same
script profiles older checkouts too (run it with PYTHONPATH pointing at one):
  model build, SFT, the RL data filter (build_model, sft, filter_rl_data);
  per RL round: rollout, detect, resample, update (rollout, detect_failures, resample, gather_*, update);
  evaluation, report (evaluate; report, tool_check, publish_table);
  tracking (MLflow: open/close_tracking_run, log_*), and orchestration: the flow's wall time that no task
  covers (Prefect's flow machinery, the storage reads and writes between tasks, imports).
Tasks that run side by side (the evaluation fan-out) count once: a stage's time is the union of its task
runs' intervals. Where the round metrics carry them (since 2026-12-08), the update is split further into
load, input packing, reference forward, policy forward + backward, optimizer and save, and the rollouts'
time into generation and tools is not split (the engine interleaves them).

Each run gets a fresh run folder and MLflow store under a temporary directory, so nothing is cached from
an earlier run; the model cache is the machine's (AXPO_MODEL_CACHE) unless --fresh-model-cache.

Usage: python bench/profile_pipeline.py [--config FILE] [--set key=value ...] [--fresh-model-cache]
The run ends with one `name = value` line per stage (seconds) and `wall_s`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STAGES = {  # task name (before its "[...]") -> stage
    "build_model": "model build",
    "sft": "SFT",
    "filter_rl_data": "RL data filter",
    "rollout": "RL rollout",
    "gather_rollouts": "RL rollout",
    "detect_failures": "RL detect",
    "resample": "RL resample",
    "gather_resampled": "RL resample",
    "update": "RL update",
    "evaluate": "evaluation",
    "report": "report",
    "tool_check": "report",
    "publish_table": "report",
    "sweep_report": "report",
}
try:  # the update's own split (flows/cli.py prints it after `axpo run`); older checkouts have none
    from flows.cli import ROUND_TIME

    UPDATE_PARTS = [(label, key) for label, key in ROUND_TIME if label.startswith("update")]
except ImportError:
    UPDATE_PARTS = []


def stage_of(task_name: str) -> str:
    base = task_name.split("[", 1)[0].split("-", 1)[0]
    if base in STAGES:
        return STAGES[base]
    tracking = base.startswith(("log_", "open_tracking", "close_tracking"))
    return "tracking (MLflow)" if tracking else "other tasks"


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals."""
    total, end_so_far = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= end_so_far:
            continue
        total += end - max(start, end_so_far)
        end_so_far = end
    return total


def task_runs_since(started: datetime) -> list[tuple[str, float, float]]:
    """(name, start, end) of every task run that started after `started`, from the Prefect API; a subflow's
    stand-in task run (a flow run's parent_task_run_id) is not a task and is left out."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        TaskRunFilter,
        TaskRunFilterStartTime,
    )

    runs, offset = [], 0
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)), limit=200
        )
        subflows = {f.parent_task_run_id for f in flow_runs if f.parent_task_run_id}
        while True:
            page = client.read_task_runs(
                task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=started)),
                limit=200,
                offset=offset,
            )
            runs += [(r.name, r.start_time.timestamp(), r.end_time.timestamp()) for r in page
                     if r.start_time and r.end_time and r.id not in subflows]
            if len(page) < 200:
                return runs
            offset += 200


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--fresh-model-cache", action="store_true")
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait for Prefect's last task events")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="axpo-profile-")
    if args.fresh_model_cache:
        os.environ["AXPO_MODEL_CACHE"] = os.path.join(work, "models")

    from flows.runtime import configure_prefect

    configure_prefect()
    from axpo_core.config import load_config
    from flows.pipeline import pipeline

    overrides = [f"storage.root=file://{work}/runs", f"tracking.tracking_uri=sqlite:///{work}/mlflow.db",
                 *args.overrides]
    config = load_config(args.config, overrides)
    started_at = datetime.now(UTC)
    t0 = time.time()
    result = pipeline(config, f"profile-{int(t0)}")
    wall = time.time() - t0
    time.sleep(args.settle_s)
    runs = task_runs_since(started_at)
    by_stage: dict[str, list[tuple[float, float]]] = {}
    for name, start, end in runs:
        by_stage.setdefault(stage_of(name), []).append((start, end))
    seconds = {stage: union_seconds(iv) for stage, iv in by_stage.items()}
    covered = union_seconds([(s, e) for _, s, e in runs])
    seconds["orchestration (no task running)"] = wall - covered
    print(f"profile of one pipeline run ({len(runs)} task runs), wall {wall:.1f} s:")
    for stage, value in sorted(seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:34s} {value:8.1f} s  {100 * value / wall:5.1f}%")
    rounds = [m for arm in result.round_metrics.values() for m in arm]
    if rounds and any(key in rounds[0] for _, key in UPDATE_PARTS):
        update = sum(m.get("seconds_update", 0.0) for m in rounds)
        print(f"  the RL update tasks ({update:.1f} s in all rounds of all arms):")
        for label, key in UPDATE_PARTS:
            value = sum(m.get(key, 0.0) for m in rounds)
            print(f"    {label:32s} {value:8.1f} s  {100 * value / max(update, 1e-9):5.1f}%")
    for stage, value in seconds.items():
        print(f"{stage.split(' (')[0].replace(' ', '_').replace(':', '')}_s = {value:.1f}")
    print(f"wall_s = {wall:.1f}")


if __name__ == "__main__":
    main()
