"""The one narrow MLflow adapter of the project (no other module imports mlflow).

Every call names its run id: Prefect runs tasks in worker threads, where MLflow's global active-run context
(`mlflow.start_run`) does not follow, so this module never touches it and only uses `MlflowClient`.

Threads: every client call for one tracking URI goes through a process-wide lock, so several Prefect task
threads (or several `Tracker` objects on one sqlite file) never write concurrently, which sqlite would
answer with "database is locked". A writer in another process can still hold the file briefly; such calls
are retried a few times.

Defaults: the backend is `sqlite:///<output dir>/mlflow.db`, and a local backend keeps artifacts in
`<output dir>/mlartifacts` (MLflow's own default would be `./mlruns` in whatever the working directory is).
Pass `artifact_location="s3://bucket/mlflow"` (and `s3_endpoint_url`, or `MLFLOW_S3_ENDPOINT_URL`, for
MinIO/moto) to keep them in S3. Telemetry is off unless `MLFLOW_DISABLE_TELEMETRY` says otherwise: the
pipeline runs offline.

How the UI shows it: the experiment is tagged as model training (`mlflow.experimentKind`), every run and
the experiment carry a description (`mlflow.note.content`), and per-round metrics are named by prefix
(`train/`, `diag/`, `update/`, `eval/<benchmark>/`, `summary/`) so the chart view groups them into
sections. MLflow 3.17's UI picks its GenAI or model-training view from a switch in its sidebar (remembered
in the browser, GenAI by default), not from the experiment's tag: `ui_url` links straight to the training
view (`?workflowType=machine_learning`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, RunStatus, RunTag, ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_ENTITY_KEY_LENGTH,
    MAX_EXPERIMENT_TAG_VAL_LENGTH,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

PARENT_TAG = MLFLOW_PARENT_RUN_ID
NOTE_TAG = "mlflow.note.content"  # the description the UI shows (and edits) on a run or an experiment
GIT_COMMIT_TAG = "mlflow.source.git.commit"
LOGGED_ARTIFACTS_TAG = "mlflow.loggedArtifacts"  # lists a run's tables, which the UI then shows as tables
# The experiment kind: "custom_model_development" is the UI's "Machine learning" (model training), as
# opposed to "genai_development" (traces, sessions). Values from mlflow/server/js (MLflow 3.17).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
#: The UI's query parameter that opens the model-training view rather than GenAI (see the module docstring).
TRAINING_VIEW_QUERY = "workflowType=machine_learning"
#: Per-round quantities of the training batch itself (under `train/`); every other bare diagnostic goes
#: under `diag/` (the paper's diagnostics: tool use, all-wrong rates, flips, errors, AXPO's counts).
TRAIN_KEYS = frozenset(
    {
        "reward_mean",
        "reward_mean_shaped",
        "reward_mean_resampled",
        "reward_start_policy",
        "reward_gain_vs_start",
        "mean_turns",
        "tokens_original",
        "tokens_resampled",
        "rollouts",
    }
)
_LOCAL_SCHEMES = ("sqlite:", "file:")
_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


def _lock_for(tracking_uri: str) -> threading.RLock:
    with _locks_guard:
        return _locks.setdefault(tracking_uri, threading.RLock())


def default_tracking_uri(output_dir: str | Path) -> str:
    """`sqlite:///<absolute output dir>/mlflow.db` (four slashes: SQLAlchemy's absolute form)."""
    return f"sqlite:///{Path(output_dir).absolute() / 'mlflow.db'}"


def round_metric_name(key: str) -> str:
    """The MLflow name of a per-round metric: `tool_use_rate` -> `diag/tool_use_rate`, `reward_mean` ->
    `train/reward_mean`; a name that already has a prefix (`update/loss`) is kept."""
    if "/" in key:
        return key
    return f"train/{key}" if key in TRAIN_KEYS else f"diag/{key}"


def round_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A round's diagnostics and update stats under their MLflow names (`round_metric_name`)."""
    return {round_metric_name(k): v for k, v in metrics.items()}


def config_hash(config: BaseModel | Mapping[str, Any]) -> str:
    """12 hex digits of sha256 over the config's canonical JSON: equal configs, equal hashes."""
    dumped = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    text = json.dumps(dumped, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=4)
def source_commit(path: str | Path | None = None) -> str:
    """The git commit of the checkout holding `path` (default: this package), `+dirty` when tracked files
    differ from it; `unknown` outside a git checkout (an installed wheel) or without git."""
    where = str(Path(path) if path else Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    dirty = "+dirty" if status.returncode == 0 and status.stdout.strip() else ""
    return head.stdout.strip() + dirty


def _is_local(tracking_uri: str) -> bool:
    return tracking_uri.startswith(_LOCAL_SCHEMES) or "://" not in tracking_uri


def clean_key(key: str) -> str:
    """A param/metric/tag name MLflow accepts: alphanumerics, `_ - . /` and spaces (`pass@1` ->
    `pass_at_1`, anything else -> `_`), no empty, `.` or `..` path segments (MLflow rejects names that
    would resolve to another path), at most 250 characters."""
    chars = "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(key).replace("@", "_at_"))
    segments = [("__" if s == ".." else s) for s in chars.split("/") if s not in ("", ".")]
    return "/".join(segments)[:MAX_ENTITY_KEY_LENGTH] or "_"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; an empty mapping stays visible as `{}`."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _stringify(value: Any, limit: int) -> str:
    text = (
        value if isinstance(value, str) else "{}" if isinstance(value, Mapping) and not value else str(value)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class RunRecord:
    """A run as plain Python (so callers need not know MLflow's entities)."""

    run_id: str
    name: str
    status: str
    parent_run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the latest value of each


class Tracker:
    """One experiment in one tracking backend; thread-safe; every method takes the run id explicitly."""

    def __init__(
        self,
        tracking_uri: str | None,
        output_dir: str | Path,
        experiment: str,
        artifact_location: str | None = None,
        s3_endpoint_url: str | None = None,
    ) -> None:
        """`s3_endpoint_url` (MinIO, moto) is where an `s3://` artifact location lives; MLflow reads it from
        the process environment (`MLFLOW_S3_ENDPOINT_URL`), which is set to it unless already set."""
        if s3_endpoint_url and artifact_location and artifact_location.startswith("s3://"):
            os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", s3_endpoint_url)
        self.output_dir = Path(output_dir).absolute()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri or default_tracking_uri(self.output_dir)
        if artifact_location is None and _is_local(self.tracking_uri):
            artifact_location = (self.output_dir / "mlartifacts").as_uri()
        self.experiment = experiment
        self._lock = _lock_for(self.tracking_uri)
        self._client_obj: MlflowClient | None = None
        self.experiment_id = self._call(lambda: self._get_or_create_experiment(experiment, artifact_location))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client_obj"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = _lock_for(self.tracking_uri)

    def __repr__(self) -> str:
        return f"Tracker({self.tracking_uri!r}, experiment={self.experiment!r})"

    @property
    def client(self) -> MlflowClient:
        with self._lock:
            if self._client_obj is None:
                self._client_obj = MlflowClient(tracking_uri=self.tracking_uri)
            return self._client_obj

    def _call(self, fn: Callable[[], T], attempts: int = 4) -> T:
        """Run `fn` under the URI's lock; retry when another process holds the sqlite file."""
        for attempt in range(attempts):
            try:
                with self._lock:
                    return fn()
            except MlflowException as exc:
                if "database is locked" not in str(exc) or attempt + 1 == attempts:
                    raise
                time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _get_or_create_experiment(self, name: str, artifact_location: str | None) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}
                )
            except MlflowException as exc:  # created meanwhile by another process
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(name)
                assert exp is not None
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        if artifact_location and exp.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
            logger.warning(
                "experiment %r already stores artifacts at %s, not %s (MLflow cannot move them)",
                name,
                exp.artifact_location,
                artifact_location,
            )
        return exp.experiment_id

    # --- runs ----------------------------------------------------------------------------------------
    def start_run(
        self,
        name: str,
        *,
        parent_run_id: str | None = None,
        tags: dict[str, str] | None = None,
        resume: bool = False,
    ) -> str:
        """Create a run (a child of `parent_run_id` when given) and return its id.

        `resume=True` reuses the newest run with this name and parent (see `find_run`), marks it RUNNING
        again and updates its tags: a rerun of a flow then continues the same run instead of a twin.
        """
        if resume and (existing := self.find_run(name, parent_run_id)) is not None:
            self._call(lambda: self.client.update_run(existing, status="RUNNING"))
            if tags:
                self.set_tags(existing, tags)
            return existing
        all_tags = {clean_key(k): _stringify(v, MAX_TAG_VAL_LENGTH) for k, v in (tags or {}).items()}
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self._call(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags))
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a run FINISHED (or FAILED / KILLED)."""
        RunStatus.from_string(status)  # validates the name
        self._call(lambda: self.client.set_terminated(run_id, status))

    def find_run(self, name: str, parent_run_id: str | None = None) -> str | None:
        """The newest active run with this name and this parent (None: a top-level run), or None."""
        clauses = [f"tags.`{PARENT_TAG}` = '{parent_run_id}'"] if parent_run_id else []
        if "'" not in name:
            clauses.append(f"attributes.run_name = '{name}'")
        for run in self._search(" and ".join(clauses)):
            if run.info.run_name == name and run.data.tags.get(PARENT_TAG) == parent_run_id:
                return run.info.run_id
        return None

    def _search(self, filter_string: str) -> Iterator[Any]:
        token: str | None = None
        while True:
            page = self._call(
                lambda t=token: self.client.search_runs(
                    [self.experiment_id],
                    filter_string=filter_string,
                    run_view_type=ViewType.ACTIVE_ONLY,
                    order_by=["attributes.start_time DESC"],
                    max_results=1000,
                    page_token=t,
                ),
            )
            yield from page
            token = page.token
            if not token:
                return

    # --- logging -------------------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log (nested) params as dotted keys with string values cut to MLflow's limit.

        MLflow params are write-once: keys already logged with the same value are skipped (a resumed run
        logs its config again), and a changed value is kept as it was, with a warning.
        """
        flat = {clean_key(k): _stringify(v, MAX_PARAM_VAL_LENGTH) for k, v in flatten(params).items()}

        def log() -> None:
            existing = self.client.get_run(run_id).data.params
            changed = sorted(k for k, v in flat.items() if k in existing and existing[k] != v)
            if changed:
                logger.warning("run %s: params already logged with other values, kept: %s", run_id, changed)
            new = [Param(k, v) for k, v in flat.items() if k not in existing]
            for batch in _chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
                self.client.log_batch(run_id, params=batch)

        self._call(log)

    def log_config(self, run_id: str, config: BaseModel) -> None:
        """A pydantic config as params (flattened), and in full as `config.json` (params get truncated)."""
        dumped = config.model_dump(mode="json")
        self.log_params(run_id, dumped)
        self.log_dict(run_id, dumped, "config.json")

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> list[str]:
        """Log numeric metrics at `step` (default 0); return the names of the non-finite ones, dropped.

        NaN/inf are dropped because some backends reject them and they would poison the plots; a warning
        names them. A value already logged at that step is not logged again (see `_log_new`).
        """
        timestamp = int(time.time() * 1000)
        entries: list[Metric] = []
        dropped: list[str] = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"metric {key!r} is not a number: {value!r}") from exc
            if math.isfinite(number):
                entries.append(Metric(clean_key(key), number, timestamp, int(step or 0)))
            else:
                dropped.append(key)
        if dropped:
            logger.warning("run %s step %s: dropped non-finite metrics %s", run_id, step, dropped)
        self._call(lambda: self._log_new(run_id, entries))
        return dropped

    def _log_new(self, run_id: str, entries: list[Metric]) -> None:
        """Log the entries not yet in the run's history: idempotent per (run, key, step, value), so a rerun
        (or a retried task) that logs the same results again adds nothing. A different value at a logged
        step is a changed result (recomputed after a code change): it is logged, and is then the latest."""
        logged = self.client.get_run(run_id).data.metrics  # one query: the keys the run has at all
        new: list[Metric] = []
        for entry in entries:
            if entry.key in logged:
                history = self.client.get_metric_history(run_id, entry.key)
                at_step = {m.value for m in history if m.step == entry.step}
                if entry.value in at_step:
                    continue
                if at_step:
                    logger.warning(
                        "run %s: metric %s at step %s changes from %s to %s",
                        run_id,
                        entry.key,
                        entry.step,
                        sorted(at_step),
                        entry.value,
                    )
            new.append(entry)
        for batch in _chunks(new, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        items = [RunTag(clean_key(k), _stringify(v, MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        for batch in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self._call(lambda b=batch: self.client.log_batch(run_id, tags=b))

    def describe_run(self, run_id: str, text: str) -> None:
        """The run's description (Markdown), shown on its page and in the runs table's tooltip."""
        self.set_tags(run_id, {NOTE_TAG: text})

    def describe_experiment(self, text: str) -> None:
        """The experiment's description (Markdown), shown above its runs."""
        value = _stringify(text, MAX_EXPERIMENT_TAG_VAL_LENGTH)
        self._call(lambda: self.client.set_experiment_tag(self.experiment_id, NOTE_TAG, value))

    def experiment_tags(self) -> dict[str, str]:
        return dict(self._call(lambda: self.client.get_experiment(self.experiment_id)).tags)

    def log_table(self, run_id: str, rows: list[Mapping[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table (a `.json` artifact the UI shows as a table; `MlflowClient.load_table`
        reads it). Unlike `MlflowClient.log_table`, which appends to an existing file, logging again
        replaces it: a rerun does not duplicate the rows. Non-finite numbers become null."""
        if not artifact_file.endswith(".json"):
            raise ValueError(f"log_table: {artifact_file!r} must end with .json")
        columns: list[str] = []
        for row in rows:
            columns += [str(k) for k in row if str(k) not in columns]

        def cell(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)

        table = {"columns": columns, "data": [[cell(row.get(c)) for c in columns] for row in rows]}
        self._call(lambda: self.client.log_text(run_id, json.dumps(table), artifact_file))

        def register() -> None:
            listed = json.loads(self.client.get_run(run_id).data.tags.get(LOGGED_ARTIFACTS_TAG, "[]"))
            entry = {"path": artifact_file, "type": "table"}
            if entry not in listed:
                self.client.set_tag(run_id, LOGGED_ARTIFACTS_TAG, json.dumps([*listed, entry]))

        self._call(register)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """The artifact paths directly under `path` (folders included)."""
        return [a.path for a in self._call(lambda: self.client.list_artifacts(run_id, path))]

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a folder's contents, into the run's artifacts (under `artifact_path`)."""
        path = Path(local_path)
        if not path.exists():
            raise FileNotFoundError(f"log_artifact: no such file or folder: {path}")
        if path.is_dir():
            self._call(lambda: self.client.log_artifacts(run_id, str(path), artifact_path))
        else:
            self._call(lambda: self.client.log_artifact(run_id, str(path), artifact_path))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call(lambda: self.client.log_text(run_id, text, artifact_file))

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        """A JSON (or YAML, by the file's extension) artifact."""
        self._call(
            lambda: self.client.log_dict(run_id, json.loads(json.dumps(obj, default=str)), artifact_file)
        )

    # --- reading back (reports, resume) ----------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord:
        return _record(self._call(lambda: self.client.get_run(run_id)))

    def child_runs(self, parent_run_id: str) -> list[RunRecord]:
        """The children of a parent run, oldest first."""
        runs = [_record(r) for r in self._search(f"tags.`{PARENT_TAG}` = '{parent_run_id}'")]
        return runs[::-1]

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """`[(step, value), ...]` sorted by step (the last value logged at a step wins)."""
        history = self._call(lambda: self.client.get_metric_history(run_id, clean_key(key)))
        by_step = {m.step: m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))}
        return sorted(by_step.items())

    def artifact_uri(self, run_id: str) -> str:
        return self._call(lambda: self.client.get_run(run_id).info.artifact_uri)

    def ui_command(self, port: int = 5000) -> str:
        return ui_command(self.tracking_uri, port)

    def ui_url(self, base_url: str = "http://127.0.0.1:5000", run_id: str | None = None) -> str:
        return ui_url(base_url, self.experiment_id, run_id)


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    """The command that shows a backend in MLflow's UI (for a tracking server: its URL)."""
    if not _is_local(tracking_uri):
        return tracking_uri
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)} --host 127.0.0.1 --port {port}"


def ui_url(base_url: str, experiment_id: str, run_id: str | None = None) -> str:
    """The UI's page of an experiment's runs (or of one run), in the model-training view."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/{page}?{TRAINING_VIEW_QUERY}"


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name,
        status=run.info.status,
        parent_run_id=run.data.tags.get(PARENT_TAG),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
    )
