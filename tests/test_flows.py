"""The Prefect flows end to end on tiny-s against a real Prefect test server, MLflow in sqlite, real storage.

Slow (real SFT, rollouts and updates of a tiny model); `make test` and CI run them.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime

import pytest
from moto_fixtures import moto_endpoint, s3_bucket, s3_client  # noqa: F401

pytestmark = pytest.mark.slow

SMALL = [
    "model.recall_pretrain_steps=0",  # plumbing, not competence: no recall pretraining in the build (~2 min)
    "rollout.group_size=2",
    "training.questions_per_round=2",
    "training.rounds=2",
    "training.pool_size=6",
    "training.filter_samples=2",
    "sft.examples=16",
    "sft.epochs=1",
    "evaluation.questions=2",
    "evaluation.samples=2",
    "evaluation.k=[1,2]",
    "evaluation.benchmarks=[control_shapes,zoom_detail]",
]


@pytest.fixture(scope="module")
def prefect_server():
    from flows.runtime import configure_prefect

    configure_prefect()
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):
        yield


def small_config(tmp_path, *extra: str):
    from axpo_core.config import load_config

    return load_config(None, [*SMALL, f"storage.root=file://{tmp_path}/store", *extra])


def test_pipeline_end_to_end(prefect_server, tmp_path, monkeypatch, capfd):
    from prefect.client.orchestration import get_client

    from axpo_core.runs import stage_slug
    from axpo_core.tracking import Tracker
    from flows.pipeline import pipeline

    config = small_config(tmp_path)
    started = datetime.now(UTC).isoformat()
    monkeypatch.setenv("AXPO_PROGRESS", "1")  # bars on, as on a terminal
    result = pipeline(config, "e2e")

    bars = capfd.readouterr().err
    labels = (
        "pipeline tiny-s",
        "SFT steps",
        "tiny-s SFT+GRPO rounds",
        "tiny-s SFT+AXPO rounds",
        "evaluate (stage",
    )
    for label in labels:
        assert label in bars
    assert "8/8" in bars  # base, tool check, SFT, RL data filter, 2 arms, evaluate, report

    assert [line.split(" | ")[1] for line in result.table_markdown.splitlines()[2:]] == [
        "Base",
        "SFT",
        "SFT+GRPO",
        "SFT+AXPO",
    ]
    assert {e.stage for e in result.evaluations} == {"Base", "SFT", "SFT+GRPO", "SFT+AXPO"}
    report_dir = tmp_path / "store" / "tiny" / "e2e" / "report"
    assert (report_dir / "results.md").read_text() == result.table_markdown
    for arm in ("sft_grpo", "sft_axpo"):
        for n in (1, 2):
            assert (
                tmp_path
                / "store"
                / "tiny"
                / "e2e"
                / "tiny-s"
                / arm
                / "checkpoints"
                / f"round-{n}"
                / "_COMPLETE"
            ).is_file()
            assert (
                tmp_path / "store" / "tiny" / "e2e" / "tiny-s" / arm / "rollouts" / f"round-{n}.jsonl"
            ).is_file()

    _rerun_resumes_and_logs_no_metric_twice(config, result, tmp_path)

    tracker = Tracker(result.tracking_uri, tmp_path, config.tracking.experiment)
    children_stages = ("Base", "SFT", "SFT+GRPO", "SFT+AXPO")
    children = {run.name: run for run in tracker.child_runs(result.parent_run_id)}
    assert set(children) == {"tiny-s/Base", "tiny-s/SFT", "tiny-s/SFT+GRPO", "tiny-s/SFT+AXPO"}
    for stage, algo in (("SFT+GRPO", "grpo"), ("SFT+AXPO", "axpo")):
        run = children[f"tiny-s/{stage}"]
        assert run.tags["algo"] == algo and run.tags["scale"] == "tiny-s" and run.tags["seed"] == "0"
        assert (
            run.tags["stage"] == stage
            and run.tags["ablation"] == "none"
            and len(run.tags["config_hash"]) == 12
        )
        assert run.tags["rollouts_uri"].endswith(f"/e2e/tiny-s/{stage_slug(stage)}/rollouts")
        assert run.params["algorithm.name"] == algo and run.params["training.rounds"] == "2"
        assert [step for step, _ in tracker.metric_history(run.run_id, "diag/tool_use_rate")] == [1, 2]
        assert [step for step, _ in tracker.metric_history(run.run_id, "train/reward_mean")] == [1, 2]
        for metrics in result.round_metrics[stage]:  # the gain is paired on the round's own questions
            gain = metrics["reward_mean"] - metrics["reward_start_policy"]
            assert metrics["reward_gain_vs_start"] == pytest.approx(gain)
        gains = tracker.metric_history(run.run_id, "train/reward_gain_vs_start")
        assert [step for step, _ in gains] == [1, 2]
        assert [step for step, _ in tracker.metric_history(run.run_id, "update/loss")] == [1, 2]
        assert set(tracker.list_artifacts(run.run_id, "rollouts")) == {
            "rollouts/round-1.sample.jsonl",
            "rollouts/round-2.sample.jsonl",
        }
        assert "diagnostics/rounds.csv" in tracker.list_artifacts(run.run_id, "diagnostics")
    assert children["tiny-s/SFT+AXPO"].tags["config_hash"] != children["tiny-s/SFT+GRPO"].tags["config_hash"]
    for run in children.values():
        assert tracker.metric_history(run.run_id, "eval/zoom_detail/pass_at_1")
        assert "eval/average/pass_at_1" in run.metrics
    parent = tracker.get_run(result.parent_run_id)
    assert {f"summary/avg_pass_at_1/{stage_slug(s)}" for s in children_stages} <= set(parent.metrics)
    report_files = set(tracker.list_artifacts(result.parent_run_id, "report"))
    assert {"report/report.html", "report/report.md", "report/rollouts.html", "report/plots"} <= report_files
    assert "results/results_table.json" in tracker.list_artifacts(result.parent_run_id, "results")
    assert result.mlflow_url.endswith(f"/runs/{result.parent_run_id}?workflowType=machine_learning")

    async def artifact_keys():
        from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, TaskRunFilter
        from prefect.client.schemas.sorting import ArtifactSort

        async with get_client() as client:  # explicit filters: this Prefect's server rejects null ones (422)
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(),
                flow_run_filter=FlowRunFilter(),
                task_run_filter=TaskRunFilter(),
                sort=ArtifactSort.CREATED_DESC,
                limit=200,
            )
            # Posted as the server wants it (its client's list methods send nulls it rejects, and their
            # empty deployment filter would keep only deployed runs); only this test's runs.
            flow_runs = await _runs_named(client, "flow_runs", FLOW_RUN_NAMES, started)
            task_runs = await _runs_named(client, "task_runs", TASK_RUN_NAMES, started)
            return {a.key for a in artifacts}, flow_runs, task_runs

    import asyncio

    keys, flow_run_names, task_run_names = asyncio.run(artifact_keys())
    assert flow_run_names == FLOW_RUN_NAMES and task_run_names == TASK_RUN_NAMES
    assert "results-e2e" in keys and "evaluate-e2e" in keys
    assert {"train-e2e-tiny-s-sft-axpo", "train-e2e-tiny-s-sft-grpo", "sft-e2e-tiny-s"} <= keys


# Prefect's run names read as the experiment (a few of them)
FLOW_RUN_NAMES = {"axpo_round[tiny-s SFT+AXPO r2]", "train[tiny-s SFT+GRPO]", "pipeline[tiny-s seed0]"}
TASK_RUN_NAMES = {"evaluate[SFT+GRPO]", "update[tiny-s SFT+AXPO r1]", "sft[tiny-s]"}


async def _runs_named(client, kind: str, names: set[str], started: str) -> set[str]:
    """The names of the flow or task runs (`kind`: flow_runs | task_runs) with these names started since."""
    body = {
        kind: {"name": {"any_": sorted(names)}, "start_time": {"after_": started}},
        "sort": "ID_DESC",
        "limit": 200,
        "offset": 0,
    }
    response = await client._client.post(f"/{kind}/filter", json=body)
    response.raise_for_status()
    return {run["name"] for run in response.json()}


def _metric_entries(tracking_uri: str, parent_run_id: str) -> Counter:
    """How many history entries each (run, key, step) has in the MLflow store, over the parent's runs."""
    from mlflow.tracking import MlflowClient

    from axpo_core.tracking import PARENT_TAG

    client = MlflowClient(tracking_uri)
    run = client.get_run(parent_run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    entries: Counter = Counter()
    for r in [run, *children]:
        for key in r.data.metrics:
            for m in client.get_metric_history(r.info.run_id, key):
                entries[(r.info.run_name, key, m.step)] += 1
    return entries


def _rerun_resumes_and_logs_no_metric_twice(config, first, tmp_path) -> None:
    """An unchanged rerun is served from the cache (nothing rewritten) and adds no metric entry."""
    from flows.pipeline import pipeline

    run_dir = tmp_path / "store" / "tiny" / "e2e"
    written = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.name != "_LOCK"}
    before = _metric_entries(first.tracking_uri, first.parent_run_id)
    assert before and max(before.values()) == 1
    assert sum(1 for run, key, _ in before if key.startswith("eval/") and run == "tiny-s/SFT") >= 2

    again = pipeline(config, "e2e")

    assert again.table_markdown == first.table_markdown and again.parent_run_id == first.parent_run_id
    rewritten = [p for p, mtime in written.items() if p.stat().st_mtime_ns != mtime]
    assert rewritten == []
    after = _metric_entries(first.tracking_uri, first.parent_run_id)
    assert after == before  # every (run, key, step) still logged exactly once


