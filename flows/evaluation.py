"""The evaluation fan-out: every checkpoint is one `evaluate` task over all the benchmarks (full generation
batches across benchmarks: axpo_core.evaluation.runner.evaluate_benchmarks), mapped in parallel."""

from __future__ import annotations

from prefect import flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.artifacts import artifact_key, publish_table
from tasks.context import CheckpointRef, RunContext
from tasks.evaluation import EvalRef, evaluate
from tasks.progress import progress


def task_runner(kind: str, max_workers: int):
    """Threads by default; a Dask LocalCluster of processes or Ray by config (their extras installed)."""
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=max_workers)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(
            cluster_kwargs={"n_workers": max_workers, "threads_per_worker": 1, "processes": True}
        )
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            hint = "pipeline.task_runner=ray needs the ray extra: pip install -e '.[ray]'"
            raise RuntimeError(hint) from exc
        return RayTaskRunner()
    raise ValueError(f"unknown task runner {kind!r}")


@flow(name="evaluate", flow_run_name="evaluate[{ctx.run_name}]")
def evaluate_flow(ctx: RunContext, checkpoints: dict[str, CheckpointRef]) -> list[EvalRef]:
    """`checkpoints` maps a stage label (Base, SFT, SFT+GRPO, ...) to its checkpoint; × every benchmark.
    The results are in (stage, benchmark) order."""
    futures = evaluate.map(
        unmapped(ctx),
        list(checkpoints.values()),
        list(checkpoints),
        unmapped(list(ctx.config.evaluation.benchmarks)),
    )
    for future in progress(futures, desc="evaluate (stage)", leave=None):
        future.wait()
    results = [ref for f in futures for ref in f.result()]
    publish_table(
        table=[
            {"stage": r.stage, "benchmark": r.benchmark, **{k: round(v, 4) for k, v in r.metrics.items()}}
            for r in results
        ],
        key=artifact_key("evaluate", ctx.run_name),
        description="Evaluation metrics per stage and benchmark",
    )
    return results


def run_evaluation(ctx: RunContext, checkpoints: dict[str, CheckpointRef]) -> list[EvalRef]:
    """The evaluate flow under the configured task runner."""
    pipeline = ctx.config.pipeline
    runner = task_runner(pipeline.task_runner, pipeline.max_workers)
    return evaluate_flow.with_options(task_runner=runner)(ctx, checkpoints)
