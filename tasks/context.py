"""What every task gets: the run's config and where its artifacts and tracking live; small records back.

Tasks move references: checkpoints, rollouts and evaluation outputs are URIs in object storage; tensors
and models never cross a task boundary. A model is loaded from its URI inside the task (once per process:
the cache below) and saved back under a new URI.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from axpo_core.config import Config
from axpo_core.models.loader import Policy, load_policy
from axpo_core.runs import RunLayout
from axpo_core.storage import ObjectStore, local_path, open_configured_store


class RunContext(BaseModel):
    """One pipeline run: its config, its name and where its outputs go (small and hashable for caching)."""

    model_config = ConfigDict(frozen=True)

    config: Config
    run_name: str
    output_dir: str  # local folder: MLflow's sqlite store, downloaded checkpoints
    tracking_uri: str
    # Names this run's storage (a marker written on first use). Part of every task's cache key: results
    # Prefect cached for a run folder that was since deleted are never reused (they point at missing files).
    storage_id: str = ""

    @property
    def store(self) -> ObjectStore:
        return open_configured_store(self.config.storage)  # root, endpoint, timeouts and retries

    def layout(self, *parts: str) -> RunLayout:
        """URIs under `<experiment>/<run>/<parts…>` (e.g. the scale and the algorithm)."""
        return RunLayout(self.store, self.config.experiment, "/".join([self.run_name, *parts]))


class CheckpointRef(BaseModel):
    uri: str
    version: str = ""  # store.folder_version: a rewritten checkpoint is a new input downstream
    stage: str  # the stage that wrote it: Base, SFT or an arm's label (axpo_core/runs.py)
    scale: str
    round: int = 0


class RolloutRef(BaseModel):
    uri: str  # trajectories (tokens + images) for the next steps
    records_uri: str  # rollouts/round-N.jsonl, one JSON line per rollout
    version: str = ""  # content_version of the trajectories
    question_ids: list[str]
    rollouts: int
    tool_use_rate: float
    reward_mean: float
    seconds: float = 0.0  # wall time of the rollout (the sweep's cost table)


class DetectRef(BaseModel):
    uri: str | None  # the continuation requests (JSON); None when nothing is resampled
    version: str = ""
    triggered: list[str]
    requests: int


class ResampleRef(BaseModel):
    uri: str | None
    version: str = ""
    continuations: int
    seconds: float = 0.0


class RoundRecord(BaseModel):
    stage: str
    round: int
    checkpoint: CheckpointRef
    metrics: dict[str, float]


_policies: dict[str, Policy] = {}
_lock = threading.Lock()


def checkpoint_folder(ctx: RunContext, uri: str) -> Path:
    """A local folder holding the checkpoint at `uri` (the folder itself for file://, a download for S3)."""
    store = ctx.store
    if not store.is_complete(uri):
        raise FileNotFoundError(f"checkpoint {uri} is missing or incomplete (no completion marker)")
    if uri.startswith("s3://"):
        cache = Path(ctx.output_dir) / "checkpoint-cache" / hashlib.sha1(uri.encode()).hexdigest()[:16]
        return store.get_dir(uri, cache)
    return local_path(uri)


def load_checkpoint(ctx: RunContext, uri: str) -> Policy:
    """Load (or reuse, within this process) the policy stored at `uri`; callers must not mutate it."""
    with _lock:
        if uri not in _policies:
            model = ctx.config.model
            _policies[uri] = load_policy(
                checkpoint_folder(ctx, uri),
                device=model.device,
                dtype=model.dtype,
                max_image_pixels=model.max_image_pixels,
                min_image_pixels=model.min_image_pixels,
            )
        return _policies[uri]


def load_trainable(ctx: RunContext, uri: str) -> Policy:
    """A fresh copy to train (never the cached one, which other tasks may be generating with)."""
    model = ctx.config.model
    return load_policy(
        checkpoint_folder(ctx, uri),
        device=model.device,
        dtype=model.dtype,
        max_image_pixels=model.max_image_pixels,
        min_image_pixels=model.min_image_pixels,
    )