def test_sweep_over_two_seeds_reports_intervals_and_paired_differences(prefect_server, tmp_path):
    """Two seeds, GRPO / AXPO / GRPO with 2x rollouts from each seed's SFT: the sweep's report has the
    across-seed tables, with each seed's arms paired on the same evaluation questions; a rerun resumes."""
    import csv

    from flows.pipeline import sweep

    config = small_config(
        tmp_path,
        "training.rounds=1",
        "pipeline.seeds=[0,1]",
        "pipeline.stages=[SFT,SFT+GRPO,SFT+AXPO]",
        "pipeline.ablations={x2: {name: grpo, rollout_multiplier: 2}}",
    )
    results = sweep(config, "sw")
    assert [(r.seed, r.scale) for r in results] == [(0, "tiny-s"), (1, "tiny-s")]
    report_dir = tmp_path / "store" / "tiny" / "sw" / "report"
    rows = list(csv.DictReader((report_dir / "seed_means.csv").open()))
    assert {r["stage"] for r in rows} == {"SFT", "SFT+GRPO", "SFT+AXPO", "SFT+GRPO[x2]"}
    assert {r["seeds"] for r in rows} == {"2"}
    diffs = {r["difference"] for r in csv.DictReader((report_dir / "paired_differences.csv").open())}
    assert {"SFT+AXPO − SFT+GRPO", "SFT+AXPO − SFT+GRPO[x2]"} <= diffs
    cost = {r["stage"]: r for r in csv.DictReader((report_dir / "cost.csv").open())}
    # 2x rollouts: twice the originals per round (2 questions x 4 instead of x 2)
    assert float(cost["SFT+GRPO[x2]"]["rollouts"]) == 2 * float(cost["SFT+GRPO"]["rollouts"])
    assert float(cost["SFT+AXPO"]["wall time (s)"]) > 0
    assert (report_dir / "results.md").read_text().startswith("| scale | stage | seeds |")
    from axpo_core.tracking import Tracker

    tracker = Tracker(results[0].tracking_uri, tmp_path, config.tracking.experiment)
    parent = results[0].parent_run_id  # the sweep's parent run: it holds the across-seed report
    assert "report/report.md" in tracker.list_artifacts(parent, "report")
    assert "report/seed_means.csv" in tracker.list_artifacts(parent, "report")

    again = sweep(config, "sw")
    assert [r.table_markdown for r in again] == [r.table_markdown for r in results]


