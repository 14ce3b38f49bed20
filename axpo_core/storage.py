"""Object storage: a local folder (`file://`, the default) or S3 (`s3://bucket/prefix`) behind one interface.

Tasks exchange URIs, never tensors, so every artifact of a run lives here, under
`<experiment>/<run>/` in the layout axpo_core/runs.py describes (its `RunLayout` builds the URIs).

Guarantees:
- A single object is written atomically: locally to a temporary sibling then `os.replace`, on S3 by one
  PUT (or a multipart upload, which S3 also publishes at once). A reader sees the old or the new bytes.
- A folder (`put_dir`) is complete only once its `_COMPLETE` marker exists. Each put_dir has a writer id;
  the marker, written last, names it and lists that writer's files (relative path -> size; on S3 also
  each file's ETag, and each object carries the writer id as metadata). `get_dir` accepts only files of
  the marked version: locally the folder is built beside its place and renamed in whole, and a reader
  checks the marker is unchanged after copying; on S3 each file is read with If-Match on its ETag. A
  file of another version makes the reader read the marker again and start over (a few times), so a
  reader racing a rewrite returns the old or the new folder, never a mix. Of two writers of one folder,
  the last one's files stand (S3: a writer rewrites any of its files the other replaced meanwhile).
  `get_dir` downloads into a temporary folder, then renames that into place.
- `create_if_absent` writes an object only where none exists, atomically: locally a complete temporary
  file is hard-linked into place, on S3 a PUT with `If-None-Match: *`. Of concurrent creators one wins
  and the others read its bytes (the run's storage id, `flows/runtime.py`).
- Transient failures (S3 5xx/throttling, connection errors and timeouts, local OSError other than
  not-found/permission) are retried `retries` times with exponential backoff; then a `StorageError` names
  the operation, the URI and the last error. Not-found and permission errors fail at once. Each S3 attempt
  waits at most `connect_timeout_s` to connect and `read_timeout_s` per read (defaults 5 s: a black-hole
  endpoint fails one call in under 30 s). A multipart upload that fails is aborted; one left by a killed
  writer is aborted by the next `put_dir` of its folder.

URIs: `file:///abs/path`, `file://relative/path` (against the working directory) and bare paths are all
local; a store's own root is made absolute so that the URIs it hands out survive a change of directory.
S3 credentials and region come from the environment as boto3 reads them; the endpoint (MinIO, moto) is
`s3_endpoint_url`, else `MLFLOW_S3_ENDPOINT_URL` (so one variable serves MLflow artifacts too), else
boto3's own (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`).

Over 600 lines: the two stores keep one contract (the guarantees above) and share its completion marker,
atomic swaps and retry classification; S3Store alone is about 320 lines (a candidate to move to its own
module, with the marker helpers, should it grow).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
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
logger = logging.getLogger(__name__)


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
    def _create(self, uri: str, data: bytes) -> bool: ...
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

    def create_if_absent(self, uri: str, data: bytes) -> bool:
        """Write the object only where none exists, in one atomic step: of concurrent creators exactly one
        writes, and no reader ever sees a partial object. False: an object was there (read it to learn
        what the winner wrote; on S3 it may be this call's own earlier attempt, whose reply was lost).
        Locally a complete temporary file is hard-linked into place (`link` fails when the name exists);
        on S3 one PUT with `If-None-Match: *`."""
        return self._call("create_if_absent", uri, lambda: self._create(uri, bytes(data)))

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
        """Upload every file of `local_dir` as the folder `uri`, under a new writer id; the `_COMPLETE`
        marker (last) names that writer and lists its files, and `get_dir` accepts only those.

        Whatever was under `uri` before is replaced, and no stale file survives. Locally the folder is
        built beside `uri` and renamed into place, so a rewrite is all-or-nothing; on S3 the old marker
        goes first, each file carries the writer id (metadata), the marker records each file's ETag,
        and a writer that finds another's file among its own (two writers at once) rewrites those.
        """
        src = Path(local_dir)
        if not src.is_dir():
            raise StorageError("put_dir", uri, f"not a local folder: {src}")
        files = sorted(
            p for p in src.rglob("*") if p.is_file() and p.name != MARKER and _TMP_TAG not in p.name
        )
        self._put_dir(src, files, uri, new_writer_id())
        return uri

    def folder_version(self, uri: str) -> str:
        """The version of the complete folder `uri`: a digest of its marker, which names the writer and its
        files (a rewrite, even of equal bytes, is a new version). StorageError when it is incomplete."""
        return content_version(self.get_bytes(_join(uri, [MARKER])))

    def get_dir(self, uri: str, local_dir: str | Path) -> Path:
        """Download a complete folder to `local_dir` and return it.

        Refuses (StorageError naming `uri`) when the marker is missing. Only files of the version the
        marker names are accepted: a file rewritten since (S3: another ETag; locally: the marker changed
        while copying) makes it read the marker again and start over, a few times, then fail. The files
        land in a temporary sibling first, which is then renamed into place; a local copy whose marker
        equals the remote one is reused as is (a checkpoint loaded every round is downloaded once). An
        existing `local_dir` is replaced only when it is empty or an earlier `get_dir` copy (has a
        marker), never otherwise.
        """
        marker_uri = _join(uri, [MARKER])
        dest = Path(local_dir).absolute()
        changed: _VersionChanged | None = None
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                time.sleep(self.backoff_s * (2 ** (attempt - 1)))
            try:
                raw_marker = self.get_bytes(marker_uri)
            except ObjectNotFound:
                detail = f"incomplete folder: no {MARKER} marker (missing or still being written)"
                if changed is not None:
                    detail += f"; it was rewritten while being read ({changed})"
                raise StorageError("get_dir", uri, detail) from None
            marker = _parse_marker(uri, raw_marker)
            if _same_marker(dest, raw_marker):
                return dest
            if dest.exists() and not (dest / MARKER).is_file() and (not dest.is_dir() or any(dest.iterdir())):
                raise StorageError(
                    "get_dir", uri, f"{dest} exists and is not an earlier copy; not replacing it"
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}{_TMP_TAG}{uuid.uuid4().hex}")
            try:
                tmp.mkdir(parents=True)
                self._get_version(uri, marker, raw_marker, tmp)
                (tmp / MARKER).write_bytes(raw_marker)
                try:
                    _swap_into_place(tmp, dest)
                except OSError as exc:  # another thread put the same copy in place first: fine
                    if not _same_marker(dest, raw_marker):
                        raise StorageError(
                            "get_dir", uri, f"could not move the copy into {dest}: {exc}"
                        ) from exc
                return dest
            except _VersionChanged as exc:
                changed = exc
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        raise StorageError(
            "get_dir", uri, f"files not of the version its marker names ({READ_ATTEMPTS} reads): {changed}"
        )

    # --- folders: backend parts --------------------------------------------------------------------------
    @abstractmethod
    def _put_dir(self, src: Path, files: list[Path], uri: str, writer: str) -> None: ...
    @abstractmethod
    def _get_version(self, uri: str, marker: _Marker, raw_marker: bytes, tmp: Path) -> None:
        """Download the marker's files into `tmp`; raise `_VersionChanged` if any is not of its version."""


READ_ATTEMPTS = 4  # get_dir reads of a folder that keeps changing under it, before it gives up
REPAIR_ROUNDS = 2  # S3 put_dir rewrites of files another writer replaced, before it gives up


def content_version(data: bytes) -> str:
    """A short digest of an object's bytes: what a task's returned ref names, so that a downstream task's
    cache key changes whenever the artifact under the same URI does."""
    return hashlib.sha256(data).hexdigest()[:16]


def new_writer_id() -> str:
    """A fresh id for one put_dir: unique, and telling whose (time, host, process) it was."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{socket.gethostname()[:32]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


class _VersionChanged(Exception):
    """Internal: a folder's file is not of the version its marker names (rewritten, or two writers)."""


@dataclass(frozen=True)
class _Marker:
    writer: str
    files: dict[str, int]  # relative path -> size
    versions: dict[str, str]  # relative path -> ETag (S3); empty for local folders and older markers


def _marker_bytes(writer: str, files: dict[str, int], versions: dict[str, str] | None = None) -> bytes:
    marker: dict[str, Any] = {
        "id": writer,
        "writer": writer,
        "written_at": datetime.now(UTC).isoformat(),
        "n_files": len(files),
        "n_bytes": sum(files.values()),
        "files": files,
    }
    if versions is not None:
        marker["versions"] = versions
    return json.dumps(marker, indent=2).encode("utf-8")


def _parse_marker(uri: str, raw_marker: bytes) -> _Marker:
    try:
        data = json.loads(raw_marker)
        files = {str(_safe_relpath(k)): int(v) for k, v in data["files"].items()}
        versions = {str(k): str(v) for k, v in (data.get("versions") or {}).items()}
        writer = str(data.get("writer") or data.get("id") or "")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StorageError("get_dir", uri, f"corrupt {MARKER} marker: {exc}") from exc
    return _Marker(writer, files, versions)


def _same_marker(folder: Path, raw_marker: bytes) -> bool:
    try:
        return (folder / MARKER).read_bytes() == raw_marker
    except OSError:
        return False


def _swap_into_place(tmp: Path, dest: Path, retry_busy: bool = False) -> None:
    """Rename the finished folder `tmp` to `dest`, moving an older `dest` aside first (and always removing
    it: another thread may put its own copy in place between the two renames, which then fails here).
    `retry_busy`: when that happens, move the other copy aside too and try again (the last writer wins)."""
    for _ in range(SWAP_ATTEMPTS if retry_busy else 1):
        old: Path | None = dest.with_name(f".{dest.name}{_TMP_TAG}old-{uuid.uuid4().hex}")
        try:
            os.replace(dest, old)
        except FileNotFoundError:
            old = None  # no earlier copy (or another thread just moved it aside)
        try:
            os.replace(tmp, dest)
            return
        except OSError:
            if old is not None and not dest.exists():
                os.replace(old, dest)  # nothing replaced it: keep the earlier copy
                old = None
            if not retry_busy or not dest.exists():
                raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    raise OSError(f"{dest} kept being replaced by other writers ({SWAP_ATTEMPTS} attempts)")


SWAP_ATTEMPTS = 20
STALE_TMP_S = 3600.0  # a writer's temporary folder this old belongs to a writer that died


def _remove_stale_siblings(dest: Path) -> None:
    """Remove temporary folders of `dest` left by writers killed mid-write (older than STALE_TMP_S)."""
    cutoff = time.time() - STALE_TMP_S
    for sibling in dest.parent.glob(f".{glob.escape(dest.name)}{_TMP_TAG}*"):
        try:
            if sibling.lstat().st_mtime < cutoff:
                shutil.rmtree(sibling, ignore_errors=True)
        except OSError:
            pass  # another writer removed it first


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

    def _create(self, uri: str, data: bytes) -> bool:
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{_TMP_TAG}{uuid.uuid4().hex}")
        try:
            tmp.write_bytes(data)
            try:
                os.link(tmp, path)  # atomic, fails when the name exists, and the object appears whole
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_HARD_LINKS:
                    raise
                return _create_exclusive(path, data)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def _copy_file(src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)

    def _put_dir(self, src: Path, files: list[Path], uri: str, writer: str) -> None:
        """Build the folder beside `uri` (named by the writer id), marker included, then rename it into
        place: readers see the old folder or the new one, and of two writers the last rename wins whole."""
        dest = local_path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(dest)
        tmp = dest.with_name(f".{dest.name}{_TMP_TAG}{writer}")
        try:
            tmp.mkdir()
            manifest: dict[str, int] = {}
            for path in files:
                rel = path.relative_to(src).as_posix()
                target = tmp / rel
                self._call("put_dir", _join(uri, [rel]), lambda p=path, t=target: self._copy_file(p, t))
                manifest[rel] = target.stat().st_size
            (tmp / MARKER).write_bytes(_marker_bytes(writer, manifest))
            self._call("put_dir", uri, lambda: _swap_into_place(tmp, dest, retry_busy=True))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _get_version(self, uri: str, marker: _Marker, raw_marker: bytes, tmp: Path) -> None:
        base = local_path(uri)
        for rel, size in marker.files.items():
            target = tmp / rel
            try:
                self._call("get_dir", _join(uri, [rel]), lambda r=rel, t=target: self._copy_file(base / r, t))
            except ObjectNotFound:
                raise _VersionChanged(f"{rel} vanished (the folder was replaced)") from None
            if target.stat().st_size != size:
                raise _VersionChanged(f"{rel} has {target.stat().st_size} bytes, the marker says {size}")
        # The folder is replaced whole (a rename), so an unchanged marker means every file came from it.
        try:
            now = (base / MARKER).read_bytes()
        except OSError:
            now = b""
        if now != raw_marker:
            raise _VersionChanged(f"the folder was replaced while it was copied (writer {marker.writer})")

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


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}


