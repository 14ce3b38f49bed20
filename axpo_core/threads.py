"""Torch's CPU thread count: the cores this process really has, shared among the processes (or threads) the
pipeline runs at once.

Torch's default is one intra-op thread per CPU the OS shows, in every process. That is wrong twice here:
a container's CPU quota (cgroup) can be far below the CPUs it sees, and the pipeline itself runs several
torch workers at once (torchrun ranks, rollout shards and evaluation tasks on the task runner, a sweep's
variants as deployments). Each then spins a full OpenMP team on shared cores, and the teams' barriers
wait on each other: the tiny-s build took 4x longer inside `make run` than alone with one thread.

    threads = max(1, cores // (concurrent * AXPO_CONCURRENT_RUNS))

* cores: the minimum of the process's CPU affinity (`os.sched_getaffinity`) and the CPU quota of its
  cgroup and every ancestor (v2 `cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`), at least 1;
* concurrent: how many torch workers this one shares them with (the caller knows: `training.world_size`
  for a rank, the shard count for a rollout shard, the evaluation's workers for an evaluate task);
* AXPO_CONCURRENT_RUNS (default 1): pipelines sharing the machine; a deployments sweep sets it for its
  variants, a user running two `axpo run` side by side can set it to 2 (or pin each with `taskset`).

AXPO_TORCH_THREADS, when set, is every torch process's (and task's) thread count, whatever the above.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

THREADS_ENV = "AXPO_TORCH_THREADS"  # the explicit override: threads per torch process or task
RUNS_ENV = "AXPO_CONCURRENT_RUNS"  # pipelines running at once on this machine
CGROUP_ROOT = Path("/sys/fs/cgroup")
# What the entry points export for the processes they start (torch reads them at import).
EXPORTED = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
# MKL would otherwise cap the count torch reads at import to its idea of the physical cores, where
# torch.set_num_threads turns that off (mkl_set_dynamic(0)): the same count either way.
MKL_FIXED = {"MKL_DYNAMIC": "FALSE"}

_process_threads: int | None = None  # what configure_process chose; task_threads restores it
_interop_set = False


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name}={value!r}: expected a whole number >= 1")
    return number


def _quota_cores(quota: str, period: str) -> int | None:
    """floor(quota / period), at least 1; None for no limit ("max", -1) or unreadable values."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None  # "max" (v2) or garbage
    if q <= 0 or p <= 0:  # v1 writes -1 for no limit
        return None
    # floor: a 1.5-CPU quota runs 2 spinning threads into throttling; 1 thread stays within it
    return max(1, math.floor(q / p))


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ancestors(root: Path, cgroup_path: str) -> list[Path]:
    """root/a/b, root/a, root: a parent's quota limits every cgroup below it."""
    parts = [p for p in cgroup_path.strip().split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int | None:
    """The tightest CPU quota (whole cores, at least 1) over this process's cgroup and its ancestors, v2 and
    v1; None when none is set or nothing is readable. `proc_cgroup` is /proc/self/cgroup's text (read when
    None). Inside a container the cgroup namespace makes the process's path "/", so root's own files count;
    a path that does not exist under root (a v1 mount of the container's subtree) falls back to its
    ancestors, root included."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    limits: list[int] = []
    for line in proc_cgroup.splitlines() or ["0::/"]:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # v2: one unified hierarchy (under unified/ on a hybrid v1 + v2 host)
            for folder in [*_ancestors(root, path), *_ancestors(root / "unified", path)]:
                text = _read(folder / "cpu.max")
                if text and len(text.split()) == 2:
                    limits.append(_quota_cores(*text.split()) or 0)
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            for mount in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                for folder in _ancestors(mount, path):
                    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
                    if quota is not None and period is not None:
                        limits.append(_quota_cores(quota, period) or 0)
    found = [n for n in limits if n > 0]  # 0 stands for "no limit here"
    return min(found) if found else None


def available_cores(
    root: Path = CGROUP_ROOT, affinity: int | None = None, proc_cgroup: str | None = None
) -> int:
    """The cores this process may really use: its CPU affinity, capped by its cgroup's quota; at least 1."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    return max(1, min(affinity, limit) if limit is not None else affinity)


def concurrent_runs(env: Mapping[str, str] | None = None) -> int:
    """AXPO_CONCURRENT_RUNS: how many pipelines share this machine (default 1)."""
    return _positive_int(os.environ if env is None else env, RUNS_ENV) or 1


def torch_threads(
    concurrent: int = 1, *, cores: int | None = None, env: Mapping[str, str] | None = None
) -> int:
    """Threads for one of `concurrent` torch workers running at once in this pipeline (see the module's
    docstring); AXPO_TORCH_THREADS wins."""
    env = os.environ if env is None else env
    override = _positive_int(env, THREADS_ENV)
    if override is not None:
        return override
    cores = available_cores() if cores is None else cores
    return max(1, cores // (max(1, concurrent) * concurrent_runs(env)))


def _set_torch(threads: int) -> None:
    global _interop_set
    import torch

    torch.set_num_threads(threads)
    if not _interop_set:
        _interop_set = True
        try:  # allowed once, and only before any inter-op work started
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass


def configure_process(concurrent: int = 1) -> int:
    """At a process entry that runs torch (the CLI, a pipeline run, a torchrun rank): choose the count,
    export it for the processes this one starts, and set torch's if torch is loaded (else torch reads the
    exported variables when it is imported, so the CLI need not import it). Returns the count."""
    global _process_threads
    threads = torch_threads(concurrent)
    _process_threads = threads
    os.environ.update({**{name: str(threads) for name in EXPORTED}, **MKL_FIXED})
    if "torch" in sys.modules:
        _set_torch(threads)
    return threads


@contextmanager
def task_threads(concurrent: int) -> Iterator[int]:
    """Inside a task that runs as one of `concurrent` at once, in this process's threads (Prefect's thread
    runner) or in worker processes (Dask, Ray). Torch's count is per thread under OpenMP, but a thread
    that starts later copies the last count set, so it is put back to the process's afterwards."""
    import torch

    threads = torch_threads(concurrent)
    # A thread's first parallel op copies the last count any thread set, over its own: make that happen
    # first (get_num_threads does), or a sibling task's restore below could land in between.
    torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(_process_threads or torch_threads())


def evaluation_workers(task_runner: str, max_workers: int) -> int:
    """How many evaluate tasks run at once: `max_workers` on threads and Dask; Ray ignores it and runs one
    per CPU of the node."""
    return available_cores() if task_runner == "ray" else max_workers


def child_env(concurrent: int, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for `concurrent` torch processes this one starts at once (e.g. torchrun ranks):
    their thread count exported, so that they start with it before their own `configure_process`."""
    env = dict(os.environ if env is None else env)
    threads = torch_threads(concurrent, env=env)
    return {**env, **{name: str(threads) for name in EXPORTED}, **MKL_FIXED}
