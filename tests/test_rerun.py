"""Reruns: the code digest in task cache keys, the run-folder lock (two real processes, local and S3), metric
logging that a rerun does not duplicate (real sqlite MLflow store), and Prefect's ephemeral server dying
with a SIGKILLed `axpo run`.

The flow-level cases (a code edit recomputes, an unchanged rerun resumes, a locked run is refused, a
rerun logs no metric twice) are in test_flows.py, which shares one Prefect test server.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from moto_fixtures import moto_endpoint, s3_bucket, s3_client  # noqa: F401
from test_flows import SMALL

REPO = Path(__file__).resolve().parent.parent

HOLD_LOCK = """
import sys, time
from axpo_core.storage import open_store
from flows.runlock import RunLock
store = open_store(sys.argv[1], s3_endpoint_url=sys.argv[3] or None)
RunLock(store, sys.argv[2]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(params=["local", "s3"])
def store_root(request, tmp_path) -> tuple[str, str | None]:
    """(root URI, S3 endpoint or None): every lock test runs on a local folder and on moto's S3."""
    if request.param == "local":
        return f"file://{tmp_path}/store", None
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/runs", endpoint


def _open(store_root):
    from axpo_core.storage import open_store

    root, endpoint = store_root
    return open_store(root, s3_endpoint_url=endpoint)


def _hold_in_subprocess(store_root, base: str) -> subprocess.Popen:
    root, endpoint = store_root
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, root, base, endpoint or ""],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        raise AssertionError(f"the lock holder did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


# --- the run-folder lock ------------------------------------------------------------------------------
def test_a_second_process_is_refused_naming_the_holder_and_takes_over_once_it_is_killed(store_root):
    from flows.runlock import RunLock, RunLocked

    store = _open(store_root)
    base = store.uri("tiny", "run-a")
    holder = _hold_in_subprocess(store_root, base)
    try:
        with pytest.raises(RunLocked) as refused:
            RunLock(store, base).acquire()
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}, started 20" in message
        assert base + "/_LOCK" in message
        assert refused.value.holder["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    lock = RunLock(store, base)  # the holder is dead: its lock is taken over
    mine = lock.acquire()
    assert mine["pid"] == os.getpid()
    if store_root[1] is not None:  # the lock object now names this process
        assert store.get_json(base + "/_LOCK")["token"] == mine["token"]
    lock.release()


def test_lock_is_refused_in_process_too_and_free_after_release(store_root):
    from flows.runlock import RunLock, RunLocked, run_lock

    store = _open(store_root)
    base = store.uri("tiny", "run-b")
    with run_lock(store, base) as holder:
        with pytest.raises(RunLocked, match=f"pid {holder['pid']} "):
            RunLock(store, base).acquire()
    with run_lock(store, base):  # released: free again
        pass
    other = store.uri("tiny", "run-c")
    with run_lock(store, base), run_lock(store, other):  # another run name is another lock
        pass


def test_s3_lock_of_a_reused_pid_is_taken_over_and_another_hosts_lock_is_not(
    moto_endpoint,  # noqa: F811
    s3_bucket,  # noqa: F811
):
    from axpo_core.storage import open_store
    from flows.runlock import RunLock, RunLocked

    store = open_store(f"s3://{s3_bucket}/runs", s3_endpoint_url=moto_endpoint)
    base = store.uri("tiny", "run-d")
    client = s3_client(moto_endpoint)
    key = "runs/tiny/run-d/_LOCK"

    # This process's pid, but another process start time: the pid was reused, the holder is gone.
    stale = {"pid": os.getpid(), "host": socket.gethostname(), "started": "x", "process_start": -1}
    client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(stale).encode())
    lock = RunLock(store, base)
    lock.acquire()
    lock.release()
    assert not store.exists(base + "/_LOCK")

    remote = {"pid": 1, "host": "another-host.example", "started": "2026-12-01T00:00:00+00:00"}
    client.put_object(Bucket=s3_bucket, Key=key, Body=json.dumps(remote).encode())
    with pytest.raises(RunLocked, match="pid 1 on host another-host.example.*on another host: delete"):
        RunLock(store, base).acquire()


