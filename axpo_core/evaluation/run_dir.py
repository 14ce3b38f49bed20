"""Read a finished (or partial) run folder back: evaluation records, per-round diagnostics and rollouts.

The report works from what the pipeline left in storage, so it can be rebuilt at any time, for any run,
without Prefect or MLflow. The layout read is axpo_core/runs.py's (its stage slugs and round-file names).

A scale folder is any folder (up to three levels down, so a sweep's `<run>/<scale>-seedS/<scale>` is found
too) with a sub-folder holding `eval/`, `metrics/` or `rollouts/`; its label is its path under the run.
Missing or partial pieces are skipped, never fatal: a report of a half-finished run is still useful.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axpo_core.rollout.serialization import trajectories_from_bytes
from axpo_core.rollout.trajectory import Trajectory
from axpo_core.runs import ROUND_METRICS, ROUND_ROLLOUTS, algorithm_of, stage_from_slug
from axpo_core.storage import local_path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; a truncated last line (a run killed mid-write) is dropped."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


@dataclass
class RoundRollouts:
    """One RL round's rollouts: records always, trajectories (tokens + images) when the pickle exists."""

    round: int
    records: list[dict[str, Any]]
    resampled: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    trajectories: dict[tuple[str, int], Trajectory]  # (question_id, sample_id) -> originals and resamples


@dataclass
class ArmFolder:
    """What one RL arm of one scale (SFT+GRPO, SFT+AXPO, GRPO, an ablation) left in its folder: its rounds'
    metrics and rollouts. (The arm to train is `axpo_core.runs.Arm`.)"""

    stage: str
    path: Path
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)  # round -> diagnostics

    @property
    def algo(self) -> str:
        """The algorithm the arm trained, from its label (runs.RL_ARMS); "" for a label no pipeline makes."""
        return algorithm_of(self.stage) or ""

    def rollout_rounds(self) -> list[int]:
        folder = self.path / "rollouts"
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := ROUND_ROLLOUTS.match(p.name)))

    def rollouts(self, round_index: int, with_trajectories: bool = True) -> RoundRollouts:
        """Read one round (the pickles only when asked: they hold every token and image)."""
        folder = self.path / "rollouts"
        base = folder / f"round-{round_index}"
        records = read_jsonl(Path(f"{base}.jsonl"))
        resampled_path = Path(f"{base}.resampled.jsonl")
        resampled = read_jsonl(resampled_path) if resampled_path.exists() else []
        requests_path = Path(f"{base}.requests.json")
        requests = json.loads(requests_path.read_text()) if requests_path.exists() else []
        trajectories: dict[tuple[str, int], Trajectory] = {}
        if with_trajectories:
            for name in (f"{base}.jsonl.pkl", f"{base}.pkl", f"{base}.resampled.pkl"):
                path = Path(name)
                if path.exists():
                    try:
                        for t in trajectories_from_bytes(path.read_bytes()):
                            trajectories[(t.question_id, t.sample_id)] = t
                    except Exception:  # an unreadable pickle only costs the viewer its images
                        continue
        return RoundRollouts(round_index, records, resampled, requests, trajectories)


@dataclass
class Scale:
    """One scale of the run: evaluation records per stage and benchmark, and the RL arms."""

    name: str
    path: Path
    evals: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)  # stage -> bench -> rows
    arms: dict[str, ArmFolder] = field(default_factory=dict)  # stage -> arm


@dataclass
class RunData:
    path: Path
    scales: list[Scale]

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def _is_stage_folder(path: Path) -> bool:
    return path.is_dir() and any((path / sub).is_dir() for sub in ("eval", "metrics", "rollouts"))


def _scale_folders(root: Path, depth: int = 3) -> list[Path]:
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "report"):
        if any(_is_stage_folder(sub) for sub in child.iterdir()):
            found.append(child)
        elif depth > 1:
            found.extend(_scale_folders(child, depth - 1))
    return found


def _read_metrics(folder: Path) -> dict[int, dict[str, float]]:
    metrics = {}
    if folder.is_dir():
        for path in folder.iterdir():
            if m := ROUND_METRICS.match(path.name):
                try:
                    values = json.loads(path.read_text())
                except json.JSONDecodeError:
                    continue
                metrics[int(m.group(1))] = {k: float(v) for k, v in values.items() if _is_number(v)}
    return dict(sorted(metrics.items()))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def run_folder(run_dir: str | os.PathLike[str]) -> Path:
    """The run folder from a path or `file://` URI; the pipeline's printed `…/report` URI also works."""
    path = local_path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run folder {path} does not exist")
    if path.name == "report" and (path / "results.md").exists() and not _scale_folders(path):
        return path.parent
    return path


def read_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Everything the report needs except the rollouts themselves (read per round, on demand)."""
    run_dir = run_folder(run_dir)
    scales = []
    for folder in _scale_folders(run_dir):
        scale = Scale(name=folder.relative_to(run_dir).as_posix(), path=folder)
        for stage_dir in sorted(p for p in folder.iterdir() if _is_stage_folder(p)):
            stage = stage_from_slug(stage_dir.name)
            eval_dir = stage_dir / "eval"
            if eval_dir.is_dir():
                benches = {p.stem: read_jsonl(p) for p in sorted(eval_dir.glob("*.jsonl"))}
                benches = {b: rows for b, rows in benches.items() if rows}
                if benches:
                    scale.evals[stage] = benches
            if (stage_dir / "metrics").is_dir() or (stage_dir / "rollouts").is_dir():
                scale.arms[stage] = ArmFolder(stage, stage_dir, _read_metrics(stage_dir / "metrics"))
        scales.append(scale)
    return RunData(run_dir, scales)


def report_ks(run_dir: Path) -> list[int] | None:
    """The k values the pipeline's own results table used (`report/results.csv` header), if it exists."""
    path = Path(run_dir) / "report" / "results.csv"
    if not path.exists():
        return None
    header = path.read_text().splitlines()[:1]
    ks = sorted({int(k) for k in re.findall(r"pass@(\d+)", header[0])}) if header else []
    return ks or None