def test_sweep_over_scales_reports_each_scale(prefect_server, tmp_path):
    """`axpo sweep --scales tiny-s,tiny-m` (as configs/repro.yaml widens): one variant per scale, each with
    its own model size, and the sweep's headline table has a row per (scale, stage)."""
    import csv
    import json

    from flows.pipeline import sweep

    config = small_config(tmp_path, "pipeline.scales=[tiny-s,tiny-m]", "pipeline.stages=[Base,SFT]")
    results = sweep(config, "scales")
    assert [(r.seed, r.scale) for r in results] == [(0, "tiny-s"), (0, "tiny-m")]
    run_dir = tmp_path / "store" / "tiny" / "scales"
    widths = {
        scale: json.loads(next((run_dir / f"{scale}-seed0").rglob("config.json")).read_text())
        for scale in ("tiny-s", "tiny-m")
    }
    hidden = {s: c.get("text_config", c).get("hidden_size") for s, c in widths.items()}
    assert hidden["tiny-s"] < hidden["tiny-m"], hidden
    rows = list(csv.DictReader((run_dir / "report" / "seed_means.csv").open()))
    assert {(r["scale"], r["stage"]) for r in rows} == {
        (s, stage) for s in ("tiny-s", "tiny-m") for stage in ("Base", "SFT")
    }
    headline = (run_dir / "report" / "results.md").read_text()
    assert "| tiny-m | SFT |" in headline and "| tiny-s | SFT |" in headline