def test_s3_of_two_takers_of_a_stale_lock_one_wins(moto_endpoint, s3_bucket):  # noqa: F811
    """Both saw the dead holder's lock; the first takes it over, the second's put (conditional on the stale
    object's ETag) fails, and it is refused naming the first."""
    from axpo_core.storage import open_store
    from flows.runlock import RunLock, RunLocked

    store = open_store(f"s3://{s3_bucket}/runs", s3_endpoint_url=moto_endpoint)
    base = store.uri("tiny", "run-f")
    client = s3_client(moto_endpoint)
    dead = {"pid": os.getpid(), "host": socket.gethostname(), "started": "x", "process_start": -1}
    client.put_object(Bucket=s3_bucket, Key="runs/tiny/run-f/_LOCK", Body=json.dumps(dead).encode())

    slow_taker = RunLock(store, base)
    stale_view = slow_taker._read_s3()  # what the second taker read before the first one acted
    first = RunLock(store, base)
    first_holder = first.acquire()

    views = iter([stale_view])
    real_read = slow_taker._read_s3
    slow_taker._read_s3 = lambda: next(views, None) or real_read()
    with pytest.raises(RunLocked) as refused:
        slow_taker.acquire()
    assert refused.value.holder["token"] == first_holder["token"]
    assert store.get_json(base + "/_LOCK")["token"] == first_holder["token"]
    first.release()


def test_s3_release_keeps_a_lock_that_another_process_took_over(moto_endpoint, s3_bucket):  # noqa: F811
    from axpo_core.storage import open_store
    from flows.runlock import RunLock

    store = open_store(f"s3://{s3_bucket}/runs", s3_endpoint_url=moto_endpoint)
    base = store.uri("tiny", "run-e")
    lock = RunLock(store, base)
    lock.acquire()
    taker = {"pid": 2, "host": "another-host.example", "started": "later"}
    s3_client(moto_endpoint).put_object(
        Bucket=s3_bucket, Key="runs/tiny/run-e/_LOCK", Body=json.dumps(taker).encode()
    )
    lock.release()  # conditional on its own ETag: the taker's lock stays
    assert store.get_json(base + "/_LOCK") == taker


# --- the code digest ----------------------------------------------------------------------------------
def test_source_digest_changes_with_an_edit_and_ignores_bytecode_caches(tmp_path):
    from tasks.persistence import source_digest

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "grpo.py").write_text("def f():\n    return 1\n")
    first = source_digest([pkg])
    assert source_digest([pkg]) == first

    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "grpo.cpython-311.pyc").write_bytes(b"\x00compiled")
    assert source_digest([pkg]) == first

    (pkg / "sub" / "grpo.py").write_text("def f():\n    return 2\n")
    edited = source_digest([pkg])
    assert edited != first
    (pkg / "sub" / "grpo.py").rename(pkg / "sub" / "axpo.py")  # same bytes, another module
    assert source_digest([pkg]) not in (first, edited)


def test_code_digest_is_part_of_every_task_key_and_computed_once_per_process():
    from tasks.persistence import CODE, RESUMABLE, code_digest

    assert CODE in RESUMABLE["cache_policy"].policies
    digest = code_digest()
    before = code_digest.cache_info()
    assert CODE.compute_key(None, {}, {}) == digest
    after = code_digest.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)  # served, not recomputed


