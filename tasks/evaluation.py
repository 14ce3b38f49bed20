"""Evaluation and report tasks: one `evaluate` per checkpoint over its benchmarks, fanned out by the flow."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel

from axpo_core.evaluation.judge import make_judge
from axpo_core.evaluation.report import build_report, tool_outcome_table
from axpo_core.evaluation.runner import benchmark_questions, evaluate_benchmarks, evaluation_config
from axpo_core.evaluation.tables import EvalRow, results_table, to_csv, to_markdown
from axpo_core.evaluation.toolcheck import tools_necessary, tools_necessary_table
from axpo_core.models.loader import SpecialIds, load_processors
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.factory import build_engine
from axpo_core.runs import stage_slug
from axpo_core.storage import content_version, local_path
from axpo_core.threads import evaluation_workers, task_threads
from tasks.artifacts import artifact_key
from tasks.context import CheckpointRef, RunContext, checkpoint_folder, load_checkpoint
from tasks.persistence import RESUMABLE


class EvalRef(BaseModel):
    scale: str
    stage: str  # the table's row label: Base, SFT, SFT+GRPO, SFT+AXPO, GRPO
    benchmark: str
    uri: str  # eval/<benchmark>.jsonl: one record per sample
    metrics: dict[str, float]
    version: str = ""  # content_version of the records (the report reads them from storage)


class ReportRef(BaseModel):
    uri: str
    markdown: str
    tools_markdown: str = ""  # are tools necessary: oracles vs the SFT agent's tool-using / no-tool samples
    outcomes_markdown: str = ""  # the SFT agent's tool-call outcomes per benchmark


@task(name="tool_check", task_run_name="tool_check[{base.scale}]", **RESUMABLE)
def tool_check(ctx: RunContext, base: CheckpointRef) -> list[dict]:
    """Oracle-with-tool and no-tool-oracle accuracy per tool suite (evaluation questions), to report/."""
    model = ctx.config.model  # only the tokenizer and image processor: the weights are not needed here
    tokenizer, image_processor = load_processors(
        checkpoint_folder(ctx, base.uri), model.max_image_pixels, model.min_image_pixels
    )
    chat = ChatFormat(tokenizer, image_processor, SpecialIds.from_tokenizer(tokenizer))
    rows = tools_necessary(ctx.config, chat)
    ctx.store.put_json(ctx.layout().report("tool_check.json"), rows)
    return rows


@task(name="evaluate", task_run_name="evaluate[{stage}]", **RESUMABLE)
def evaluate(ctx: RunContext, checkpoint: CheckpointRef, stage: str, benchmarks: list[str]) -> list[EvalRef]:
    """A stage's benchmarks in one engine run: full generation batches across benchmarks, one model load.
    Each benchmark keeps its own sampling seed (`benchmark_seed`), the same for every stage, whichever
    worker runs it (threads, Dask or Ray)."""
    config = evaluation_config(ctx.config)
    # evaluate tasks run side by side (threads, Dask or Ray workers): they share the cores
    with task_threads(evaluation_workers(config.pipeline.task_runner, config.pipeline.max_workers)):
        engine, _ = build_engine(config, policy=load_checkpoint(ctx, checkpoint.uri))
        results = evaluate_benchmarks(
            engine,
            {name: benchmark_questions(config, name) for name in benchmarks},
            config.seed,
            config.evaluation.samples,
            config.evaluation.k,
            # the benchmark's own scorer (rule) or an LLM judge, per evaluation.judge
            judge=make_judge(config.evaluation, device=config.model.device),
        )
    refs = []
    for name, result in results.items():
        uri = ctx.layout(checkpoint.scale, stage_slug(stage)).eval(name)
        ctx.store.put_jsonl(uri, result.records)
        version = content_version(ctx.store.get_bytes(uri))
        refs.append(
            EvalRef(
                scale=checkpoint.scale,
                stage=stage,
                benchmark=name,
                uri=uri,
                metrics=result.metrics,
                version=version,
            )
        )
    return refs


@task(name="report", **RESUMABLE)
def report(ctx: RunContext, evaluations: list[EvalRef], tool_rows: list[dict] | None = None) -> ReportRef:
    """The results table (Markdown, CSV, a Prefect table artifact) under report/."""
    rows = [EvalRow(e.scale, e.stage, e.benchmark, e.metrics) for e in evaluations]
    table = results_table(rows, ctx.config.evaluation.k)
    outcomes = tool_outcome_table([r for r in rows if r.stage == "SFT"])
    tools = tools_necessary_table(tool_rows or [], outcomes)
    markdown = to_markdown(table)
    layout = ctx.layout()
    store = ctx.store
    store.put_text(layout.report("results.md"), markdown)
    store.put_text(layout.report("results.csv"), to_csv(table))
    create_table_artifact(
        table=[{k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()} for row in table],
        key=artifact_key("results", ctx.run_name),
        description=f"Pass@k per benchmark, run {ctx.run_name}",
    )
    if not layout.base.startswith("s3://"):  # plots, tables and the rollout viewer from the run folder
        build_report(local_path(layout.base))
    return ReportRef(
        uri=layout.report(),
        markdown=markdown,
        tools_markdown=to_markdown(tools) if tools else "",
        outcomes_markdown=to_markdown(outcomes) if outcomes else "",
    )


@task(name="sweep_report")
def sweep_report(ctx: RunContext) -> ReportRef:
    """The sweep's report over its variants' run folders: means with intervals over seeds, paired arm
    differences, cost per arm, diagnostic bands (axpo_core.evaluation.seeds); results.md is the headline
    table with intervals. Built where the run folder is local (an S3 sweep: download it, `axpo report`)."""
    from axpo_core.evaluation.run_dir import read_run
    from axpo_core.evaluation.seeds import seed_table

    layout = ctx.layout()
    if layout.base.startswith("s3://"):
        return ReportRef(uri=layout.report(), markdown="(an S3 sweep: download it, run `axpo report`)\n")
    folder = local_path(layout.base)
    build_report(folder, ks=ctx.config.evaluation.k)
    markdown = to_markdown(seed_table(read_run(folder), ctx.config.evaluation.k))
    ctx.store.put_text(layout.report("results.md"), markdown)
    return ReportRef(uri=layout.report(), markdown=markdown)
