"""The main job and the sweep.

pipeline: build/load the base model → SFT → RL data filter → GRPO and AXPO from the same SFT checkpoint
          → evaluate every stage on every benchmark → report
sweep:    pipeline × scales × seeds (× AXPO ablations), under one MLflow parent run
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel

from axpo_core.config import Config
from axpo_core.runs import arms
from axpo_core.storage import open_configured_store
from axpo_core.threads import RUNS_ENV, concurrent_runs, configure_process
from flows.evaluation import run_evaluation
from flows.runtime import locked_context, ray_session
from flows.training import sft_flow, train
from tasks.artifacts import artifact_key, publish_table
from tasks.context import CheckpointRef, RunContext
from tasks.evaluation import EvalRef, report, sweep_report, tool_check
from tasks.progress import Steps, progress
from tasks.stages import build_model, filter_rl_data
from tasks.tracking import (
    close_tracking_run,
    log_arm_artifacts,
    log_eval_summary,
    log_metrics,
    log_report,
    log_sweep_summary,
    open_tracking_run,
    parent_run_fields,
    stage_run_fields,
    ui_link,
)


class PipelineResult(BaseModel):
    run_name: str
    scale: str
    seed: int
    table_markdown: str
    report_uri: str
    tracking_uri: str
    parent_run_id: str
    mlflow_url: str = ""  # the parent run in MLflow's UI (model-training view)
    evaluations: list[EvalRef]
    final_metrics: dict[str, dict[str, float]]  # stage -> last round's diagnostics
    round_metrics: dict[str, list[dict[str, float]]] = {}  # stage -> every round's diagnostics, in order
    tools_markdown: str = ""  # are tools necessary (oracles vs the SFT agent)
    outcomes_markdown: str = ""  # the SFT agent's tool-call outcomes per benchmark


@flow(name="pipeline", flow_run_name="pipeline[{config.model.scale} seed{config.seed}]")
def pipeline(config: Config, run_name: str | None = None, parent_run_id: str | None = None) -> PipelineResult:
    """The main job. The run folder is locked for its duration: a second process on the same run name is
    refused (flows.runlock.RunLocked) instead of redoing and double-logging the work."""
    configure_process()  # also the entry of a deployment's run, which the CLI does not start
    with locked_context(config, run_name) as ctx, ray_session(config.pipeline.task_runner):
        return _pipeline(ctx, parent_run_id)


def _pipeline(ctx: RunContext, parent_run_id: str | None) -> PipelineResult:
    config = ctx.config
    scale, seed = config.model.scale, config.seed
    own_parent = parent_run_id is None
    if own_parent:
        parent_tags, parent_note = parent_run_fields(ctx, "pipeline")
        parent = open_tracking_run(
            ctx, ctx.run_name, tags=parent_tags, log_config=True, description=parent_note
        )
    else:
        parent = parent_run_id
    # Under a sweep's parent the children of every variant meet: the seed keeps their names apart.
    prefix = scale if own_parent else f"{scale}/seed{seed}"

    rl_arms = arms(config)
    needs_sft = any(s.startswith("SFT") for s in config.pipeline.stages) or any(
        a.starts_from == "SFT" for a in rl_arms
    )
    steps = Steps(f"pipeline {scale}", total=4 + needs_sft + bool(rl_arms) + len(rl_arms))

    with steps.step("base model"):
        base = build_model(ctx, scale)
    with steps.step("tool check"):
        tool_rows = tool_check(ctx, base)
    checkpoints: dict[str, CheckpointRef] = {"Base": base}
    if needs_sft:
        with steps.step("SFT"):
            checkpoints["SFT"] = sft_flow(ctx, base)
    pool_ids: list[str] = []
    filtered_on = checkpoints.get("SFT", base)
    start_accuracy: dict[str, float] = {}
    if rl_arms:
        with steps.step("RL data filter"):
            pool_ids, pool = filter_rl_data(ctx, filtered_on)
        start_accuracy = pool.get("start_accuracy", {})

    stage_runs: dict[str, str] = {}
    final_metrics: dict[str, dict[str, float]] = {}
    round_metrics: dict[str, list[dict[str, float]]] = {}
    for arm in rl_arms:
        start = checkpoints[arm.starts_from]
        run_tags, params, note = stage_run_fields(ctx, arm.stage, arm.algo, arm.config(config), arm)
        stage_runs[arm.stage] = open_tracking_run(
            ctx, f"{prefix}/{arm.stage}", parent, tags=run_tags, params=params, description=note
        )
        with steps.step(arm.stage):
            # the reward gain per round is over the filter's pass, so only for arms that start where it ran
            paired = start_accuracy if start == filtered_on else None
            records = train(ctx, arm, start, pool_ids, stage_runs[arm.stage], paired)
        log_arm_artifacts(ctx, stage_runs[arm.stage], arm, scale, records)
        checkpoints[arm.stage] = records[-1].checkpoint
        final_metrics[arm.stage] = records[-1].metrics
        round_metrics[arm.stage] = [r.metrics for r in records]

    evaluated = {
        stage: ckpt
        for stage, ckpt in checkpoints.items()
        if stage in config.pipeline.stages or stage in stage_runs
    }
    with steps.step("evaluate"):
        evaluations = run_evaluation(ctx, evaluated)
    for stage in evaluated:
        if stage not in stage_runs:  # Base and SFT have no training run: one for their evaluation
            algo = {"Base": "none", "SFT": "sft"}.get(stage, stage)
            run_tags, params, note = stage_run_fields(ctx, stage, algo, config)
            run_tags["checkpoint_uri"] = evaluated[stage].uri
            stage_runs[stage] = open_tracking_run(
                ctx, f"{prefix}/{stage}", parent, tags=run_tags, params=params, description=note
            )
        metrics = {
            f"eval/{e.benchmark}/{k}": v
            for e in evaluations
            if e.stage == stage
            for k, v in e.metrics.items()
        }
        log_metrics(ctx, stage_runs[stage], metrics)
    with steps.step("report"):
        summary = report(ctx, evaluations, tool_rows)
        # On a sweep's parent, each variant's report and table sit in their own folder; the sweep logs
        # the headline numbers over seeds.
        where = "" if own_parent else f"/{scale}-seed{seed}"
        log_eval_summary(ctx, parent, stage_runs, evaluations, own_parent, f"results{where}")
        log_report(ctx, parent, summary.uri, f"report{where}")
    steps.close()
    for run_id in stage_runs.values():
        close_tracking_run(ctx, run_id)
    if own_parent:
        close_tracking_run(ctx, parent)
    result = PipelineResult(
        run_name=ctx.run_name,
        scale=scale,
        seed=seed,
        table_markdown=summary.markdown,
        report_uri=summary.uri,
        tracking_uri=ctx.tracking_uri,
        parent_run_id=parent,
        mlflow_url=ui_link(ctx, parent),
        evaluations=evaluations,
        final_metrics=final_metrics,
        round_metrics=round_metrics,
        tools_markdown=summary.tools_markdown,
        outcomes_markdown=summary.outcomes_markdown,
    )
    # In the run folder too: a sweep whose variants ran as deployments (on other workers) reads it there.
    # Written only when it changed, so an unchanged rerun rewrites nothing.
    uri, record = result_uri(ctx.config, ctx.run_name), result.model_dump_json(indent=2).encode()
    if not ctx.store.exists(uri) or ctx.store.get_bytes(uri) != record:  # bytes: NaN metrics compare equal
        ctx.store.put_bytes(uri, record)
    return result


def result_uri(config: Config, run_name: str) -> str:
    return open_configured_store(config.storage).uri(config.experiment, run_name, "result.json")


@flow(
    name="sweep",
    flow_run_name="sweep[{config.experiment} {config.pipeline.scales} × seeds {config.pipeline.seeds}]",
)
def sweep(config: Config, run_name: str | None = None) -> list[PipelineResult]:
    """The pipeline for every scale × seed in `pipeline.scales` / `pipeline.seeds`, one parent run (the
    sweep's run folder locked, and each variant's own folder by its pipeline)."""
    with locked_context(config, run_name) as ctx:
        return _sweep(ctx)


def _sweep(ctx: RunContext) -> list[PipelineResult]:
    config = ctx.config
    parent_tags, parent_note = parent_run_fields(ctx, "sweep")
    parent = open_tracking_run(ctx, ctx.run_name, tags=parent_tags, log_config=True, description=parent_note)
    results = []
    variants = [
        (
            config.model_copy(update={"seed": seed, "model": config.model.model_copy(update={"scale": s})}),
            f"{ctx.run_name}/{s}-seed{seed}",
        )
        for s in config.pipeline.scales
        for seed in config.pipeline.seeds
    ]
    if config.sweep.mode == "deployments":
        results = run_as_deployments(config, variants, parent)
    else:
        for variant, name in progress(variants, desc="sweep (scale x seed)"):
            results.append(pipeline(variant, name, parent))
    publish_table(
        table=[
            {
                "scale": r.scale,
                "seed": r.seed,
                "stage": e.stage,
                "benchmark": e.benchmark,
                **{k: round(v, 4) for k, v in e.metrics.items() if k.startswith("pass@")},
            }
            for r in results
            for e in r.evaluations
        ],
        key=artifact_key("sweep", ctx.run_name),
        description="Pass@k per scale, seed, stage and benchmark",
    )
    swept = sweep_report(ctx)
    log_sweep_summary(ctx, parent, [(r.seed, r.evaluations) for r in results])
    log_report(ctx, parent, swept.uri, "report")
    close_tracking_run(ctx, parent)
    return results


def run_as_deployments(
    config: Config, variants: list[tuple[Config, str]], parent: str
) -> list[PipelineResult]:
    """Start every variant as a run of `sweep.deployment` at once, wait for all, and read each one's
    result from its run folder. A variant that does not complete fails the sweep, naming its flow run."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise RuntimeError(
            "sweep.mode: deployments needs a Prefect server that the workers reach (set PREFECT_API_URL, "
            "e.g. after `prefect server start`); this process's ephemeral server lives only as long as it"
        )
    runs = concurrent_runs()  # this sweep may itself share the machine
    started = [
        run_deployment(
            config.sweep.deployment,
            parameters={"config": v.model_dump(mode="json"), "run_name": name, "parent_run_id": parent},
            flow_run_name=f"pipeline[{v.model.scale} seed{v.seed}]",
            timeout=0,  # do not wait here: all variants are scheduled before any is waited for
            # A worker runs them side by side: each one's torch threads take its share of the machine
            # (AXPO_TORCH_THREADS on the worker still wins).
            job_variables={"env": {RUNS_ENV: str(runs * len(variants))}},
        )
        for v, name in variants
    ]
    deadline = time.monotonic() + config.sweep.timeout_s
    with get_client(sync_client=True) as client:
        while True:
            states = [client.read_flow_run(run.id).state for run in started]
            if all(state is not None and state.is_final() for state in states):
                break
            if time.monotonic() > deadline:
                waiting = [r.name for r, s in zip(started, states, strict=True) if not (s and s.is_final())]
                raise TimeoutError(f"sweep: still running after {config.sweep.timeout_s:g} s: {waiting}")
            time.sleep(config.sweep.poll_s)
    failed = [
        f"{r.name} ({r.id}): {s.name}" for r, s in zip(started, states, strict=True) if not s.is_completed()
    ]
    if failed:
        raise RuntimeError(f"sweep: {len(failed)} of {len(started)} variants did not complete: {failed}")
    store = open_configured_store(config.storage)
    return [PipelineResult.model_validate_json(store.get_bytes(result_uri(config, n))) for _, n in variants]
