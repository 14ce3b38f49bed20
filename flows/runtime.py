"""Prefect settings for running on a laptop/CI box, applied before Prefect is imported, and run contexts."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import queue
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Ephemeral mode: Prefect starts its own server in-process; on 2 cores that takes ~30 s, so allow more.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",  # the client's SDK telemetry (and its first-run notice); this box is offline
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
    # A round loads and saves several checkpoints: their per-file bars would bury the run's own bars.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def _database_per_prefect_version(home: Path) -> None:
    """The ephemeral server's database, one per Prefect version (unless the user set one): Prefect
    migrates its database forward on start and cannot open one a newer release has migrated, so a shared
    `~/.prefect/prefect.db` touched by another Prefect version would stop every run here."""
    import prefect

    if any(
        os.environ.get(k)
        for k in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
    ):
        return
    path = Path(home).expanduser() / f"axpo-prefect-{prefect.__version__}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{path}"


def configure_prefect() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _fill_worker_filter_paging()
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if not settings.api.url:  # this process may start Prefect's ephemeral server
        _database_per_prefect_version(settings.home)
        server_dies_with_this_process()
        _SubprocessDyingWithParent.server_log = Path(settings.home).expanduser() / "axpo-prefect-server.log"


# --- the ephemeral server dies with its parent -------------------------------------------------------------
PR_SET_PDEATHSIG = 1


class _Spawner:
    """One thread, alive for the whole process, that forks the server. The kernel sends a child's
    parent-death signal when the *thread* that forked it ends, so the server must not be forked from a
    task's worker thread that may finish long before the process does."""

    def __init__(self) -> None:
        self._requests: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        with self._guard:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="axpo-server-spawner", daemon=True)
                self._thread.start()
        done: queue.Queue = queue.Queue(maxsize=1)
        self._requests.put((fn, done))
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            fn, done = self._requests.get()
            try:
                done.put((True, fn()))
            except BaseException as exc:  # handed back to the caller's thread
                done.put((False, exc))


_SPAWNER = _Spawner()


