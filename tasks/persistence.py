"""Task options shared by every task: persisted results keyed on inputs + task source (a rerun resumes from
the last finished task), and retries for the storage/tracking I/O they do."""

from __future__ import annotations

from prefect.cache_policies import INPUTS, TASK_SOURCE

RESUMABLE = dict(cache_policy=INPUTS + TASK_SOURCE, persist_result=True, retries=2, retry_delay_seconds=1)