def test_comparison_arms_sweep_into_the_papers_table(prefect_server, tmp_path):
    """The comparison's arms by config (configs/comparison.yaml in miniature): RLTF and ARPO as stages,
    CISPO and the tool bonus as named arms; the sweep's report has the comparison table, ARPO its branches,
    RLTF its second attempts (their critiques travel between the tasks with the requests)."""
    import csv

    from flows.pipeline import sweep

    config = small_config(
        tmp_path,
        "training.rounds=1",
        "pipeline.seeds=[0,1]",
        "pipeline.stages=[SFT,SFT+GRPO,SFT+RLTF,SFT+ARPO]",
        "pipeline.ablations={cispo: {name: grpo, loss: cispo}, tool_bonus: {name: grpo, tool_bonus: 1.5}}",
        "algorithm.arpo_branch_budget=1",  # N' = 2 here: ⌊0.25 · 2⌋ would be no budget at all
        "algorithm.rltf_revisions=1",
    )
    results = sweep(config, "cmp")
    report_dir = tmp_path / "store" / "tiny" / "cmp" / "report"
    rows = {r["stage"]: r for r in csv.DictReader((report_dir / "comparison.csv").open())}
    stages = ("SFT+GRPO", "SFT+GRPO[tool_bonus]", "SFT+RLTF", "SFT+GRPO[cispo]", "SFT+ARPO")
    methods = ["GRPO (baseline)", "GRPO + tool bonus (DeepEyes)", "RLTF", "CISPO", "ARPO"]
    assert [rows[s]["method"] for s in stages] == methods
    assert {r["seeds"] for r in rows.values()} == {"2"} and "[" in rows["SFT+ARPO"]["average pass@1"]
    cost = {r["stage"]: r for r in csv.DictReader((report_dir / "cost.csv").open())}
    # ARPO: M = N' + 1 per question, 2 questions: 2 branches or fresh fills per round, beside 4 originals
    assert float(cost["SFT+ARPO"]["continuations"]) == 2 and float(cost["SFT+ARPO"]["rollouts"]) == 4
    for r in results:
        arpo = r.final_metrics["SFT+ARPO"]
        assert arpo["arpo_branches"] + arpo["arpo_fill_rollouts"] == 2
        rltf = r.final_metrics["SFT+RLTF"]
        assert rltf["rltf_revisions"] == rltf["continuations"] <= 2  # one per question with a failed attempt
        bonus = r.final_metrics["SFT+GRPO[tool_bonus]"]
        assert bonus["reward_mean_shaped"] >= bonus["reward_mean"]


