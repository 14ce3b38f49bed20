"""One process per run folder: a lock file `_LOCK` in the run folder (local) or a lock object (S3).

Two processes on one run name would both redo the work, log every metric twice and reuse each other's
half-written results; the second one is refused instead, with an error naming the holder.

- Local (`file://`): `flock` on `<run>/_LOCK`, which also holds the holder's pid, host and start time.
  The kernel drops the lock when its holder dies (even by `kill -9`), so a dead holder never blocks.
  The file itself stays: unlinking it on release would let a waiter lock the old inode while a newcomer
  locks a new one.
- S3: the lock object is created with a conditional put (`IfNoneMatch="*"`). A lock of a dead process on
  this host (pid gone, or reused by another process) is taken over with a put conditional on the stale
  object's ETag, so of two takers only one wins. A holder on another host cannot be checked from here:
  the error says which object to delete once that process is known to be gone. Stores without
  conditional writes get a plain check-then-put (best effort, with a warning).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from axpo_core.storage import ObjectStore, S3Store, local_path

logger = logging.getLogger(__name__)
LOCK_NAME = "_LOCK"


class RunLocked(RuntimeError):
    """Another live process holds the run folder."""

    def __init__(self, lock_uri: str, holder: dict[str, Any] | None, hint: str = "") -> None:
        self.lock_uri = lock_uri
        self.holder = holder or {}
        self.hint = hint
        if holder:
            who = f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
        else:
            who = "a process that is just starting (no holder recorded yet)"
        super().__init__(f"run folder is in use by {who}; lock {lock_uri}{hint}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable: Prefect persists a failed flow's exception
        return (RunLocked, (self.lock_uri, self.holder, self.hint))


def _process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux `/proc`), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in parentheses may hold spaces


def this_holder() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "process_start": _process_start_ticks(pid),
        "token": uuid.uuid4().hex,
    }


def holder_alive(holder: dict[str, Any]) -> bool | None:
    """True/False for a holder on this host; None when it is on another host (cannot be checked here)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    recorded = holder.get("process_start")
    return recorded is None or _process_start_ticks(pid) in (None, recorded)  # a reused pid is stale


class RunLock:
    """The lock of one run folder; `acquire()` raises RunLocked when a live process holds it."""

    def __init__(self, store: ObjectStore, run_base_uri: str) -> None:
        self.store = store
        self.uri = run_base_uri.rstrip("/") + "/" + LOCK_NAME
        self.holder: dict[str, Any] | None = None
        self._fd: int | None = None
        self._etag: str | None = None

    # --- public -----------------------------------------------------------------------------------
    def acquire(self) -> dict[str, Any]:
        if self.holder is not None:
            raise RuntimeError(f"lock {self.uri} is already held by this RunLock")
        holder = this_holder()
        if isinstance(self.store, S3Store):
            self._acquire_s3(holder)
        else:
            self._acquire_local(holder)
        self.holder = holder
        return holder

    def release(self) -> None:
        if self.holder is None:
            return
        try:
            if isinstance(self.store, S3Store):
                self._release_s3()
            else:
                self._release_local()
        finally:
            self.holder = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- local --------------------------------------------------------------------------------------
    def _acquire_local(self, holder: dict[str, Any]) -> None:
        path = local_path(self.uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OSError(exc.errno, f"cannot lock the run folder ({exc.strerror})", str(path)) from exc
            raise RunLocked(self.uri, _read_holder(path.read_bytes())) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def _release_local(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty file: nobody holds it
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    # --- S3 -----------------------------------------------------------------------------------------
    def _bucket_key(self) -> tuple[str, str]:
        bucket, _, key = self.uri.removeprefix("s3://").partition("/")
        return bucket, key

    def _acquire_s3(self, holder: dict[str, Any]) -> None:
        from botocore.exceptions import ClientError

        client = self.store.client
        bucket, key = self._bucket_key()
        body = json.dumps(holder).encode()
        lost = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")
        for _ in range(3):  # a lock released or taken over between our calls: look again
            try:
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
                return
            except ClientError as exc:
                code = _error_code(exc)
                if code == "NotImplemented":
                    self._acquire_s3_unconditional(holder)
                    return
                if code not in lost:
                    raise
            current, etag = self._read_s3()
            if current is None:
                continue
            alive = holder_alive(current)
            if alive is not False:
                hint = f" (on another host: delete {self.uri} once that process is known to be gone)"
                raise RunLocked(self.uri, current, hint if alive is None else "")
            logger.warning("taking over the stale lock %s of dead process %s", self.uri, current.get("pid"))
            try:  # conditional on the stale object: of two takers, one wins
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=etag)["ETag"]
                return
            except ClientError as exc:
                if _error_code(exc) not in lost:
                    raise
        raise RunLocked(self.uri, self._read_s3()[0], " (it changed hands while this process tried)")

    def _acquire_s3_unconditional(self, holder: dict[str, Any]) -> None:
        logger.warning("the object store has no conditional writes: the lock %s is best effort", self.uri)
        current, _ = self._read_s3()
        if current is not None and holder_alive(current) is not False:
            raise RunLocked(self.uri, current)
        bucket, key = self._bucket_key()
        self._etag = self.store.client.put_object(Bucket=bucket, Key=key, Body=json.dumps(holder).encode())[
            "ETag"
        ]

    def _read_s3(self) -> tuple[dict[str, Any] | None, str | None]:
        from botocore.exceptions import ClientError

        bucket, key = self._bucket_key()
        try:
            obj = self.store.client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None, None
            raise
        return _read_holder(obj["Body"].read()) or {}, obj["ETag"]

    def _release_s3(self) -> None:
        from botocore.exceptions import ClientError

        bucket, key = self._bucket_key()
        try:  # only our own lock: a taker-over's object has another ETag
            self.store.client.delete_object(Bucket=bucket, Key=key, IfMatch=self._etag)
        except ClientError as exc:
            code = _error_code(exc)
            if code == "NotImplemented":
                current, _ = self._read_s3()
                if current is not None and current.get("token") == (self.holder or {}).get("token"):
                    self.store.client.delete_object(Bucket=bucket, Key=key)
            elif code not in ("PreconditionFailed", "NoSuchKey", "404"):
                raise
            else:
                logger.warning("lock %s was no longer ours at release (taken over?)", self.uri)
        finally:
            self._etag = None


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read_holder(raw: bytes) -> dict[str, Any] | None:
    try:
        holder = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


@contextmanager
def run_lock(store: ObjectStore, run_base_uri: str) -> Iterator[dict[str, Any]]:
    """Hold the run folder at `run_base_uri` for the block (raises RunLocked when another process does)."""
    lock = RunLock(store, run_base_uri)
    holder = lock.acquire()
    try:
        yield holder
    finally:
        lock.release()
