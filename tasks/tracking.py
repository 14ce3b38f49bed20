"""Tracking tasks: MLflow runs opened, described, tagged and closed with explicit run ids (tasks run in worker
threads, where MLflow's active-run context does not follow). The only mlflow use is inside axpo_core.tracking.

What each run carries (docs/design.md §7), so the MLflow UI alone compares the arms:
- parent (pipeline or sweep): the config, tags (`kind`, `config_hash`, commit, `outputs_uri`), the report
  folder (HTML, Markdown, plots, rollout viewer) under `report/`, the results table (CSV and an MLflow table)
  under `results/`, and the headline numbers `summary/avg_pass_at_<k>/<stage slug>`;
- child (one per stage): its own effective config as params, tags `algo`, `stage`, `scale`, `seed`,
  `ablation`, `config_hash`, commit and its output URIs, per-round metrics (step = round), its final
  `eval/<benchmark>/…` metrics and, for an RL arm, the per-round diagnostics table and a bounded sample of its
  first and last round's rollouts.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from pathlib import Path

from prefect import task

from axpo_core.config import Config
from axpo_core.evaluation.tables import EvalRow, results_table, to_csv
from axpo_core.runs import Arm, ablation_name, stage_slug
from axpo_core.storage import local_path
from axpo_core.tracking import (
    GIT_COMMIT_TAG,
    NOTE_TAG,
    Tracker,
    config_hash,
    round_metrics,
    source_commit,
)
from tasks.context import RoundRecord, RunContext

#: A rollout sample on a child run: at most this many records and bytes per round (the full JSONL stays in
#: object storage, at the run's `rollouts_uri`).
ROLLOUT_SAMPLE_RECORDS = 32
ROLLOUT_SAMPLE_BYTES = 512 * 1024


@functools.lru_cache(maxsize=8)
def _tracker(
    tracking_uri: str,
    output_dir: str,
    experiment: str,
    artifact_location: str | None,
    s3_endpoint_url: str | None,
) -> Tracker:
    return Tracker(tracking_uri, output_dir, experiment, artifact_location, s3_endpoint_url)


def tracker(ctx: RunContext) -> Tracker:
    config = ctx.config
    return _tracker(
        ctx.tracking_uri,
        ctx.output_dir,
        config.tracking.experiment,
        config.tracking.artifact_location,
        config.storage.s3_endpoint_url,
    )


def ui_link(ctx: RunContext, run_id: str | None = None, port: int = 5000) -> str:
    """Where to see the experiment (or one run) in MLflow's UI, model-training view: the local `mlflow ui`
    on `port` for a local store, else the tracking server itself."""
    base = ctx.tracking_uri if ctx.tracking_uri.startswith("http") else f"http://127.0.0.1:{port}"
    return tracker(ctx).ui_url(base, run_id)


# --- what a run says about itself ----------------------------------------------------------------------
def provenance_tags(config: Config) -> dict[str, str]:
    commit = source_commit()
    return {"config_hash": config_hash(config), "git_commit": commit, GIT_COMMIT_TAG: commit}


def stage_run_fields(
    ctx: RunContext, stage: str, algo: str, config: Config, arm: Arm | None = None
) -> tuple[dict[str, str], dict, str]:
    """(tags, params, description) of a stage's child run: `config` is the stage's effective config (an
    RL arm's has its algorithm and ablation overrides applied)."""
    scale = config.model.scale
    outputs = ctx.layout(scale, stage_slug(stage)).base
    ablation = ablation_name(stage)
    tags = {
        "algo": algo,
        "stage": stage,
        "scale": scale,
        "seed": str(config.seed),
        "ablation": ablation,
        **provenance_tags(config),
        "outputs_uri": outputs,
        "eval_uri": f"{outputs}/eval",
    }
    if arm is not None:
        tags |= {"checkpoints_uri": f"{outputs}/checkpoints", "rollouts_uri": f"{outputs}/rollouts"}
    params: dict = config.model_dump(mode="json")
    params["ablation"] = {"name": ablation, **(arm.overrides if arm is not None else {})}
    params["stage"] = stage
    what = {
        "Base": "the base model, evaluated (no training)",
        "SFT": "the SFT checkpoint, evaluated",
    }.get(stage, f"RL arm `{stage}`: {algo.upper()} for {config.training.rounds} rounds")
    lines = [
        f"**{stage}** · scale `{scale}` · seed {config.seed} · run `{ctx.run_name}`: {what}.",
        "",
        f"- algorithm: `{config.algorithm.name}`, ablation: `{ablation}`"
        + (f" (overrides {arm.overrides})" if arm is not None and arm.overrides else ""),
        f"- config hash `{tags['config_hash']}`, commit `{tags['git_commit']}`; the full config is in Params",
        f"- outputs: `{outputs}` (checkpoints/, rollouts/, metrics/, eval/)",
    ]
    if arm is not None:
        lines.append("- artifacts: `diagnostics/rounds.csv` (per round), `rollouts/round-N.sample.jsonl`")
    return tags, params, "\n".join(lines)


def parent_run_fields(ctx: RunContext, kind: str) -> tuple[dict[str, str], str]:
    """(tags, description) of a pipeline's or a sweep's parent run."""
    config = ctx.config
    outputs = ctx.layout().base
    tags = {
        "kind": kind,
        **provenance_tags(config),
        "outputs_uri": outputs,
        "report_uri": f"{outputs}/report",
    }
    if kind == "pipeline":
        tags |= {"scale": config.model.scale, "seed": str(config.seed)}
        what = f"the pipeline on scale `{config.model.scale}`, seed {config.seed}"
    else:
        what = f"a sweep over scales {config.pipeline.scales} × seeds {config.pipeline.seeds}"
    text = "\n".join(
        [
            f"**{ctx.run_name}**: {what}; stages {config.pipeline.stages}"
            + (f", ablations {sorted(config.pipeline.ablations)}" if config.pipeline.ablations else "")
            + ".",
            "",
            "- child runs: one per stage (group by `algo` or `stage` to compare GRPO and AXPO)",
            "- artifacts: `report/` (report.html, plots, rollouts.html), `results/` (results table)",
            f"- config hash `{tags['config_hash']}`, commit `{tags['git_commit']}`",
            f"- outputs: `{outputs}`",
        ]
    )
    return tags, text


def experiment_description(ctx: RunContext) -> str:
    config = ctx.config
    return "\n".join(
        [
            f"axpo: GRPO vs AXPO on the `{config.experiment}` experiment (tiny Qwen3-VL agents with tools).",
            "",
            "Each pipeline (or sweep) is a parent run holding the report; its child runs are the stages "
            "(Base, SFT, SFT+GRPO, SFT+AXPO, ablations). Group by `algo` in the runs list, then open the "
            "chart view: `diag/` per-round diagnostics, `train/` rewards and tokens, `update/` loss and KL, "
            "`eval/` Pass@k.",
            f"Outputs in object storage: `{ctx.layout().store.uri(config.experiment)}`.",
        ]
    )


# --- tasks -------------------------------------------------------------------------------------------------
@task(name="open_tracking_run", task_run_name="open_tracking_run[{name}]", retries=2, retry_delay_seconds=1)
def open_tracking_run(
    ctx: RunContext,
    name: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    log_config: bool = False,
    params: dict | None = None,
    description: str | None = None,
) -> str:
    """A (child) run, reused when a rerun of the flow opens the same name under the same parent; with its
    config (`log_config`) or other `params`, and a description. A top-level run also describes the
    experiment, unless it already has a description (one written in the UI is kept)."""
    t = tracker(ctx)
    run_id = t.start_run(name, parent_run_id=parent_run_id, tags=tags, resume=True)
    if log_config:
        t.log_config(run_id, ctx.config)
    if params:
        t.log_params(run_id, params)
    if description:
        t.describe_run(run_id, description)
    if parent_run_id is None and NOTE_TAG not in t.experiment_tags():
        t.describe_experiment(experiment_description(ctx))
    return run_id


@task(name="close_tracking_run", retries=2, retry_delay_seconds=1)
def close_tracking_run(ctx: RunContext, run_id: str, status: str = "FINISHED") -> None:
    tracker(ctx).end_run(run_id, status)


@task(name="log_metrics", retries=2, retry_delay_seconds=1)
def log_metrics(ctx: RunContext, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
    tracker(ctx).log_metrics(run_id, metrics, step=step)


def log_round_metrics(ctx: RunContext, run_id: str, metrics: dict[str, float], round_index: int) -> None:
    """Per-round diagnostics and update stats with step = round under `train/`, `diag/` and `update/`
    (called inside the update task)."""
    tracker(ctx).log_metrics(run_id, round_metrics(metrics), step=round_index)


@task(name="log_artifacts", retries=2, retry_delay_seconds=1)
def log_artifacts(ctx: RunContext, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
    tracker(ctx).log_artifact(run_id, local_path, artifact_path)


def sample_jsonl(
    text: str, records: int = ROLLOUT_SAMPLE_RECORDS, max_bytes: int = ROLLOUT_SAMPLE_BYTES
) -> str:
    """The first `records` lines of a JSONL text, fewer if they would pass `max_bytes` (at least one)."""
    kept: list[str] = []
    size = 0
    for line in text.splitlines(keepends=True)[:records]:
        if kept and size + len(line.encode()) > max_bytes:
            break
        kept.append(line)
        size += len(line.encode())
    return "".join(kept)


@task(name="log_arm_artifacts", task_run_name="log_arm_artifacts[{scale} {arm.stage}]", retries=2)
def log_arm_artifacts(
    ctx: RunContext, run_id: str, arm: Arm, scale: str, records: Sequence[RoundRecord]
) -> None:
    """An RL arm's per-round diagnostics table (CSV and MLflow table) and samples of the rollouts of its
    first and last round; its final checkpoint's URI as a tag."""
    t = tracker(ctx)
    rows = [{"round": r.round, **round_metrics(r.metrics)} for r in records]
    t.log_text(run_id, to_csv(rows), "diagnostics/rounds.csv")
    t.log_table(run_id, rows, "diagnostics/rounds.json")
    layout = ctx.layout(scale, arm.slug)
    store = ctx.store
    for round_index in sorted({records[0].round, records[-1].round} if records else set()):
        uri = layout.rollouts(round_index)
        if store.exists(uri):
            t.log_text(
                run_id, sample_jsonl(store.get_text(uri)), f"rollouts/round-{round_index}.sample.jsonl"
            )
    if records:
        t.set_tags(run_id, {"checkpoint_uri": records[-1].checkpoint.uri})


@task(name="log_report", task_run_name="log_report[{artifact_path}]", retries=2, retry_delay_seconds=1)
def log_report(ctx: RunContext, run_id: str, report_uri: str, artifact_path: str = "report") -> None:
    """The report folder (report.html/.md, plots/, rollouts.html, CSVs) into the run's artifacts; an S3
    report is downloaded first."""
    t = tracker(ctx)
    if report_uri.startswith("s3://"):  # written file by file (no folder marker): copied the same way
        store = ctx.store
        prefix = report_uri.rstrip("/") + "/"
        with tempfile.TemporaryDirectory(prefix="axpo-report-") as tmp:
            for uri in store.list(report_uri):
                local = Path(tmp, uri.removeprefix(prefix))
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(store.get_bytes(uri))
            t.log_artifact(run_id, tmp, artifact_path)
    else:
        t.log_artifact(run_id, local_path(report_uri), artifact_path)


def eval_summary(evaluations: Sequence, ks: Sequence[int]) -> list[dict]:
    """The results table (one row per scale and stage, Pass@k in %) of these `EvalRef`s."""
    rows = [EvalRow(e.scale, e.stage, e.benchmark, e.metrics) for e in evaluations]
    return results_table(rows, ks)


@task(name="log_eval_summary", retries=2, retry_delay_seconds=1)
def log_eval_summary(
    ctx: RunContext,
    parent_run_id: str,
    stage_runs: dict[str, str],
    evaluations: list,
    headline: bool = True,
    artifact_dir: str = "results",
) -> None:
    """Each stage run gets `eval/average/pass_at_<k>` (over benchmarks, 0–1); the parent the results table
    (`<artifact_dir>/results.csv` and the MLflow table `<artifact_dir>/results_table.json`) and, with
    `headline`, the headline numbers `summary/avg_pass_at_<k>/<stage slug>` (0–1)."""
    t = tracker(ctx)
    ks = ctx.config.evaluation.k
    table = eval_summary(evaluations, ks)
    headline_metrics: dict[str, float] = {}
    for row in table:
        averages = {k: float(row[f"average pass@{k}"]) / 100.0 for k in ks}
        stage = str(row["stage"])
        if stage in stage_runs:
            t.log_metrics(stage_runs[stage], {f"eval/average/pass@{k}": v for k, v in averages.items()})
        headline_metrics |= {f"summary/avg_pass@{k}/{stage_slug(stage)}": v for k, v in averages.items()}
    t.log_text(parent_run_id, to_csv(table), f"{artifact_dir}/results.csv")
    t.log_table(parent_run_id, table, f"{artifact_dir}/results_table.json")
    if headline:
        t.log_metrics(parent_run_id, headline_metrics)


@task(name="log_sweep_summary", retries=2, retry_delay_seconds=1)
def log_sweep_summary(ctx: RunContext, parent_run_id: str, variants: list[tuple[int, list]]) -> None:
    """On a sweep's parent: `summary/avg_pass_at_<k>/<scale>/<stage slug>` (mean over seeds, 0–1) and, for
    every AXPO arm against every SFT+GRPO arm (plain, budget-matched, 2x) on the same scale, the paired
    difference over seeds with its 95% t interval (axpo_core.evaluation.stats),
    `summary/paired_diff/avg_pass_at_<k>/<scale>/<arm slug>-<baseline slug>/{mean,ci95_low,ci95_high}`;
    the same as the table `results/paired_differences.json`. `variants`: (seed, its EvalRefs) per variant."""
    from axpo_core.evaluation.stats import t_interval

    t = tracker(ctx)
    ks = ctx.config.evaluation.k
    by_cell: dict[tuple[str, str, int], dict[int, float]] = {}  # (scale, stage, k) -> seed -> average
    for seed, evaluations in variants:
        for row in eval_summary(evaluations, ks):
            for k in ks:
                value = float(row[f"average pass@{k}"]) / 100.0
                by_cell.setdefault((str(row["scale"]), str(row["stage"]), k), {})[seed] = value
    metrics: dict[str, float] = {}
    table: list[dict] = []
    for (scale, stage, k), per_seed in sorted(by_cell.items()):
        metrics[f"summary/avg_pass@{k}/{scale}/{stage_slug(stage)}"] = sum(per_seed.values()) / len(per_seed)
        if not stage.startswith("SFT+AXPO"):
            continue
        for (b_scale, baseline_stage, b_k), baseline in sorted(by_cell.items()):
            common = sorted(set(baseline) & set(per_seed))
            if (b_scale, b_k) != (scale, k) or not baseline_stage.startswith("SFT+GRPO") or not common:
                continue
            diff = t_interval([per_seed[s] - baseline[s] for s in common])  # paired on the seed
            key = f"summary/paired_diff/avg_pass@{k}/{scale}/{stage_slug(stage)}-{stage_slug(baseline_stage)}"
            metrics |= {f"{key}/mean": diff.mean, f"{key}/ci95_low": diff.low, f"{key}/ci95_high": diff.high}
            table.append(
                {
                    "scale": scale,
                    "arm": stage,
                    "baseline": baseline_stage,
                    "metric": f"average pass@{k}",
                    "seeds": diff.n,
                    "mean difference": diff.mean,
                    "ci95 low": diff.low,
                    "ci95 high": diff.high,
                }
            )
    t.log_metrics(parent_run_id, metrics)
    if table:
        t.log_text(parent_run_id, to_csv(table), "results/paired_differences.csv")
        t.log_table(parent_run_id, table, "results/paired_differences.json")
