"""The MLflow adapter on a real sqlite backend (and moto S3 for artifacts), read back with MlflowClient."""

from __future__ import annotations

import json
import logging
import math
import pickle
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from moto_fixtures import moto_endpoint, s3_bucket, s3_client  # noqa: F401
from pydantic import BaseModel

from axpo_core.tracking import (
    EXPERIMENT_KIND_TAG,
    NOTE_TAG,
    Tracker,
    clean_key,
    config_hash,
    default_tracking_uri,
    flatten,
    round_metrics,
    source_commit,
)


class Algo(BaseModel):
    name: str = "axpo"
    budget_ratio: float = 0.25
    ranking: str = "prob"


class Experiment(BaseModel):
    seed: int = 0
    algorithm: Algo = Algo()
    benchmarks: list[str] = ["vstar", "mathvision"]
    notes: str = "x" * 7000  # longer than MLflow's 6000-character param limit


@pytest.fixture(scope="session")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite database for the module: creating one runs MLflow's migrations (~5 s on 2 cores)."""
    return tmp_path_factory.mktemp("tracking")


@pytest.fixture
def tracker(out_dir: Path, request: pytest.FixtureRequest) -> Tracker:
    return Tracker(None, out_dir, f"exp-{request.node.name}")  # an experiment per test


def test_default_uri_and_ui_command(out_dir: Path) -> None:
    tracker = Tracker(None, out_dir, "defaults")
    assert tracker.tracking_uri == default_tracking_uri(out_dir) == f"sqlite:///{out_dir}/mlflow.db"
    assert (out_dir / "mlflow.db").is_file()
    assert tracker.ui_command() == (
        f"mlflow ui --backend-store-uri sqlite:///{out_dir}/mlflow.db --host 127.0.0.1 --port 5000"
    )
    experiment = MlflowClient(tracker.tracking_uri).get_experiment(tracker.experiment_id)
    assert experiment.name == "defaults"
    assert experiment.artifact_location == (out_dir / "mlartifacts").as_uri()  # next to the db, not the cwd
    assert Tracker(None, out_dir, "defaults").experiment_id == tracker.experiment_id  # found, not created


def test_parent_children_metrics_params_artifacts(tracker: Tracker, tmp_path: Path) -> None:
    parent = tracker.start_run("sweep", tags={"kind": "sweep"})
    children = {}
    for algo in ("grpo", "axpo"):
        run = tracker.start_run(
            f"tiny-s-{algo}", parent_run_id=parent, tags={"algo": algo, "scale": "tiny-s", "seed": 0}
        )
        children[algo] = run
        tracker.log_config(run, Experiment(algorithm=Algo(name=algo)))
        for step in (1, 2, 3):
            tracker.log_metrics(
                run, {"reward/mean": 0.1 * step, "update/loss": -step, "tool_use_rate": 0.27}, step
            )
        tracker.log_metrics(run, {"eval/vstar/pass@1": 0.5, "eval/vstar/pass@4": 0.75})
        report = tmp_path / f"{algo}.md"
        report.write_text(f"# {algo}\n")
        tracker.log_artifact(run, report, "report")
        tracker.log_text(run, "round,reward\n1,0.1\n", "tables/rounds.csv")
        tracker.end_run(run)
    tracker.log_params(parent, {"scales": ["tiny-s"], "algos": {"a": "grpo", "b": "axpo"}, "empty": {}})
    tracker.end_run(parent)

    client = MlflowClient(tracker.tracking_uri)
    found = client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", order_by=["tags.algo"]
    )
    assert [r.info.run_id for r in found] == [children["axpo"], children["grpo"]]
    for run in found:
        algo = run.data.tags["algo"]
        assert run.info.run_name == f"tiny-s-{algo}" and run.info.status == "FINISHED"
        assert run.data.tags["scale"] == "tiny-s" and run.data.tags["seed"] == "0"
        params = run.data.params
        assert params["algorithm.name"] == algo and params["algorithm.budget_ratio"] == "0.25"
        assert params["benchmarks"] == "['vstar', 'mathvision']" and params["seed"] == "0"
        assert len(params["notes"]) == 6000 and params["notes"].endswith("...")
        history = client.get_metric_history(run.info.run_id, "reward/mean")
        assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
        assert [m.value for m in client.get_metric_history(run.info.run_id, "update/loss")] == [-1, -2, -3]
        assert run.data.metrics["eval/vstar/pass_at_4"] == 0.75  # MLflow does not allow "@"
        arts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert arts == {"report", "tables", "config.json"}
        assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == [f"report/{algo}.md"]
        local = Path(client.download_artifacts(run.info.run_id, "config.json", str(tmp_path / algo)))
        assert '"budget_ratio": 0.25' in local.read_text()
    top = client.get_run(parent)
    assert top.data.params == {"scales": "['tiny-s']", "algos.a": "grpo", "algos.b": "axpo", "empty": "{}"}
    assert "mlflow.parentRunId" not in top.data.tags

    # the adapter's own read-back, used by reports
    records = tracker.child_runs(parent)
    assert [(r.name, r.tags["algo"], r.parent_run_id) for r in records] == [
        ("tiny-s-grpo", "grpo", parent),
        ("tiny-s-axpo", "axpo", parent),
    ]
    assert tracker.metric_history(children["axpo"], "update/loss") == [(1, -1.0), (2, -2.0), (3, -3.0)]