def _dies_with_parent_preexec() -> Callable[[], None]:
    """A Popen preexec_fn: SIGKILL this child when its parent goes (even by `kill -9`)."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the child only calls into it
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(1)

    return preexec


class _SubprocessDyingWithParent:
    """The `subprocess` module as Prefect's server module sees it, except that Popen children get a
    parent-death signal, and write to `server_log` instead of the run's terminal: when the run ends,
    the server is stopped with SIGTERM mid-flush, and its services then print CancelledError tracebacks
    that say nothing about the run."""

    server_log: Path | None = None

    def __getattr__(self, name: str) -> Any:
        import subprocess

        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 (the name Prefect calls)
        import subprocess

        if kwargs.get("preexec_fn") is None:
            kwargs["preexec_fn"] = _dies_with_parent_preexec()
        log = _SubprocessDyingWithParent.server_log
        if log is None or "stdout" in kwargs or "stderr" in kwargs:
            return subprocess.Popen(*args, **kwargs)
        with open(log, "ab") as out:  # the child keeps its own descriptor
            return subprocess.Popen(*args, stdout=out, stderr=subprocess.STDOUT, **kwargs)


def server_dies_with_this_process() -> None:
    """Make Prefect's ephemeral server (a uvicorn subprocess) die with this process, on Linux.

    Prefect stops it from an atexit hook, which a `kill -9` never runs; the orphan then keeps its port
    and its sqlite database. With PR_SET_PDEATHSIG the kernel kills it when this process dies.
    """
    if not sys.platform.startswith("linux"):
        return
    from prefect.server.api import server as server_module

    cls = server_module.SubprocessASGIServer
    if getattr(cls._run_uvicorn_command, "_axpo_dies_with_parent", False):
        return
    original = cls._run_uvicorn_command

    def run_uvicorn_command(self: Any, _original: Callable[[Any], Any] = original) -> Any:
        return _SPAWNER.call(lambda: _original(self))

    run_uvicorn_command._axpo_dies_with_parent = True  # type: ignore[attr-defined]
    server_module.subprocess = _SubprocessDyingWithParent()  # only its Popen goes through the shim
    cls._run_uvicorn_command = run_uvicorn_command


@contextmanager
def in_process_run() -> Iterator[None]:
    """Settings for flows this process runs itself (`axpo run`, benches), not a worker's deployment runs.

    With no API URL (Prefect's ephemeral server, which lives and dies with this process) flow-run
    heartbeats are off: they exist so a server can mark a dead worker's runs as crashed, which cannot
    happen here, and Prefect's heartbeat thread sleeps in 1 s steps that every flow run's exit waits
    for (about 0.5 s per RL round, ~6% of a tiny round). Runs against a real server keep them.
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextmanager
def ray_session(task_runner: str) -> Iterator[None]:
    """With pipeline.task_runner=ray, one Ray session for the whole run: every flow's RayTaskRunner uses an
    initialised one instead of starting (and stopping) its own per round. `ray.init()` joins the cluster
    RAY_ADDRESS names, or starts a local one."""
    if task_runner != "ray":
        yield
        return
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init()
    try:
        yield
    finally:
        ray.shutdown()


def _fill_worker_filter_paging() -> None:
    """Prefect's client posts `"limit": null` when listing a pool's workers (as `deploy` does), which the
    3.8.8 server rejected (422) under FastAPI 0.154; 3.9.1's server (the pinned one) accepts it. Sending the
    server's defaults costs nothing and keeps `axpo deploy` working against an older server."""
    from prefect.client.orchestration._work_pools.client import WorkPoolAsyncClient, WorkPoolClient

    for cls in (WorkPoolClient, WorkPoolAsyncClient):
        original = cls.read_workers_for_work_pool
        if getattr(original, "_axpo_paging", False):
            continue

        def patched(self, work_pool_name, worker_filter=None, offset=None, limit=None, _original=original):
            return _original(
                self,
                work_pool_name,
                worker_filter,
                0 if offset is None else offset,
                200 if limit is None else limit,
            )

        patched._axpo_paging = True
        cls.read_workers_for_work_pool = patched


def default_run_name(config) -> str:
    """Same config, same run: a rerun resumes (cached tasks are skipped) instead of starting over."""
    digest = hashlib.sha1(config.model_dump_json().encode()).hexdigest()[:8]
    return f"{config.experiment}-{digest}"


def make_context(config, run_name: str | None = None):
    """The run's context, with the run folder's storage id (written on first use)."""
    ctx = _context(config, run_name)
    return ctx.model_copy(update={"storage_id": storage_id(ctx)})


@contextmanager
def locked_context(config, run_name: str | None = None):
    """`make_context` while holding the run folder's lock (see flows.runlock): a second process on the
    same run name is refused with RunLocked, naming the holder, before it writes anything."""
    from flows.runlock import run_lock

    ctx = _context(config, run_name)
    with run_lock(ctx.store, ctx.layout().base):
        yield ctx.model_copy(update={"storage_id": storage_id(ctx)})


def _context(config, run_name: str | None):
    from axpo_core.storage import local_path
    from axpo_core.tracking import default_tracking_uri
    from tasks.context import RunContext

    root = config.storage.root
    output_dir = local_path(root) if not root.startswith("s3://") else Path("runs").absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = config.tracking.tracking_uri or default_tracking_uri(output_dir)
    return RunContext(
        config=config,
        run_name=run_name or default_run_name(config),
        output_dir=str(output_dir),
        tracking_uri=tracking_uri,
    )


def storage_id(ctx) -> str:
    """The id in the run folder's `_RUN_ID` marker, written on first use: the same folder resumes, a
    deleted (or new) one starts over even when Prefect still holds cached results for the run's name.
    The marker is created atomically (`create_if_absent`), so two starts racing on a new folder both take
    the one id that was written (a check, then a write, gave them one each)."""
    store = ctx.store
    marker = ctx.layout().base + "/_RUN_ID"
    run_id = uuid.uuid4().hex
    if store.create_if_absent(marker, json.dumps({"id": run_id, "run_name": ctx.run_name}).encode()):
        return run_id
    return store.get_json(marker)["id"]
