"""Task options shared by every task: persisted results keyed on inputs + task source + a digest of the code
the task runs (a rerun resumes from the last finished task; a code change recomputes what it could change),
and retries for the storage/tracking I/O they do.

The code digest of a task is over the project files its module reaches through imports (`task_code_files`:
a static scan of every `import` in `axpo_core`, `tasks` and `flows`, function bodies included), their
package data, the installed project's version and the versions of the numeric libraries. Editing
`evaluation/report.py` recomputes the report task, not SFT or the RL rounds; editing `algorithms/grpo.py`
recomputes every task whose code imports it. It is still an over-approximation at the module level (a task
that imports a module recomputes whatever part of it changed).

A downstream task whose own code did not change must not serve a result computed from an artifact an
upstream task has since rewritten at the same URI: every ref a task returns names its artifact's version
(`CheckpointRef.version`, `RolloutRef.version`, …: a content digest, or the folder marker's), which is part
of the downstream task's inputs.

"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
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
    """The digest of all the project's code (every task's closure is a part of it): once per process."""
    versions = ",".join(f"{name}={_version(name)}" for name in LIBRARIES)
    source = source_digest(_package_root(name) for name in CODE_PACKAGES)
    return hashlib.sha256(f"{versions}|{source}".encode()).hexdigest()


def _module_file(name: str) -> Path | None:
    """The source file of a project module (`axpo_core.envs.suites` -> …/suites/__init__.py), else None."""
    top, *rest = name.split(".")
    if top not in CODE_PACKAGES:
        return None
    base = _package_root(top).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Every module an `import` statement anywhere in `path` names (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    out = set()
    for name in names:  # `import a.b.c` imports a and a.b too
        parts = name.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


@functools.cache
def task_code_files(source_file: str, module: str) -> tuple[Path, ...]:
    """The project files a module reaches through imports, itself included, sorted."""
    seen: dict[Path, str] = {}
    todo = [(Path(source_file), module)]
    while todo:
        path, name = todo.pop()
        if path in seen:
            continue
        seen[path] = name
        for imported in _imported_modules(path, name):
            file = _module_file(imported)
            if file is not None and file not in seen:
                todo.append((file, imported))
    return tuple(sorted(seen))


def _package_data() -> list[Path]:
    """Non-Python files of the project packages (read at run time by whatever opens them)."""
    return sorted(
        p
        for name in CODE_PACKAGES
        for p in _package_root(name).rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    )


@functools.cache
def task_code_digest(source_file: str, module: str) -> str:
    """The code digest of a task defined in `source_file`: its import closure, the package data and the
    library versions."""
    digest = hashlib.sha256(",".join(f"{n}={_version(n)}" for n in LIBRARIES).encode())
    for path in [*task_code_files(source_file, module), *_package_data()]:
        digest.update(str(path.name).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass
class CodeDigest(CachePolicy):
    """Cache-key part: the digest of the code the task reaches (`task_code_digest`)."""

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any] | None,
        flow_parameters: dict[str, Any] | None,
        **kwargs: Any,
    ) -> str | None:
        fn = getattr(getattr(task_ctx, "task", None), "fn", None)
        source = inspect.getsourcefile(fn) if fn is not None else None
        if source is None:  # no file to scan (a task defined interactively): all of the project's code
            return code_digest()
        return task_code_digest(source, fn.__module__)


CODE = CodeDigest()

RESUMABLE = dict(
    cache_policy=INPUTS + TASK_SOURCE + CODE, persist_result=True, retries=2, retry_delay_seconds=1
)