def test_find_run_and_resume(tracker: Tracker) -> None:
    parent = tracker.start_run("pipeline")
    other_parent = tracker.start_run("pipeline-2")
    child = tracker.start_run("tiny-s-axpo", parent_run_id=parent, tags={"algo": "axpo"})
    tracker.start_run("tiny-s-axpo", parent_run_id=other_parent)
    tracker.log_params(child, {"lr": 1e-6})
    tracker.end_run(child, "FAILED")

    assert tracker.find_run("pipeline") == parent
    assert tracker.find_run("tiny-s-axpo", parent_run_id=parent) == child
    assert tracker.find_run("tiny-s-axpo") is None  # only child runs carry that name
    assert tracker.find_run("tiny-s-grpo", parent_run_id=parent) is None
    assert tracker.find_run("it's") is None

    resumed = tracker.start_run("tiny-s-axpo", parent_run_id=parent, tags={"attempt": 2}, resume=True)
    assert resumed == child
    record = tracker.get_run(child)
    assert record.status == "RUNNING" and record.tags == {"algo": "axpo", "attempt": "2"}
    tracker.log_params(child, {"lr": 1e-6, "new": 1})  # a rerun logs its config again: no error
    tracker.log_params(child, {"lr": 2e-6})  # a changed value is kept as it was (warned)
    assert tracker.get_run(child).params == {"lr": "1e-06", "new": "1"}
    fresh = tracker.start_run("tiny-s-sft", parent_run_id=parent, resume=True)  # nothing to resume
    assert fresh not in (parent, child)


def test_nan_and_inf_are_dropped(tracker: Tracker, caplog: pytest.LogCaptureFixture) -> None:
    run = tracker.start_run("r")
    with caplog.at_level(logging.WARNING, logger="axpo_core.tracking"):
        dropped = tracker.log_metrics(
            run, {"ok": 1, "kl": math.nan, "grad_norm": math.inf, "flag": True}, step=2
        )
    assert dropped == ["kl", "grad_norm"]
    assert "kl" in caplog.text and "grad_norm" in caplog.text
    assert tracker.get_run(run).metrics == {"ok": 1.0, "flag": 1.0}
    with pytest.raises(TypeError, match="'bad' is not a number"):
        tracker.log_metrics(run, {"bad": "high"})


