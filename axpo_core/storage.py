"""Object storage: a local folder (`file://`, the default) or S3 (`s3://bucket/prefix`) behind one interface.

Tasks exchange URIs, never tensors, so every artifact of a run lives here. Layout under the store root:

    <experiment>/<run>/
        checkpoints/round-N/      a model folder (put_dir); `_COMPLETE` marks it finished
        rollouts/round-N.jsonl    trajectories of one round
        eval/<benchmark>.jsonl    per-sample evaluation records
        report/                   tables, plots, the rollout viewer

`RunLayout` builds these URIs so that every task agrees on them.

Guarantees:
- A single object is written atomically: locally to a temporary sibling then `os.replace`, on S3 by one
  PUT (or a multipart upload, which S3 also publishes at once). A reader sees the old or the new bytes.
- A folder (`put_dir`) is complete only once its `_COMPLETE` marker exists; the marker is written last
  and holds the manifest (relative path -> size). `get_dir` refuses a folder without it, downloads exactly
  the manifest's files into a temporary folder, checks sizes, then renames that folder into place.
- Transient failures (S3 5xx/throttling, connection errors, local OSError other than not-found/permission)
  are retried `retries` times with exponential backoff; then a `StorageError` names the operation, the URI
  and the last error. Not-found and permission errors fail at once.

URIs: `file:///abs/path`, `file://relative/path` (against the working directory) and bare paths are all
local; a store's own root is made absolute so that the URIs it hands out survive a change of directory.
S3 credentials and region come from the environment as boto3 reads them; the endpoint (MinIO, moto) is
`s3_endpoint_url`, else `MLFLOW_S3_ENDPOINT_URL` (so one variable serves MLflow artifacts too), else
boto3's own (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

MARKER = "_COMPLETE"
_TMP_TAG = ".axpo-tmp-"  # temporary files and folders carry this in their name; listings skip them

T = TypeVar("T")


class StorageError(RuntimeError):
    """A storage operation failed; the message names the operation, the URI and the cause."""

    def __init__(self, op: str, uri: str, detail: str) -> None:
        super().__init__(f"{op} {uri}: {detail}")
        self.op, self.uri, self.detail = op, uri, detail

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, so Prefect can persist a failed task's error
        return (type(self), (self.op, self.uri, self.detail))


class ObjectNotFound(StorageError):
    """The object does not exist (a `StorageError`, so callers may catch either)."""


class _Fatal(Exception):
    """Internal: a classified, non-retryable failure."""

    def __init__(self, detail: str, not_found: bool = False) -> None:
        super().__init__(detail)
        self.not_found = not_found


# ----------------------------------------------------------------------------------------------- URIs


def _is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str | os.PathLike[str]) -> Path:
    """The filesystem path of a local URI: `file:///abs`, `file://relative` (to the cwd) or a bare path."""
    text = os.fspath(uri)
    if _is_s3(text):
        raise ValueError(f"not a local URI: {text}")
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif text.startswith("file:"):
        text = text[len("file:") :]
    return Path(text or ".").absolute()


def _join(root: str, parts: Iterable[str]) -> str:
    pieces = [str(p).strip("/") for p in parts]
    tail = "/".join(p for p in pieces if p)
    return f"{root.rstrip('/')}/{tail}" if tail else root


def join_uri(base: str, *parts: str) -> str:
    """`join_uri("s3://b/run", "eval", "x.jsonl")` -> `s3://b/run/eval/x.jsonl` (slashes collapsed)."""
    return _join(base, parts)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI without a bucket: {uri}")
    return bucket, key


def _dir_prefix(key: str) -> str:
    key = key.strip("/")
    return f"{key}/" if key else ""


def _safe_relpath(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"unsafe path in manifest: {rel!r}")
    return path


# ----------------------------------------------------------------------------------------- the interface


class ObjectStore(ABC):
    """Shared behaviour (retries, JSON, folders with a completion marker) over a few backend primitives."""

    def __init__(self, root: str, retries: int = 4, backoff_s: float = 0.2) -> None:
        self.root = root.rstrip("/")
        self.retries = max(0, int(retries))
        self.backoff_s = backoff_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"

    # --- backend primitives (no retries, no wrapping; raise the native exceptions) -------------------
    @abstractmethod
    def _put_bytes(self, uri: str, data: bytes) -> None: ...
    @abstractmethod
    def _get_bytes(self, uri: str) -> bytes: ...
    @abstractmethod
    def _put_file(self, src: Path, uri: str) -> None: ...
    @abstractmethod
    def _get_file(self, uri: str, dst: Path) -> None: ...
    @abstractmethod
    def _exists(self, uri: str) -> bool: ...
    @abstractmethod
    def _list(self, prefix_uri: str, recursive: bool) -> list[str]: ...
    @abstractmethod
    def _delete(self, uri: str) -> None: ...
    @abstractmethod
    def _classify(self, exc: BaseException) -> _Fatal | None:
        """Return `_Fatal` for a permanent failure, None for a transient one; re-raise foreign errors."""

    # --- retries ---------------------------------------------------------------------------------------
    def _call(self, op: str, uri: str, fn: Callable[[], T]) -> T:
        """Run `fn` with bounded exponential backoff on transient errors; wrap failures in StorageError."""
        attempts = self.retries + 1
        for attempt in range(attempts):
            try:
                return fn()
            except StorageError:
                raise
            except Exception as exc:
                fatal = self._classify(exc)  # re-raises errors that are not storage errors (bugs)
                if fatal is not None:
                    cls = ObjectNotFound if fatal.not_found else StorageError
                    raise cls(op, uri, str(fatal)) from exc
                if attempt + 1 == attempts:
                    raise StorageError(
                        op, uri, f"failed after {attempts} attempts: {type(exc).__name__}: {exc}"
                    ) from exc
                time.sleep(self.backoff_s * (2**attempt))
        raise AssertionError("unreachable")

    # --- objects ---------------------------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        """A URI under the root: `store.uri("exp", "run-1", "eval/mathvision.jsonl")`; a first part that is
        itself a URI is the base instead: `store.uri(checkpoint_uri, "config.json")`."""
        if parts and "://" in parts[0]:
            return join_uri(parts[0], *parts[1:])
        return _join(self.root, parts)

    def put_bytes(self, uri: str, data: bytes) -> str:
        """Write an object atomically and return its URI."""
        self._call("put_bytes", uri, lambda: self._put_bytes(uri, bytes(data)))
        return uri

    def get_bytes(self, uri: str) -> bytes:
        """Read an object; `ObjectNotFound` (a StorageError) when it is missing."""
        return self._call("get_bytes", uri, lambda: self._get_bytes(uri))

    def put_text(self, uri: str, text: str) -> str:
        return self.put_bytes(uri, text.encode("utf-8"))

    def get_text(self, uri: str) -> str:
        return self.get_bytes(uri).decode("utf-8")

    def put_json(self, uri: str, obj: Any) -> str:
        return self.put_bytes(uri, json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8"))

    def get_json(self, uri: str) -> Any:
        return json.loads(self.get_bytes(uri))

    def put_jsonl(self, uri: str, rows: Iterable[Any]) -> str:
        """One JSON record per line (rollouts, eval records)."""
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return self.put_bytes(uri, lines.encode("utf-8"))

    def get_jsonl(self, uri: str) -> list[Any]:
        return [json.loads(line) for line in self.get_text(uri).splitlines() if line.strip()]

    def put_file(self, local_file: str | Path, uri: str) -> str:
        """Upload one local file atomically (streamed; large files are not read into memory)."""
        src = Path(local_file)
        self._call("put_file", uri, lambda: self._put_file(src, uri))
        return uri

    def get_file(self, uri: str, local_file: str | Path) -> Path:
        """Download one object to a local file, atomically (temporary sibling + rename)."""
        dst = Path(local_file)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}{_TMP_TAG}{uuid.uuid4().hex}")
        try:
            self._call("get_file", uri, lambda: self._get_file(uri, tmp))
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        return dst

    def exists(self, uri: str) -> bool:
        """True for an object, or for a folder holding at least one object."""
        return self._call("exists", uri, lambda: self._exists(uri))

    def list(self, prefix_uri: str, recursive: bool = True) -> list[str]:
        """Object URIs under the folder `prefix_uri`, sorted. Not recursive: the immediate children, with
        sub-folders as URIs ending in `/` (S3's delimiter view)."""
        return sorted(self._call("list", prefix_uri, lambda: self._list(prefix_uri, recursive)))

    def delete(self, uri: str) -> None:
        """Delete an object, or every object under the folder `uri` (its marker first). Missing: no-op."""
        marker = _join(uri, [MARKER])
        self._call("delete", marker, lambda: self._delete(marker))
        self._call("delete", uri, lambda: self._delete(uri))

    # --- folders with a completion marker ----------------------------------------------------------------
    def is_complete(self, uri: str) -> bool:
        """Whether the folder `uri` was fully written by `put_dir` (its marker exists)."""
        return self.exists(_join(uri, [MARKER]))

    def put_dir(self, local_dir: str | Path, uri: str) -> str:
        """Upload every file of `local_dir` under `uri`, then the `_COMPLETE` marker (last).

        Whatever was under `uri` before is deleted first (marker first), so a rewrite is never visible as
        complete until it has finished, and no stale file survives it.
        """
        src = Path(local_dir)
        if not src.is_dir():
            raise StorageError("put_dir", uri, f"not a local folder: {src}")
        files = sorted(
            p for p in src.rglob("*") if p.is_file() and p.name != MARKER and _TMP_TAG not in p.name
        )
        self.delete(uri)
        manifest: dict[str, int] = {}
        for path in files:
            rel = path.relative_to(src).as_posix()
            self.put_file(path, _join(uri, [rel]))
            manifest[rel] = path.stat().st_size
        marker = {
            "id": uuid.uuid4().hex,
            "written_at": datetime.now(UTC).isoformat(),
            "n_files": len(manifest),
            "n_bytes": sum(manifest.values()),
            "files": manifest,
        }
        self.put_json(_join(uri, [MARKER]), marker)
        return uri

    def get_dir(self, uri: str, local_dir: str | Path) -> Path:
        """Download a complete folder to `local_dir` and return it.

        Refuses (StorageError naming `uri`) when the marker is missing. The files land in a temporary
        sibling first, which is then renamed into place; a local copy whose marker equals the remote
        one is reused as is (a checkpoint loaded every round is downloaded once). An existing `local_dir`
        is replaced only when it is empty or an earlier `get_dir` copy (has a marker), never otherwise.
        """
        marker_uri = _join(uri, [MARKER])
        try:
            raw_marker = self.get_bytes(marker_uri)
        except ObjectNotFound:
            raise StorageError(
                "get_dir", uri, f"incomplete folder: no {MARKER} marker (missing or still being written)"
            ) from None
        try:
            files = {str(_safe_relpath(k)): int(v) for k, v in json.loads(raw_marker)["files"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError("get_dir", uri, f"corrupt {MARKER} marker: {exc}") from exc

        dest = Path(local_dir).absolute()
        if _same_marker(dest, raw_marker):
            return dest
        if dest.exists() and not (dest / MARKER).is_file() and (not dest.is_dir() or any(dest.iterdir())):
            raise StorageError("get_dir", uri, f"{dest} exists and is not an earlier copy; not replacing it")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}{_TMP_TAG}{uuid.uuid4().hex}")
        try:
            for rel, size in files.items():
                file_uri = _join(uri, [rel])
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                self._call("get_dir", file_uri, lambda u=file_uri, t=target: self._get_file(u, t))
                if target.stat().st_size != size:
                    raise StorageError(
                        "get_dir", file_uri, f"size {target.stat().st_size} != {size} in the manifest"
                    )
            tmp.mkdir(parents=True, exist_ok=True)  # an empty folder has no file to create it
            (tmp / MARKER).write_bytes(raw_marker)
            try:
                _swap_into_place(tmp, dest)
            except OSError as exc:  # another thread put the same copy in place first: fine
                if not _same_marker(dest, raw_marker):
                    raise StorageError("get_dir", uri, f"could not move the copy into {dest}: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest


def _same_marker(folder: Path, raw_marker: bytes) -> bool:
    try:
        return (folder / MARKER).read_bytes() == raw_marker
    except OSError:
        return False


def _swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished folder `tmp` to `dest`, moving an older `dest` aside first (and always removing
    it: another thread may put its own copy in place between the two renames, which then fails here)."""
    old: Path | None = dest.with_name(f".{dest.name}{_TMP_TAG}old-{uuid.uuid4().hex}")
    try:
        os.replace(dest, old)
    except FileNotFoundError:
        old = None  # no earlier copy (or another thread just moved it aside)
    try:
        os.replace(tmp, dest)
    except OSError:
        if old is not None and not dest.exists():
            os.replace(old, dest)  # nothing replaced it: keep the earlier copy
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------ local folder


class LocalStore(ObjectStore):
    """A folder on the local filesystem."""

    def __init__(self, root: str, retries: int = 4, backoff_s: float = 0.2) -> None:
        super().__init__(local_path(root).as_uri(), retries, backoff_s)

    def _classify(self, exc: BaseException) -> _Fatal | None:
        return _classify_os_error(exc)

    def _put_bytes(self, uri: str, data: bytes) -> None:
        self._atomic_write(local_path(uri), lambda tmp: tmp.write_bytes(data))

    def _put_file(self, src: Path, uri: str) -> None:
        self._atomic_write(local_path(uri), lambda tmp: shutil.copyfile(src, tmp))

    @staticmethod
    def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{_TMP_TAG}{uuid.uuid4().hex}")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _get_bytes(self, uri: str) -> bytes:
        return local_path(uri).read_bytes()

    def _get_file(self, uri: str, dst: Path) -> None:
        shutil.copyfile(local_path(uri), dst)

    def _exists(self, uri: str) -> bool:
        path = local_path(uri)
        return path.is_file() or (path.is_dir() and _has_files(path))

    def _list(self, prefix_uri: str, recursive: bool) -> list[str]:
        base = local_path(prefix_uri)
        if not base.is_dir():
            return []
        out: list[str] = []
        if recursive:
            for path in base.rglob("*"):
                if path.is_file() and not _hidden_tmp(path, base):
                    out.append(_join(prefix_uri, [path.relative_to(base).as_posix()]))
        else:
            for path in base.iterdir():
                if _TMP_TAG in path.name:
                    continue
                if path.is_file():
                    out.append(_join(prefix_uri, [path.name]))
                elif path.is_dir() and _has_files(path):
                    out.append(_join(prefix_uri, [path.name]) + "/")
        return out

    def _delete(self, uri: str) -> None:
        path = local_path(uri)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError):
                pass  # already gone, or a "folder" path below a file: nothing to delete


def _classify_os_error(exc: BaseException) -> _Fatal | None:
    """Not-found and permission-like errors are permanent; any other OSError (EIO, ENOSPC, NFS hiccups)
    is worth another try."""
    if isinstance(exc, FileNotFoundError):
        return _Fatal("not found", not_found=True)
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError | FileExistsError):
        return _Fatal(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, OSError):
        return None
    raise exc


def _hidden_tmp(path: Path, base: Path) -> bool:
    return any(_TMP_TAG in part for part in path.relative_to(base).parts)


def _has_files(folder: Path) -> bool:
    return any(p.is_file() and not _hidden_tmp(p, folder) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------------------------------- S3

_S3_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_S3_TRANSIENT = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}


class S3Store(ObjectStore):
    """`s3://bucket/prefix` through one thread-safe boto3 client (created lazily, dropped when pickled).

    botocore's own retries are switched off (one attempt per call) so that `retries`/`backoff_s` alone
    govern how long a failing call takes.
    """

    def __init__(
        self, root: str, endpoint_url: str | None = None, retries: int = 4, backoff_s: float = 0.2
    ) -> None:
        _split_s3(root)  # validates the bucket
        super().__init__(root, retries, backoff_s)
        self.endpoint_url = endpoint_url or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
        self._client_obj: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client_obj"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 S3 client (boto3 clients are thread-safe; sessions are not, hence the lock)."""
        with self._lock:
            if self._client_obj is None:
                import boto3
                from botocore.config import Config

                config = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                )
                session = boto3.session.Session()
                self._client_obj = session.client("s3", endpoint_url=self.endpoint_url, config=config)
            return self._client_obj

    def _classify(self, exc: BaseException) -> _Fatal | None:
        from boto3.exceptions import RetriesExceededError, S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

        if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:
            return self._classify(exc.__context__)  # boto3 wraps the ClientError of an upload
        if isinstance(exc, RetriesExceededError):
            return None
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _S3_NOT_FOUND or status == 404 and code != "NoSuchBucket":
                return _Fatal("not found", not_found=True)
            if status >= 500 or status == 429 or code in _S3_TRANSIENT:
                return None
            return _Fatal(f"{code or status}: {err.get('Message', exc)}")
        if isinstance(exc, ConnectionError | HTTPClientError):
            return None
        if isinstance(exc, BotoCoreError):
            return _Fatal(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, OSError):  # the local side of a download
            return _classify_os_error(exc)
        raise exc

    def _put_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = _split_s3(uri)
        self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def _get_bytes(self, uri: str) -> bytes:
        bucket, key = _split_s3(uri)
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def _put_file(self, src: Path, uri: str) -> None:
        bucket, key = _split_s3(uri)
        self.client.upload_file(str(src), bucket, key)

    def _get_file(self, uri: str, dst: Path) -> None:
        bucket, key = _split_s3(uri)
        self.client.download_file(bucket, key, str(dst))

    def _exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = _split_s3(uri)
        if key and not key.endswith("/"):
            try:
                self.client.head_object(Bucket=bucket, Key=key)
                return True
            except ClientError as exc:
                fatal = self._classify(exc)
                if fatal is None or not fatal.not_found:
                    raise
        resp = self.client.list_objects_v2(Bucket=bucket, Prefix=_dir_prefix(key), MaxKeys=1)
        return resp.get("KeyCount", 0) > 0

    def _list(self, prefix_uri: str, recursive: bool) -> list[str]:
        bucket, key = _split_s3(prefix_uri)
        prefix = _dir_prefix(key)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if not recursive:
            kwargs["Delimiter"] = "/"
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            out += [_join(prefix_uri, [o["Key"][len(prefix) :]]) for o in page.get("Contents", [])]
            out += [
                _join(prefix_uri, [p["Prefix"][len(prefix) :]]) + "/" for p in page.get("CommonPrefixes", [])
            ]
        return out

    def _delete(self, uri: str) -> None:
        bucket, key = _split_s3(uri)
        if key:
            self.client.delete_object(Bucket=bucket, Key=key.rstrip("/"))
        keys = [
            o["Key"]
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=_dir_prefix(key)
            )
            for o in page.get("Contents", [])
        ]
        for i in range(0, len(keys), 1000):  # delete_objects takes at most 1000 keys
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})