# --- metrics are logged once per (run, key, step) ----------------------------------------------------
def test_logging_the_same_metrics_again_adds_no_history_entries(tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    from axpo_core.tracking import Tracker

    tracker = Tracker(None, tmp_path, "tiny")
    run = tracker.start_run("tiny-s/SFT")
    evals = {"eval/zoom_detail/pass@1": 0.5, "eval/zoom_detail/pass@2": 0.75}
    for _ in range(3):  # the first run and two reruns
        tracker.log_metrics(run, evals)
        tracker.log_metrics(run, {"update/loss": -1.0}, step=1)
        tracker.log_metrics(run, {"update/loss": -2.0}, step=2)
    client = MlflowClient(tracker.tracking_uri)
    assert len(client.get_metric_history(run, "eval/zoom_detail/pass_at_1")) == 1
    assert len(client.get_metric_history(run, "eval/zoom_detail/pass_at_2")) == 1
    assert [(m.step, m.value) for m in client.get_metric_history(run, "update/loss")] == [
        (1, -1.0),
        (2, -2.0),
    ]

    # A recomputed (changed) result is logged, with a warning, and is then the run's value.
    with caplog.at_level(logging.WARNING, logger="axpo_core.tracking"):
        tracker.log_metrics(run, {"eval/zoom_detail/pass@1": 0.25})
    assert "changes from [0.5] to 0.25" in caplog.text
    assert len(client.get_metric_history(run, "eval/zoom_detail/pass_at_1")) == 2
    assert tracker.get_run(run).metrics["eval/zoom_detail/pass_at_1"] == 0.25


# --- kill -9 of `axpo run` leaves no Prefect server behind ----------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its reaping is left


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


SPAWN_FROM_A_FINISHED_THREAD = """
import threading, time
from flows.runtime import _SPAWNER, _SubprocessDyingWithParent

children = []
worker = threading.Thread(
    target=lambda: children.append(_SPAWNER.call(lambda: _SubprocessDyingWithParent.Popen(["sleep", "600"])))
)
worker.start()
worker.join()  # the thread that asked for the child is gone: the child must live on
time.sleep(0.5)
print(children[0].pid, children[0].poll(), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_outlives_the_thread_that_asked_for_it_but_not_its_killed_process():
    """What the ephemeral server gets: forked from one long-lived thread with a parent-death signal."""
    parent = subprocess.Popen(
        [sys.executable, "-c", SPAWN_FROM_A_FINISHED_THREAD], env=_env(), stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        pid, status = parent.stdout.readline().split()
        child = int(pid)
        assert status == "None" and _alive(child)  # still running after its requesting thread ended
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        for _ in range(400):  # a poll count, not a time limit
            if not _alive(child):
                break
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_ephemeral_servers_output_goes_to_its_log_not_the_runs_terminal(tmp_path, monkeypatch):
    """Its shutdown tracebacks (services cancelled mid-flush by SIGTERM) would end every run's output."""
    from flows.runtime import _SubprocessDyingWithParent

    log = tmp_path / "server.log"
    monkeypatch.setattr(_SubprocessDyingWithParent, "server_log", log)
    child = _SubprocessDyingWithParent.Popen(["sh", "-c", "echo out; echo err >&2"])
    assert child.wait() == 0 and log.read_text().split() == ["out", "err"]
    given = _SubprocessDyingWithParent.Popen(["sh", "-c", "echo mine"], stdout=subprocess.PIPE)
    assert given.communicate()[0] == b"mine\n"  # a caller's own pipes are kept
    assert log.read_text().split() == ["out", "err"]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_kill_9_of_axpo_run_leaves_no_prefect_server_behind(tmp_path):
    env = _env()
    env.pop("PREFECT_API_URL", None)  # the ephemeral server, as on a laptop
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--set",
            f"storage.root=file://{tmp_path}/store",
            "--set",
            "pipeline.stages=[Base]",
            "--run-name",
            "orphan",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = None
    try:
        for _ in range(1200):  # until the server answers (imports and startup take ~30-60 s on 2 cores)
            if run.poll() is not None:
                raise AssertionError(f"axpo run ended early: {run.stderr.read()[-3000:]}")
            uvicorn = [c for c in _children(run.pid) if "uvicorn" in _cmdline(c)]
            if uvicorn:
                server = uvicorn[0]
                args = _cmdline(server)
                port = args[args.index("--port") + 1]
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
            time.sleep(0.25)
        else:
            raise AssertionError("Prefect's ephemeral server never answered")

        run.send_signal(signal.SIGKILL)
        run.wait()
        for _ in range(400):  # the kernel's parent-death signal: a poll count, not a time limit
            if not _alive(server):
                break
            time.sleep(0.05)
        assert not _alive(server), f"the ephemeral server {server} outlived its killed parent"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if server is not None and _alive(server):
            os.kill(server, signal.SIGKILL)


SWEEP_SMALL = [  # two seeds of a tiny sweep: seed 0 finishes well before seed 1 does
    *SMALL,
    "training.rounds=1",
    "evaluation.benchmarks=[control_shapes]",
    "pipeline.stages=[SFT,SFT+GRPO]",
]


def _sweep(tmp_path: Path, **popen: object) -> subprocess.Popen:
    env = _env()
    env.pop("PREFECT_API_URL", None)  # the ephemeral server and its database, as on a laptop
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    overrides = [a for o in [*SWEEP_SMALL, f"storage.root=file://{tmp_path}/store"] for a in ("--set", o)]
    command = [sys.executable, "-m", "flows.cli", "sweep", "--seeds", "0,1", "--run-name", "sw", *overrides]
    return subprocess.Popen(command, cwd=REPO, env=env, **popen)


@pytest.mark.slow
def test_a_sweep_killed_mid_way_resumes_without_redoing_finished_work(tmp_path):
    """`kill -9` of `axpo sweep` once seed 1 has begun; the same command again finishes the sweep and
    leaves seed 0's checkpoints and RL artifacts as they were (each version is the hash of its marker)."""
    from axpo_core.storage import open_store

    run = tmp_path / "store" / "tiny" / "sw"
    seed0, seed1 = run / "tiny-s-seed0" / "tiny-s", run / "tiny-s-seed1" / "tiny-s"
    first = _sweep(tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(4800):  # a poll count, not a time limit: until seed 1's SFT checkpoint is written
            if first.poll() is not None:
                raise AssertionError(f"the sweep ended before it was killed: {first.stderr.read()[-3000:]}")
            if (seed1 / "checkpoints" / "sft" / "_COMPLETE").is_file():
                break
            time.sleep(0.25)
        else:
            raise AssertionError("seed 1's SFT checkpoint never appeared")
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert not (run / "report" / "seed_means.csv").exists()  # killed before the sweep's report
    store = open_store(f"file://{tmp_path}/store")
    done = {
        name: store.folder_version(f"file://{seed0}/{name}")
        for name in ("checkpoints/sft", "sft_grpo/checkpoints/round-1")
    }
    rollouts = (seed0 / "sft_grpo" / "rollouts" / "round-1.jsonl").read_bytes()

    again = _sweep(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = again.communicate()[0]
    assert again.returncode == 0, output[-3000:]
    assert {n: store.folder_version(f"file://{seed0}/{n}") for n in done} == done
    assert (seed0 / "sft_grpo" / "rollouts" / "round-1.jsonl").read_bytes() == rollouts
    assert (seed1 / "sft_grpo" / "checkpoints" / "round-1" / "_COMPLETE").is_file()
    assert (run / "report" / "seed_means.csv").is_file()


def test_a_tasks_code_digest_covers_its_import_closure_only():
    """tasks.rl reaches grpo.py (through training.steps) but not the report; tasks.evaluation reaches both."""
    import inspect

    import tasks.evaluation
    import tasks.rl
    from tasks.persistence import task_code_files

    def names(module):
        files = task_code_files(inspect.getsourcefile(module), module.__name__)
        return {f"{p.parent.name}/{p.name}" for p in files}

    rl, evaluation = names(tasks.rl), names(tasks.evaluation)
    assert {"algorithms/grpo.py", "algorithms/axpo.py", "training/update.py", "tasks/rl.py"} <= rl
    assert "evaluation/report.py" not in rl and "evaluation/plots.py" not in rl
    assert {"evaluation/report.py", "evaluation/plots.py", "evaluation/viewer.py"} <= evaluation


def test_a_rewritten_folder_is_a_new_version(tmp_path):
    """What a CheckpointRef names: the same bytes rewritten under the same URI are a new input downstream."""
    from axpo_core.storage import content_version, open_store

    store = open_store(f"file://{tmp_path}/store")
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights")
    uri = store.put_dir(src, store.uri("exp", "ckpt"))
    first = store.folder_version(uri)
    assert store.folder_version(uri) == first  # stable while nothing is written
    store.put_dir(src, uri)
    assert store.folder_version(uri) != first
    assert content_version(b"a") == content_version(b"a") != content_version(b"b")


def test_the_ephemeral_server_keeps_one_database_per_prefect_version(tmp_path):
    """A ~/.prefect/prefect.db that another Prefect release migrated cannot be opened by this one: the
    project's runs use a database named by the Prefect version, unless the user chose one."""
    import prefect

    probe = (
        "import os; from flows.runtime import configure_prefect; configure_prefect(); "
        "print(os.environ['PREFECT_SERVER_DATABASE_CONNECTION_URL'])"
    )
    env = {
        k: v for k, v in os.environ.items() if "DATABASE_CONNECTION_URL" not in k and k != "PREFECT_API_URL"
    }
    env["PREFECT_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    expected = tmp_path / "home" / f"axpo-prefect-{prefect.__version__}.db"
    assert out.stdout.strip() == f"sqlite+aiosqlite:///{expected}"
    mine = "sqlite+aiosqlite:////somewhere/else.db"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PREFECT_SERVER_DATABASE_CONNECTION_URL": mine},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == mine