def test_crash_in_round_two_update_resumes_without_redoing_work(prefect_server, tmp_path, monkeypatch):
    import tasks.rl as rl
    from flows.pipeline import pipeline

    config = small_config(tmp_path, "pipeline.stages=[SFT+AXPO]")
    calls = {"rollout": 0, "update": 0}
    real_rollout, real_update = rl.rollout_step, rl.update_step

    def counting_rollout(*args, **kwargs):
        calls["rollout"] += 1
        return real_rollout(*args, **kwargs)

    def crashing_update(*args, **kwargs):
        calls["update"] += 1
        if calls["update"] >= 2:  # round 2 (and its retries)
            raise RuntimeError("injected crash in the round-2 update")
        return real_update(*args, **kwargs)

    monkeypatch.setattr(rl, "rollout_step", counting_rollout)
    monkeypatch.setattr(rl, "update_step", crashing_update)
    with pytest.raises(Exception, match="injected crash"):
        pipeline(config, "resume")
    assert calls["rollout"] == 2 and calls["update"] == 4  # round 1 ok; round 2 tried 1 + 2 retries
    arm = tmp_path / "store" / "tiny" / "resume" / "tiny-s" / "sft_axpo"
    round2 = (arm / "rollouts" / "round-2.jsonl").read_bytes()
    assert not (arm / "checkpoints" / "round-2").exists()

    calls.update(rollout=0, update=0)
    monkeypatch.setattr(
        rl,
        "update_step",
        lambda *a, **k: (calls.__setitem__("update", calls["update"] + 1), real_update(*a, **k))[1],
    )
    result = pipeline(config, "resume")
    assert calls == {"rollout": 0, "update": 1}  # only the failed update ran again
    assert (arm / "rollouts" / "round-2.jsonl").read_bytes() == round2  # rollouts kept, not regenerated
    assert (arm / "checkpoints" / "round-2" / "_COMPLETE").is_file()
    assert result.final_metrics["SFT+AXPO"]["rollouts"] > 0


def test_deleted_run_folder_starts_over_instead_of_reusing_stale_cache(prefect_server, tmp_path):
    """Prefect still holds the first run's cached results; the run folder they point into is gone."""
    import shutil

    from axpo_core.runs import Arm
    from flows.runtime import make_context
    from flows.training import train
    from tasks.stages import build_model

    config = small_config(tmp_path, "training.rounds=1")
    pool = ["control_shapes-1000-0", "zoom_detail-1000-0"]
    arm = Arm(stage="SFT+GRPO", algo="grpo")
    first = make_context(config, "wiped")
    train(first, arm, build_model(first, "tiny-s"), pool)
    shutil.rmtree(tmp_path / "store")

    again = make_context(config, "wiped")
    assert again.storage_id != first.storage_id
    records = train(again, arm, build_model(again, "tiny-s"), pool)
    run = tmp_path / "store" / "tiny" / "wiped" / "tiny-s"
    assert (run / "sft_grpo" / "rollouts" / "round-1.jsonl").is_file()
    assert (run / "sft_grpo" / "checkpoints" / "round-1" / "_COMPLETE").is_file()
    assert records[0].checkpoint.uri.endswith("sft_grpo/checkpoints/round-1")
    assert make_context(config, "wiped").storage_id == again.storage_id  # the same folder resumes