# -------------------------------------------------------------------------------------------- factories


def open_store(
    root: str | os.PathLike[str],
    s3_endpoint_url: str | None = None,
    retries: int = 4,
    backoff_s: float = 0.2,
) -> ObjectStore:
    """The store for a root URI: `s3://bucket/prefix` -> S3Store, anything else -> LocalStore."""
    text = os.fspath(root)
    if _is_s3(text):
        return S3Store(text, endpoint_url=s3_endpoint_url, retries=retries, backoff_s=backoff_s)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"unsupported storage URI (use file:// or s3://): {text}")
    return LocalStore(text, retries=retries, backoff_s=backoff_s)


@dataclass(frozen=True)
class RunLayout:
    """The URIs of one run's artifacts, so every task agrees on the layout in the module docstring."""

    store: ObjectStore
    experiment: str
    run: str

    @property
    def base(self) -> str:
        return self.store.uri(self.experiment, self.run)

    def checkpoint(self, name: int | str) -> str:
        """`checkpoints/round-N` for an int, `checkpoints/<name>` otherwise (e.g. "sft", "base")."""
        return _join(self.base, ["checkpoints", f"round-{name}" if isinstance(name, int) else name])

    def rollouts(self, round_: int) -> str:
        return _join(self.base, ["rollouts", f"round-{round_}.jsonl"])

    def eval(self, benchmark: str) -> str:
        return _join(self.base, ["eval", f"{benchmark}.jsonl"])

    def report(self, *parts: str) -> str:
        return _join(self.base, ["report", *parts])
