"""Prefect settings for running on a laptop/CI box, applied before Prefect is imported, and run contexts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# Ephemeral mode: Prefect starts its own server in-process; on 2 cores that takes ~30 s, so allow more.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "240",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
}


def configure_prefect() -> None:
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    _fill_worker_filter_paging()


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
    return RunContext(
        config=config,
        run_name=run_name or default_run_name(config),
        output_dir=str(output_dir),
        tracking_uri=tracking_uri,
    )