def test_train_flow_on_s3(prefect_server, tmp_path, moto_endpoint, s3_bucket):  # noqa: F811
    from axpo_core.runs import Arm
    from flows.runtime import make_context
    from flows.training import train
    from tasks.stages import build_model

    config = small_config(
        tmp_path,
        f"storage.root=s3://{s3_bucket}/runs",
        f"storage.s3_endpoint_url={moto_endpoint}",
        "training.rounds=1",
    )
    ctx = make_context(config, "s3run").model_copy(update={"output_dir": str(tmp_path / "out")})
    base = build_model(ctx, "tiny-s")
    records = train(
        ctx, Arm(stage="SFT+AXPO", algo="axpo"), base, ["control_shapes-1000-0", "zoom_detail-1000-0"]
    )
    assert records[0].checkpoint.uri.startswith(f"s3://{s3_bucket}/runs/tiny/s3run/tiny-s/sft_axpo/")
    s3 = s3_client(moto_endpoint)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="runs/tiny/s3run/")["Contents"]}
    assert "runs/tiny/s3run/tiny-s/checkpoints/base/_COMPLETE" in keys
    assert "runs/tiny/s3run/tiny-s/sft_axpo/checkpoints/round-1/_COMPLETE" in keys
    assert "runs/tiny/s3run/tiny-s/sft_axpo/rollouts/round-1.jsonl" in keys


def test_evaluate_with_dask_equals_threads(prefect_server, tmp_path):
    from flows.evaluation import run_evaluation
    from flows.runtime import make_context
    from tasks.stages import build_model

    config = small_config(tmp_path)
    ctx = make_context(config, "dask")
    base = build_model(ctx, "tiny-s")
    threads = run_evaluation(ctx, {"Base": base})
    dask_ctx = ctx.model_copy(
        update={
            "config": config.model_copy(
                update={
                    "pipeline": config.pipeline.model_copy(update={"task_runner": "dask"}),
                    # another eval output folder: the two runs must not share cache entries
                    "experiment": "tiny-dask",
                }
            )
        }
    )
    dask = run_evaluation(dask_ctx, {"Base": base})
    assert [(e.benchmark, e.metrics) for e in threads] == [(e.benchmark, e.metrics) for e in dask]
    store = ctx.store
    for a, b in zip(threads, dask):
        assert [r["text"] for r in store.get_jsonl(a.uri)] == [r["text"] for r in store.get_jsonl(b.uri)]


