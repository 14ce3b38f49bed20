"""Publishing a flow's results as a Prefect table artifact (from a task: with this Prefect version, a table
artifact created in flow-run context is dropped by the server, one created in a task run is kept)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text)[:100]


@task(name="publish_table", retries=2, retry_delay_seconds=1)
def publish_table(table: list[dict], key: str, description: str) -> None:
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in table]
    create_table_artifact(table=rows, key=key, description=description)