def test_concurrent_logging_from_threads(out_dir: Path) -> None:
    tracker = Tracker(None, out_dir, "threads")
    second = Tracker(None, out_dir, "threads")  # a second adapter on the same sqlite file
    parent = tracker.start_run("parent")
    runs = [tracker.start_run(f"child-{i}", parent_run_id=parent) for i in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        try:
            barrier.wait()
            adapter = second if i % 2 else tracker
            for step in range(25):
                adapter.log_metrics(runs[i], {"reward/mean": step / 100, "thread": i}, step=step)
                adapter.log_metrics(parent, {f"progress/{i}": step}, step=step)
            adapter.set_tags(runs[i], {"done": "yes"})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    client = MlflowClient(tracker.tracking_uri)
    for i, run in enumerate(runs):
        assert [m.step for m in client.get_metric_history(run, "reward/mean")] == list(range(25))
        assert client.get_run(run).data.tags["done"] == "yes"
        assert len(client.get_metric_history(parent, f"progress/{i}")) == 25


def test_tracker_survives_pickling(tracker: Tracker) -> None:
    run = tracker.start_run("r")
    clone = pickle.loads(pickle.dumps(tracker))  # e.g. passed as a Prefect task parameter
    clone.log_metrics(run, {"x": 1.0}, step=1)
    assert tracker.metric_history(run, "x") == [(1, 1.0)]


def test_key_cleaning_and_flattening() -> None:
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}
    assert clean_key("update/loss") == "update/loss"
    assert clean_key("eval/v*/pass@1") == "eval/v_/pass_at_1"
    assert clean_key("/a//b/./../c/") == "a/b/__/c"
    assert clean_key("") == "_" and len(clean_key("k" * 300)) == 250


def test_artifacts_land_in_s3(
    out_dir: Path,
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)
    tracker = Tracker(None, out_dir, "s3-artifacts", artifact_location=f"s3://{s3_bucket}/mlflow")
    run = tracker.start_run("r")
    assert tracker.artifact_uri(run).startswith(f"s3://{s3_bucket}/mlflow/")
    report = tmp_path / "table.md"
    report.write_text("| algo | pass@1 |\n")
    tracker.log_artifact(run, report, "report")
    tracker.log_text(run, "hello", "notes/hello.txt")

    listing = s3_client(moto_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix="mlflow/")
    keys = sorted(o["Key"] for o in listing.get("Contents", []))
    assert keys == [
        f"mlflow/{run}/artifacts/notes/hello.txt",
        f"mlflow/{run}/artifacts/report/table.md",
    ]
    body = s3_client(moto_endpoint).get_object(Bucket=s3_bucket, Key=keys[1])["Body"].read()
    assert body == b"| algo | pass@1 |\n"


