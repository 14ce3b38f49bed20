"""Task options shared by every task: persisted results keyed on inputs + task source + a digest of the code
the tasks run (a rerun resumes from the last finished task; a code change recomputes), and retries for the
storage/tracking I/O they do.

The code digest covers the source of the packages tasks run (`axpo_core`, `tasks`, `flows`, wherever they
are imported from), the installed project's version and the versions of the numeric libraries. It is a
deliberate over-approximation: any edit recomputes every task, because refs to artifacts rewritten at the
same URI (a checkpoint retrained by edited code) would otherwise let a downstream task, whose own code did
not change, serve results computed from the old artifact.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

CODE_PACKAGES = ("axpo_core", "tasks", "flows")
# Results also change with the numerics underneath: an upgrade of these recomputes too.
LIBRARIES = ("axpo", "torch", "transformers", "trl")


def source_digest(roots: Iterable[Path]) -> str:
    """sha256 over every file (relative path and bytes) under the given package folders, caches excluded."""
    digest = hashlib.sha256()
    for root in roots:
        root = Path(root)
        files = sorted(
            p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
        for path in files:
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def _package_root(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"code digest: package {name!r} is not importable")
    return Path(next(iter(spec.submodule_search_locations)))


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """The digest of the code this process runs tasks with: computed once per process (a few ms)."""
    versions = ",".join(f"{name}={_version(name)}" for name in LIBRARIES)
    source = source_digest(_package_root(name) for name in CODE_PACKAGES)
    return hashlib.sha256(f"{versions}|{source}".encode()).hexdigest()


@dataclass
class CodeDigest(CachePolicy):
    """Cache-key part: the code digest of this process (see `code_digest`)."""

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any] | None,
        flow_parameters: dict[str, Any] | None,
        **kwargs: Any,
    ) -> str | None:
        return code_digest()


CODE = CodeDigest()

RESUMABLE = dict(
    cache_policy=INPUTS + TASK_SOURCE + CODE, persist_result=True, retries=2, retry_delay_seconds=1
)
