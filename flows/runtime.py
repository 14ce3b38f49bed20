"""Prefect settings for running on a laptop/CI box, applied before Prefect is imported, and run contexts."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def configure_prefect() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _fill_worker_filter_paging()


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


def _fill_worker_filter_paging() -> None:
    """Prefect 3.8.8's client posts `"limit": null` when listing a pool's workers (as `deploy` does), which
    its own server rejects (422) with this FastAPI/pydantic. Send the server's defaults instead."""
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
    from axpo_core.storage import local_path
    from axpo_core.tracking import default_tracking_uri
    from tasks.context import RunContext

    root = config.storage.root
    output_dir = local_path(root) if not root.startswith("s3://") else Path("runs").absolute()
    output_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = config.tracking.tracking_uri or default_tracking_uri(output_dir)
    ctx = RunContext(
        config=config,
        run_name=run_name or default_run_name(config),
        output_dir=str(output_dir),
        tracking_uri=tracking_uri,
    )
    return ctx.model_copy(update={"storage_id": storage_id(ctx)})


def storage_id(ctx) -> str:
    """The id in the run folder's `_RUN_ID` marker, written on first use: the same folder resumes, a
    deleted (or new) one starts over even when Prefect still holds cached results for the run's name."""
    store = ctx.store
    marker = ctx.layout().base + "/_RUN_ID"
    if store.exists(marker):
        return store.get_json(marker)["id"]
    run_id = uuid.uuid4().hex
    store.put_json(marker, {"id": run_id, "run_name": ctx.run_name})
    return run_id