# ------------------------------------------------------------------ what the UI shows: kind, notes, tables
def load_table(tracker: Tracker, run_id: str, artifact_file: str):
    """MLflow's own reader of a logged table (it searches the global tracking URI, hence the env var)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tracker.tracking_uri)
        return MlflowClient(tracker.tracking_uri).load_table(
            tracker.experiment_id, artifact_file, run_ids=[run_id]
        )


def test_experiment_is_model_training_and_runs_are_described(out_dir: Path) -> None:
    client = MlflowClient(default_tracking_uri(out_dir))
    Tracker(None, out_dir, "kind-new")  # created with the tag
    old_id = client.create_experiment("kind-old")  # one made before the tag existed
    tracker = Tracker(None, out_dir, "kind-old")
    assert tracker.experiment_id == old_id
    for name in ("kind-new", "kind-old"):
        assert client.get_experiment_by_name(name).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"

    tracker.describe_experiment("GRPO vs *AXPO*")
    run = tracker.start_run("r")
    tracker.describe_run(run, "the **SFT+AXPO** arm")
    assert tracker.experiment_tags()[NOTE_TAG] == "GRPO vs *AXPO*"
    assert client.get_run(run).data.tags[NOTE_TAG] == "the **SFT+AXPO** arm"
    assert tracker.ui_url("http://127.0.0.1:5001/", run) == (
        f"http://127.0.0.1:5001/#/experiments/{old_id}/runs/{run}?workflowType=machine_learning"
    )


def test_log_table_replaces_and_is_listed_as_a_table(tracker: Tracker) -> None:
    run = tracker.start_run("r")
    rows = [{"round": 1, "diag/flip_rate": 0.5}, {"round": 2, "diag/flip_rate": math.nan, "extra": "x"}]
    tracker.log_table(run, rows, "diagnostics/rounds.json")
    tracker.log_table(run, rows, "diagnostics/rounds.json")  # a rerun: replaced, not appended
    client = MlflowClient(tracker.tracking_uri)
    frame = load_table(tracker, run, "diagnostics/rounds.json")
    assert list(frame["round"]) == [1, 2] and list(frame.columns[:3]) == ["round", "diag/flip_rate", "extra"]
    assert frame["diag/flip_rate"].iloc[0] == 0.5 and math.isnan(frame["diag/flip_rate"].iloc[1])
    listed = json.loads(client.get_run(run).data.tags["mlflow.loggedArtifacts"])
    assert listed == [{"path": "diagnostics/rounds.json", "type": "table"}]
    with pytest.raises(ValueError, match="must end with .json"):
        tracker.log_table(run, rows, "rounds.csv")


def test_more_params_than_one_batch_and_long_values(tracker: Tracker) -> None:
    run = tracker.start_run("r")
    params = {"training": {f"knob_{i:03d}": i for i in range(250)}, "long": "y" * 9000}
    tracker.log_params(run, params)  # MLflow takes at most 100 params per call
    logged = tracker.get_run(run).params
    assert len(logged) == 251 and logged["training.knob_249"] == "249" and len(logged["long"]) == 6000


def test_round_metric_names_config_hash_and_commit(tmp_path: Path) -> None:
    assert round_metrics({"tool_use_rate": 1, "reward_mean": 2, "update/kl": 3, "flip_rate": 4}) == {
        "diag/tool_use_rate": 1,
        "train/reward_mean": 2,
        "update/kl": 3,
        "diag/flip_rate": 4,
    }
    assert (
        config_hash(Experiment()) == config_hash(Experiment().model_dump()) != config_hash(Experiment(seed=1))
    )
    assert len(config_hash(Experiment())) == 12
    commit = source_commit()
    assert len(commit.removesuffix("+dirty")) == 40 and int(commit[:40], 16) >= 0  # this checkout's HEAD
    assert source_commit(tmp_path) == "unknown"  # not a git checkout


def test_s3_artifact_store_from_the_endpoint_parameter(
    out_dir: Path,
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "unset-after-the-test")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")  # the Tracker sets it; the monkeypatch removes it again
    tracker = Tracker(
        None, out_dir, "s3-endpoint", artifact_location=f"s3://{s3_bucket}/ml", s3_endpoint_url=moto_endpoint
    )
    run = tracker.start_run("r")
    tracker.log_table(run, [{"stage": "SFT+AXPO", "average pass@1": 50.0}], "results/results_table.json")
    keys = [
        o["Key"]
        for o in s3_client(moto_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix="ml/").get("Contents", [])
    ]
    assert keys == [f"ml/{run}/artifacts/results/results_table.json"]
    assert tracker.list_artifacts(run, "results") == ["results/results_table.json"]


# ------------------------------------------------------------------ the tracking tasks' records (tasks/)
def _ctx(tmp_path: Path, experiment: str, *overrides: str):
    from axpo_core.config import load_config
    from tasks.context import RunContext

    config = load_config(
        None, [f"storage.root=file://{tmp_path}/store", f"tracking.experiment={experiment}", *overrides]
    )
    return RunContext(
        config=config, run_name="run1", output_dir=str(tmp_path), tracking_uri=default_tracking_uri(tmp_path)
    )


def _evals(stage_pass: dict[str, tuple[float, float]], scale: str = "tiny-s") -> list:
    from tasks.evaluation import EvalRef

    return [
        EvalRef(
            scale=scale, stage=stage, benchmark=bench, uri="-", metrics={"pass@1": p, "pass@2": min(1, 2 * p)}
        )
        for stage, values in stage_pass.items()
        for bench, p in zip(("zoom_detail", "python_count"), values, strict=True)
    ]


def test_stage_runs_describe_themselves(tmp_path: Path) -> None:
    from axpo_core.runs import Arm
    from tasks.tracking import ablation_name, stage_run_fields

    ctx = _ctx(tmp_path, "fields")
    arm = Arm(stage="SFT+AXPO[no_credit]", algo="axpo", overrides={"prefix_credit": False})
    tags, params, note = stage_run_fields(ctx, arm.stage, arm.algo, arm.config(ctx.config), arm)
    outputs = f"file://{tmp_path}/store/tiny/run1/tiny-s/sft_axpo_no_credit"
    assert tags["algo"] == "axpo" and tags["stage"] == arm.stage and tags["ablation"] == "no_credit"
    assert tags["scale"] == "tiny-s" and tags["seed"] == "0"
    assert (
        tags["rollouts_uri"] == f"{outputs}/rollouts" and tags["checkpoints_uri"] == f"{outputs}/checkpoints"
    )
    assert tags["config_hash"] == config_hash(arm.config(ctx.config)) != config_hash(ctx.config)
    assert tags["git_commit"] == tags["mlflow.source.git.commit"] == source_commit()
    flat = flatten(params)
    assert flat["algorithm.name"] == "axpo" and flat["algorithm.prefix_credit"] is False
    assert flat["ablation.name"] == "no_credit" and flat["ablation.prefix_credit"] is False
    assert flat["training.rounds"] == ctx.config.training.rounds
    assert "no_credit" in note and outputs in note and tags["config_hash"] in note
    base_tags, _, base_note = stage_run_fields(ctx, "Base", "none", ctx.config)
    assert base_tags["ablation"] == "none" and "rollouts_uri" not in base_tags and "evaluated" in base_note
    assert ablation_name("SFT+GRPO") == "none"


def test_arm_artifacts_sample_the_first_and_last_round(tmp_path: Path) -> None:
    from axpo_core.runs import Arm
    from tasks.context import CheckpointRef, RoundRecord
    from tasks.tracking import ROLLOUT_SAMPLE_RECORDS, log_arm_artifacts, tracker

    ctx = _ctx(tmp_path, "arm-artifacts")
    arm = Arm(stage="SFT+AXPO", algo="axpo")
    layout = ctx.layout("tiny-s", arm.slug)
    records = []
    for n in (1, 2, 3):
        ctx.store.put_jsonl(layout.rollouts(n), [{"round": n, "sample_id": i} for i in range(40)])
        ckpt = CheckpointRef(uri=layout.checkpoint(n), stage=arm.stage, scale="tiny-s", round=n)
        records.append(
            RoundRecord(stage=arm.stage, round=n, checkpoint=ckpt, metrics={"tool_use_rate": n / 4})
        )
    t = tracker(ctx)
    run = t.start_run("tiny-s/SFT+AXPO")
    log_arm_artifacts.fn(ctx, run, arm, "tiny-s", records)

    assert sorted(t.list_artifacts(run, "rollouts")) == [
        "rollouts/round-1.sample.jsonl",
        "rollouts/round-3.sample.jsonl",
    ]
    client = MlflowClient(t.tracking_uri)
    local = Path(client.download_artifacts(run, "rollouts/round-3.sample.jsonl", str(tmp_path / "dl")))
    lines = [json.loads(line) for line in local.read_text().splitlines()]
    assert len(lines) == ROLLOUT_SAMPLE_RECORDS and {r["round"] for r in lines} == {3}
    csv_text = Path(
        client.download_artifacts(run, "diagnostics/rounds.csv", str(tmp_path / "dl"))
    ).read_text()
    assert csv_text.splitlines() == ["round,diag/tool_use_rate", "1,0.25", "2,0.5", "3,0.75"]
    frame = load_table(t, run, "diagnostics/rounds.json")
    assert list(frame["diag/tool_use_rate"]) == [0.25, 0.5, 0.75]
    assert t.get_run(run).tags["checkpoint_uri"] == layout.checkpoint(3)


def test_sample_jsonl_is_bounded() -> None:
    from tasks.tracking import sample_jsonl

    text = "".join(json.dumps({"i": i, "text": "z" * 100}) + "\n" for i in range(10))
    assert sample_jsonl(text, records=3).count("\n") == 3
    assert sample_jsonl(text, records=10, max_bytes=250).count("\n") == 2  # ~115 bytes a line
    assert sample_jsonl(text, records=10, max_bytes=1).count("\n") == 1  # never empty
    assert sample_jsonl("") == ""


def test_eval_and_sweep_summaries(tmp_path: Path) -> None:
    from tasks.tracking import log_eval_summary, log_sweep_summary, tracker

    ctx = _ctx(tmp_path, "summaries", "evaluation.k=[1,2]")
    t = tracker(ctx)
    parent = t.start_run("run1")
    stage_runs = {s: t.start_run(f"tiny-s/{s}", parent_run_id=parent) for s in ("SFT+GRPO", "SFT+AXPO")}
    log_eval_summary.fn(ctx, parent, stage_runs, _evals({"SFT+GRPO": (0.25, 0.5), "SFT+AXPO": (0.5, 0.75)}))
    top = t.get_run(parent).metrics
    assert top["summary/avg_pass_at_1/sft_grpo"] == pytest.approx(0.375)
    assert top["summary/avg_pass_at_1/sft_axpo"] == pytest.approx(0.625)
    assert top["summary/avg_pass_at_2/sft_axpo"] == pytest.approx(1.0)
    assert t.get_run(stage_runs["SFT+AXPO"]).metrics["eval/average/pass_at_1"] == pytest.approx(0.625)
    assert sorted(t.list_artifacts(parent, "results")) == [
        "results/results.csv",
        "results/results_table.json",
    ]

    sweep = t.start_run("sweep")
    arms = {  # seed -> per-benchmark Pass@1 of GRPO, of AXPO; AXPO - GRPO on the average: 0.25, 0.125, 0.125
        0: ((0.25, 0.5), (0.5, 0.75)),
        1: ((0.5, 0.5), (0.625, 0.625)),
        2: ((0.25, 0.25), (0.375, 0.375)),
    }
    variants = [(s, _evals({"SFT+GRPO": grpo, "SFT+AXPO": axpo})) for s, (grpo, axpo) in arms.items()]
    log_sweep_summary.fn(ctx, sweep, variants)
    metrics = t.get_run(sweep).metrics
    key = "summary/paired_diff/avg_pass_at_1/tiny-s/sft_axpo-sft_grpo"
    diffs = [0.25, 0.125, 0.125]
    mean = sum(diffs) / 3
    half = 4.302652729911275 * math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    assert metrics[f"{key}/mean"] == pytest.approx(mean)
    assert metrics[f"{key}/ci95_low"] == pytest.approx(mean - half)
    assert metrics[f"{key}/ci95_high"] == pytest.approx(mean + half)
    assert metrics["summary/avg_pass_at_1/tiny-s/sft_grpo"] == pytest.approx((0.375 + 0.5 + 0.25) / 3)
    frame = load_table(t, sweep, "results/paired_differences.json")
    assert list(frame["arm"]) == ["SFT+AXPO", "SFT+AXPO"] and list(frame["seeds"]) == [3, 3]  # k = 1, 2


def test_report_from_s3_storage_into_an_s3_artifact_store(
    tmp_path: Path,
    moto_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Storage and MLflow's artifacts both in S3: the report is read from the store and logged to S3."""
    from tasks.tracking import log_report, tracker

    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "unset-after-the-test")
    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    ctx = _ctx(
        tmp_path,
        "s3-report",
        f"storage.root=s3://{s3_bucket}/runs",
        f"storage.s3_endpoint_url={moto_endpoint}",
        f"tracking.artifact_location=s3://{s3_bucket}/mlflow",
    )
    layout = ctx.layout()
    ctx.store.put_text(layout.report("results.md"), "| stage | pass@1 |\n")
    ctx.store.put_text(layout.report("plots/tool_use_rate.png"), "png")
    t = tracker(ctx)
    run = t.start_run("run1")
    log_report.fn(ctx, run, layout.report())
    assert sorted(t.list_artifacts(run, "report")) == ["report/plots", "report/results.md"]
    listing = s3_client(moto_endpoint).list_objects_v2(Bucket=s3_bucket, Prefix="mlflow/")
    assert sorted(o["Key"] for o in listing["Contents"]) == [
        f"mlflow/{run}/artifacts/report/plots/tool_use_rate.png",
        f"mlflow/{run}/artifacts/report/results.md",
    ]
