"""The MLflow adapter on a real sqlite backend (and moto S3 for artifacts), read back with MlflowClient."""

from __future__ import annotations

import logging
import math
import pickle
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from moto_fixtures import moto_endpoint, s3_bucket, s3_client  # noqa: F401
from pydantic import BaseModel

from axpo_core.tracking import Tracker, clean_key, default_tracking_uri, flatten


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
