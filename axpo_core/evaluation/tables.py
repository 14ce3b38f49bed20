"""The results table in the paper's shape (rows (scale, stage), columns benchmarks + average, Pass@k) and
its Markdown/CSV forms: small and import-light, so that tasks that only log tables (tasks/tracking.py) do
not reach the report builder's plots and viewer (their code digest would change with every report edit)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from axpo_core.runs import stage_key


@dataclass(frozen=True)
class EvalRow:
    scale: str
    stage: str
    benchmark: str
    metrics: dict[str, float]


Table = list[dict[str, str | float]]  # one dict per row, column -> value (percentages as floats)


def results_table(rows: Sequence[EvalRow], ks: Sequence[int]) -> list[dict[str, str | float]]:
    """One dict per (scale, stage): `<benchmark> pass@k` columns and `average pass@k` (over benchmarks)."""
    benchmarks = sorted({r.benchmark for r in rows})
    cells = {(r.scale, r.stage, r.benchmark): r.metrics for r in rows}
    table = []
    for scale, stage in sorted({(r.scale, r.stage) for r in rows}, key=lambda s: (s[0], stage_key(s[1]))):
        row: dict[str, str | float] = {"scale": scale, "stage": stage}
        for k in ks:
            values = []
            for benchmark in benchmarks:
                value = cells.get((scale, stage, benchmark), {}).get(f"pass@{k}")
                row[f"{benchmark} pass@{k}"] = float("nan") if value is None else 100.0 * value
                if value is not None:
                    values.append(100.0 * value)
            row[f"average pass@{k}"] = sum(values) / len(values) if values else float("nan")
        table.append(row)
    return table


def to_markdown(table: Sequence[dict[str, str | float]]) -> str:
    if not table:
        return "(no results)\n"
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in table:
        lines.append(
            "| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()) + " |"
        )
    return "\n".join(lines) + "\n"


def to_csv(table: Sequence[dict[str, str | float]]) -> str:
    buffer = io.StringIO()
    if table:
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return buffer.getvalue()