def test_deployments_register_and_run_on_a_process_worker(prefect_server, tmp_path):
    """`axpo deploy` against the test server, then a real process worker runs the pipeline deployment."""
    import subprocess
    import sys
    from pathlib import Path

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    deployed = subprocess.run(
        [bin_dir / "axpo", "deploy"], env=env, capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    async def read(name):
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    import asyncio

    sweep = asyncio.run(read("sweep/sweep-scales-nightly"))
    assert [s.schedule.cron for s in sweep.schedules] == ["0 2 * * *"]
    assert sweep.parameters["config"]["pipeline"]["scales"] == ["tiny-s", "tiny-m", "tiny-l"]
    assert sweep.work_pool_name == "axpo-process"

    # sweep.mode: deployments: both seeds start as runs of the pipeline deployment at once; a real process
    # worker runs them side by side, each under the sweep's one MLflow parent run, and the sweep reads their
    # results from the store
    from flows.pipeline import sweep as sweep_flow

    worker = subprocess.Popen(
        [bin_dir / "prefect", "worker", "start", "--pool", "axpo-process"],
        env={**env, "AXPO_PROJECT_DIR": str(Path(__file__).resolve().parent.parent)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its flow-run processes too are stopped with it, below
    )
    try:
        swept = sweep_flow(
            small_config(
                tmp_path,
                "pipeline.stages=[Base]",
                "pipeline.seeds=[0,1]",
                "sweep.mode=deployments",
                "sweep.poll_s=1",
            ),
            "swept",
        )
    finally:
        import signal

        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a worker may wait on its runs' shutdown: not under test here
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    assert [(r.seed, r.run_name) for r in swept] == [(0, "swept/tiny-s-seed0"), (1, "swept/tiny-s-seed1")]
    assert {r.parent_run_id for r in swept} == {swept[0].parent_run_id}
    assert (tmp_path / "store" / "tiny" / "swept" / "report" / "seed_means.csv").is_file()
    for seed in (0, 1):
        assert (
            tmp_path / "store" / "tiny" / "swept" / f"tiny-s-seed{seed}" / "report" / "results.md"
        ).is_file()
    from axpo_core.tracking import Tracker

    tracker = Tracker(swept[0].tracking_uri, tmp_path, "axpo")
    children = {run.name for run in tracker.child_runs(swept[0].parent_run_id)}
    assert {"tiny-s/seed0/Base", "tiny-s/seed1/Base"} <= children


def test_a_run_held_by_another_process_is_refused_before_any_work(prefect_server, tmp_path):
    """Two `axpo run` on one run name: the second stops at once, naming the holder, and writes nothing."""
    import subprocess
    import sys
    from pathlib import Path

    from flows.pipeline import pipeline
    from flows.runlock import RunLocked

    config = small_config(tmp_path, "pipeline.stages=[Base]")
    run_dir = tmp_path / "store" / "tiny" / "busy"
    hold = (
        "import sys, time\n"
        "from axpo_core.storage import open_store\n"
        "from flows.runlock import RunLock\n"
        "RunLock(open_store(sys.argv[1]), sys.argv[2]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, config.storage.root, f"file://{run_dir}"],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"in use by pid {holder.pid} on host .*, started "):
            pipeline(config, "busy")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in run_dir.iterdir()) == ["_LOCK"]  # no _RUN_ID, no checkpoint


RERUN_SCRIPT = """
import json
from flows.runtime import configure_prefect

configure_prefect()
from prefect import flow, task

from tasks.persistence import RESUMABLE


@task(name="advantages", **RESUMABLE)
def advantages(rewards: list[float]) -> list[float]:
    from axpo_core.algorithms.grpo import group_advantages

    return group_advantages(rewards, 1e-6)


@flow(name="rerun-after-edit")
def rerun() -> tuple[str, list[float]]:
    state = advantages([0.0, 1.0], return_state=True)
    return state.name, state.result()


print(json.dumps(rerun()))
"""


def test_a_code_edit_recomputes_and_an_unchanged_rerun_resumes(prefect_server, tmp_path):
    """Each run is a new process on a copy of the packages; the copy's grpo.py is edited between runs."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from prefect.settings import PREFECT_API_URL

    repo = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    for package in ("axpo_core", "tasks", "flows"):
        shutil.copytree(repo / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "rerun.py"
    script.write_text(RERUN_SCRIPT)
    results = str(tmp_path / "results")
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_LOCAL_STORAGE_PATH": results,
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": results,
    }

    def run() -> tuple[str, list[float]]:
        done = subprocess.run(
            [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        state, value = json.loads(done.stdout.strip().splitlines()[-1])
        return state, [round(v, 6) for v in value]

    state, first = run()
    assert state == "Completed" and first == pytest.approx([-0.707106, 0.707106], abs=1e-5)
    assert run() == ("Cached", first)  # same code: served from the cache

    grpo = src / "axpo_core" / "algorithms" / "grpo.py"
    code = grpo.read_text()
    signature = "def group_advantages(rewards: Sequence[float], eps: float) -> list[float]:\n"
    assert signature in code
    grpo.write_text(code.replace(signature, signature + "    return [7.0 for _ in rewards]\n"))
    assert run() == ("Completed", [7.0, 7.0])  # the edited code ran, not the cached result

    # An edit outside the task's import closure (the report's plots) changes nothing it could compute.
    plots = src / "axpo_core" / "evaluation" / "plots.py"
    plots.write_text(plots.read_text() + "\n\ndef _edited() -> None:\n    pass\n")
    assert run() == ("Cached", [7.0, 7.0])