def _create_exclusive(path: Path, data: bytes) -> bool:
    """create_if_absent on a filesystem without hard links: O_CREAT | O_EXCL is still atomic, but a reader
    racing the write may see the object before its bytes."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


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
    "ConditionalRequestConflict",  # 409: another conditional write of the key was in flight; AWS says retry
}


class S3Store(ObjectStore):
    """`s3://bucket/prefix` through one thread-safe boto3 client (created lazily, dropped when pickled).

    botocore's own retries are switched off (one attempt per call) so that `retries`/`backoff_s` alone
    govern how long a failing call takes; each attempt waits at most `connect_timeout_s` for a connection
    and `read_timeout_s` for each read, so a black-hole endpoint fails in bounded time. Files of
    `multipart_threshold` bytes or more go up in parts of `part_size`; an upload that fails is aborted,
    and put_dir aborts any upload left under its folder by a writer that was killed.
    """

    def __init__(
        self,
        root: str,
        endpoint_url: str | None = None,
        retries: int = 4,
        backoff_s: float = 0.2,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        multipart_threshold: int = 64 << 20,
        part_size: int = 64 << 20,
    ) -> None:
        _split_s3(root)  # validates the bucket
        super().__init__(root, retries, backoff_s)
        self.endpoint_url = endpoint_url or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.multipart_threshold = max(1, int(multipart_threshold))
        self.part_size = max(5 << 20, int(part_size))  # S3's smallest part (but the last)
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
                    connect_timeout=self.connect_timeout_s,
                    read_timeout=self.read_timeout_s,
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
            if code == "NoSuchUpload":  # a rewrite of the folder aborted our upload: start a new one
                return None
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

    def _create(self, uri: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = _split_s3(uri)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "PreconditionFailed":
                return False
            if code != "NotImplemented":
                raise
            # A store without conditional writes: check, then put (two racing creators may both write).
            logger.warning("the object store has no conditional writes: creating %s is best effort", uri)
            if self._exists(uri):
                return False
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
        return True

    def _put_file(self, src: Path, uri: str) -> None:
        self._upload(src, uri)

    def _get_file(self, uri: str, dst: Path) -> None:
        self._download(uri, dst)

    def _upload(self, src: Path, uri: str, writer: str | None = None) -> str:
        """One file to one object (one PUT, or a multipart upload aborted on any failure); its ETag."""
        bucket, key = _split_s3(uri)
        metadata = {"axpo-writer": writer} if writer else {}
        if src.stat().st_size < self.multipart_threshold:
            with src.open("rb") as f:
                return self.client.put_object(Bucket=bucket, Key=key, Body=f, Metadata=metadata)["ETag"]
        if writer is None:  # put_dir cleans its whole folder; a single large object cleans its own key
            self._abort_uploads(bucket, key, exact=True)
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            with src.open("rb") as f:
                while True:
                    chunk = f.read(self.part_size)
                    if parts and not chunk:
                        break
                    number = len(parts) + 1
                    resp = self.client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                    )
                    parts.append({"ETag": resp["ETag"], "PartNumber": number})
                    if len(chunk) < self.part_size:
                        break
            return self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )["ETag"]
        except BaseException:
            try:  # S3 keeps (and bills) the parts of an upload never completed or aborted
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort: the next put_dir of the folder aborts it
                pass
            raise

    def _abort_uploads(self, bucket: str, prefix: str, exact: bool = False) -> int:
        """Abort the incomplete multipart uploads under `prefix` (of the key `prefix` itself: `exact`)."""
        aborted = 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for upload in page.get("Uploads", []):
                if exact and upload["Key"] != prefix:
                    continue
                try:
                    self.client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
                except Exception as exc:  # noqa: BLE001 - already gone is fine, anything else is not
                    if self._classify(exc) is not None and "NoSuchUpload" not in str(exc):
                        raise
        return aborted

    def _download(self, uri: str, dst: Path, etag: str | None = None) -> dict[str, Any]:
        """Stream one object to `dst` (only the version `etag`, when given); returns its metadata."""
        bucket, key = _split_s3(uri)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if etag:
            kwargs["IfMatch"] = etag
        resp = self.client.get_object(**kwargs)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with dst.open("wb") as f:
            for chunk in resp["Body"].iter_chunks(1 << 20):
                f.write(chunk)
        return resp.get("Metadata") or {}

    def _writer_of(self, uri: str) -> str:
        """The writer id an object carries (for error messages); '?' when it has none or is gone."""
        bucket, key = _split_s3(uri)
        try:
            head = self.client.head_object(Bucket=bucket, Key=key)
        except Exception:  # noqa: BLE001 - only for a message
            return "?"
        return head.get("Metadata", {}).get("axpo-writer", "?")

    def _put_dir(self, src: Path, files: list[Path], uri: str, writer: str) -> None:
        bucket, key = _split_s3(uri)
        self.delete(uri)  # the marker first: from here on the folder is incomplete
        self._call("put_dir", uri, lambda: self._abort_uploads(bucket, _dir_prefix(key)))
        manifest = {p.relative_to(src).as_posix(): p.stat().st_size for p in files}
        sources = {p.relative_to(src).as_posix(): p for p in files}
        etags: dict[str, str] = {}
        pending = list(manifest)
        for _round in range(REPAIR_ROUNDS + 1):
            for rel in pending:
                file_uri = _join(uri, [rel])
                etags[rel] = self._call(
                    "put_dir", file_uri, lambda p=sources[rel], u=file_uri: self._upload(p, u, writer)
                )
            self.put_bytes(_join(uri, [MARKER]), _marker_bytes(writer, manifest, etags))
            # Another writer of this folder may have replaced some of our files, or the marker, since:
            # rewrite those (checking the files first: a marker over replaced files is refused anyway).
            pending = [rel for rel in manifest if self._etag(_join(uri, [rel])) != etags[rel]]
            if not pending and self._marker_writer(uri) == writer:
                return
        found = {self._writer_of(_join(uri, [rel])) for rel in pending} | {self._marker_writer(uri)}
        others = sorted(found - {writer, ""}) or ["?"]
        raise StorageError(
            "put_dir",
            uri,
            f"another writer ({', '.join(others)}) keeps rewriting this folder ({len(pending)} of its files, "
            "or its marker); get_dir refuses the folder until one writer finishes alone",
        )

    def _marker_writer(self, uri: str) -> str:
        """The writer the folder's marker names now ('' when there is none)."""
        try:
            return str(json.loads(self.get_bytes(_join(uri, [MARKER]))).get("writer", ""))
        except (ObjectNotFound, ValueError, AttributeError):
            return ""

    def _etag(self, uri: str) -> str | None:
        from botocore.exceptions import ClientError

        bucket, key = _split_s3(uri)

        def head() -> str | None:
            try:
                return self.client.head_object(Bucket=bucket, Key=key)["ETag"]
            except ClientError as exc:
                fatal = self._classify(exc)
                if fatal is not None and fatal.not_found:
                    return None
                raise

        return self._call("put_dir", uri, head)

    def _get_version(self, uri: str, marker: _Marker, raw_marker: bytes, tmp: Path) -> None:
        from botocore.exceptions import ClientError

        for rel, size in marker.files.items():
            file_uri = _join(uri, [rel])
            target = tmp / rel
            etag = marker.versions.get(rel)

            def fetch(r: str = rel, u: str = file_uri, t: Path = target, e: str | None = etag) -> None:
                try:
                    self._download(u, t, e)
                except ClientError as exc:
                    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                    if status == 412:  # If-Match failed: another version of the file is there now
                        raise _VersionChanged(
                            f"{r} is from writer {self._writer_of(u)}, the marker names {marker.writer}"
                        ) from None
                    if status == 404:
                        raise _VersionChanged(
                            f"{r} is gone (the marker names writer {marker.writer})"
                        ) from None
                    raise

            self._call("get_dir", file_uri, fetch)
            if target.stat().st_size != size:
                raise _VersionChanged(f"{rel} has {target.stat().st_size} bytes, the marker says {size}")
        # An older marker without ETags: at least the marker must not have changed meanwhile.
        if not marker.versions and self.get_bytes(_join(uri, [MARKER])) != raw_marker:
            raise _VersionChanged(f"the marker changed while the folder was read (writer {marker.writer})")

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
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 5.0,
) -> ObjectStore:
    """The store for a root URI: `s3://bucket/prefix` -> S3Store, anything else -> LocalStore."""
    text = os.fspath(root)
    if _is_s3(text):
        return S3Store(
            text,
            endpoint_url=s3_endpoint_url,
            retries=retries,
            backoff_s=backoff_s,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"unsupported storage URI (use file:// or s3://): {text}")
    return LocalStore(text, retries=retries, backoff_s=backoff_s)


def open_configured_store(storage: Any) -> ObjectStore:
    """The store a `StorageConfig` describes: its root, endpoint, retries and timeouts."""
    return open_store(
        storage.root,
        s3_endpoint_url=storage.s3_endpoint_url,
        retries=storage.retries,
        backoff_s=storage.retry_backoff_s,
        connect_timeout_s=storage.connect_timeout_s,
        read_timeout_s=storage.read_timeout_s,
    )
