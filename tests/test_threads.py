"""Torch's thread count (axpo_core/threads.py): the cores a process really has (affinity, cgroup quota)
divided among the torch workers the pipeline runs at once; AXPO_TORCH_THREADS wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from axpo_core.threads import (
    available_cores,
    cgroup_cpu_limit,
    child_env,
    evaluation_workers,
    torch_threads,
)

ROOT = Path(__file__).resolve().parent.parent
V2_ROOT = "0::/\n"


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text + "\n")


# --- cgroup quotas -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [
        ("max 100000", None),
        ("200000 100000", 2),
        ("400000 100000", 4),
        ("150000 100000", 1),  # floor: 1.5 CPUs of quota run one thread
        ("50000 100000", 1),  # at least one
    ],
)
def test_cgroup_v2_quota_is_whole_cores_at_least_one(tmp_path, cpu_max, cores):
    write(tmp_path, cpu__max=cpu_max)
    assert cgroup_cpu_limit(tmp_path, V2_ROOT) == cores


def test_a_parent_cgroups_quota_limits_its_children(tmp_path):
    write(tmp_path / "a", cpu__max="300000 100000")
    write(tmp_path / "a" / "b", cpu__max="max 100000")
    assert cgroup_cpu_limit(tmp_path, "0::/a/b\n") == 3
    write(tmp_path / "a" / "b", cpu__max="100000 100000")
    assert cgroup_cpu_limit(tmp_path, "0::/a/b\n") == 1


def test_cgroup_v2_under_unified_on_a_hybrid_host(tmp_path):
    write(tmp_path / "unified", cpu__max="200000 100000")
    assert cgroup_cpu_limit(tmp_path, "1:cpu:/\n0::/\n") == 2


@pytest.mark.parametrize(("quota", "cores"), [("-1", None), ("400000", 4), ("250000", 2)])
def test_cgroup_v1_cfs_quota(tmp_path, quota, cores):
    write(tmp_path / "cpu,cpuacct", cpu__cfs_quota_us=quota, cpu__cfs_period_us="100000")
    assert cgroup_cpu_limit(tmp_path, "3:cpu,cpuacct:/\n") == cores


def test_cgroup_v1_path_outside_the_mounted_subtree_falls_back_to_the_mount(tmp_path):
    """A container without a cgroup namespace: /proc/self/cgroup names the host's path, but the mount holds
    the container's own cgroup."""
    write(tmp_path / "cpu", cpu__cfs_quota_us="200000", cpu__cfs_period_us="100000")
    assert cgroup_cpu_limit(tmp_path, "4:cpu:/docker/0123abcd\n") == 2


def test_no_cgroup_files_means_no_limit(tmp_path):
    assert cgroup_cpu_limit(tmp_path, "0::/user.slice/session-1.scope\n") is None
    assert cgroup_cpu_limit(tmp_path, "") is None


def test_available_cores_is_the_smaller_of_affinity_and_quota(tmp_path):
    assert available_cores(tmp_path, affinity=8, proc_cgroup=V2_ROOT) == 8  # no quota
    write(tmp_path, cpu__max="200000 100000")
    assert available_cores(tmp_path, affinity=8, proc_cgroup=V2_ROOT) == 2
    assert available_cores(tmp_path, affinity=1, proc_cgroup=V2_ROOT) == 1
    write(tmp_path, cpu__max="10000 100000")
    assert available_cores(tmp_path, affinity=4, proc_cgroup=V2_ROOT) == 1


def test_available_cores_here_follows_the_affinity():
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


# --- the division ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("concurrent", "cores", "env", "threads"),
    [
        (1, 8, {}, 8),
        (2, 8, {}, 4),  # two torchrun ranks, two rollout shards...
        (3, 8, {}, 2),
        (4, 2, {}, 1),  # never below one
        (2, 8, {"AXPO_CONCURRENT_RUNS": "2"}, 2),  # two pipelines on the machine, two workers each
        (1, 2, {"AXPO_CONCURRENT_RUNS": "2"}, 1),
        (4, 2, {"AXPO_TORCH_THREADS": "3"}, 3),  # the override wins
        (1, 64, {"AXPO_TORCH_THREADS": "1", "AXPO_CONCURRENT_RUNS": "8"}, 1),
    ],
)
def test_threads_divide_the_cores_among_concurrent_workers(concurrent, cores, env, threads):
    assert torch_threads(concurrent, cores=cores, env=env) == threads


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_a_bad_override_is_refused(bad):
    with pytest.raises(ValueError, match="AXPO_TORCH_THREADS"):
        torch_threads(cores=4, env={"AXPO_TORCH_THREADS": bad})
    with pytest.raises(ValueError, match="AXPO_CONCURRENT_RUNS"):
        torch_threads(cores=4, env={"AXPO_CONCURRENT_RUNS": bad})


def test_child_env_exports_the_share_of_each_child():
    env = child_env(2, env={"PATH": "/bin", "AXPO_TORCH_THREADS": "3"})
    assert (env["OMP_NUM_THREADS"], env["MKL_NUM_THREADS"], env["PATH"]) == ("3", "3", "/bin")
    expected = str(max(1, available_cores() // 2))
    assert child_env(2, env={})["OMP_NUM_THREADS"] == expected


def test_evaluation_workers_on_each_runner():
    assert evaluation_workers("threads", 3) == 3
    assert evaluation_workers("dask", 2) == 2
    assert evaluation_workers("ray", 2) == available_cores()  # Ray runs one task per CPU


# --- real processes ----------------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any thread setting (the suite's own, under xdist, included)."""
    drop = {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "AXPO_TORCH_THREADS", "AXPO_CONCURRENT_RUNS"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def run_python(code: str, env: dict[str, str], cpus: set[int] | None = None) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1].split()


CLI_THEN_TORCH = (
    "import os, sys; from flows.cli import main; main(['run', '--dry-run']); import torch; "
    "print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])"
)


def test_the_cli_entry_sets_torchs_threads_to_the_affinity():
    """`axpo` on one CPU (as `taskset -c N` runs it): torch, imported by the command afterwards, has one
    thread, and the processes it starts are told so."""
    one = {sorted(os.sched_getaffinity(0))[0]}
    assert run_python(CLI_THEN_TORCH, clean_env(), cpus=one) == ["1", "1"]


def test_the_cli_entry_shares_the_cores_between_concurrent_runs():
    """Two pipelines on this machine (AXPO_CONCURRENT_RUNS=2): each gets half of the cores, where torch alone
    takes them all."""
    expected = str(max(1, available_cores() // 2))
    assert run_python(CLI_THEN_TORCH, clean_env(AXPO_CONCURRENT_RUNS="2")) == [expected, expected]
    assert run_python(CLI_THEN_TORCH, clean_env(AXPO_TORCH_THREADS="3")) == ["3", "3"]


def test_a_torchrun_rank_starts_with_its_share():
    """The environment `launch` gives W ranks: torch in each starts with cores // W threads, and the rank's
    own `configure_process` (LOCAL_WORLD_SIZE from torchrun) keeps it."""
    expected = str(max(1, available_cores() // 2))
    code = (
        "import torch; before = torch.get_num_threads(); from axpo_core.threads import configure_process; "
        "print(before, configure_process(2), torch.get_num_threads())"
    )
    assert run_python(code, child_env(2, env=clean_env())) == [expected] * 3


def test_tasks_in_threads_share_the_cores_and_give_them_back():
    """Prefect's thread runner: two tasks side by side each get half of the process's threads, even when one
    gives its threads back before the other has run an op (a thread's first op copies the count last set by
    any thread); afterwards the main thread and a thread started later have the process's count again."""
    cores = available_cores()
    code = """
import threading, torch
from axpo_core.threads import configure_process, task_threads
configure_process()
a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
inside = {}
def a():
    with task_threads(2):
        torch.ones(64, 64) @ torch.ones(64, 64)
        inside["a"] = torch.get_num_threads()
        a_in.set()
        b_in.wait()
    a_out.set()
def b():
    a_in.wait()
    with task_threads(2):
        b_in.set()
        a_out.wait()  # a has restored the process's count by now
        torch.ones(64, 64) @ torch.ones(64, 64)
        inside["b"] = torch.get_num_threads()
workers = [threading.Thread(target=a), threading.Thread(target=b)]
[w.start() for w in workers]
[w.join() for w in workers]
later = []
fresh = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
fresh.start()
fresh.join()
print(inside["a"], inside["b"], torch.get_num_threads(), *later)
"""
    half = str(max(1, cores // 2))
    assert run_python(code, clean_env()) == [half, half, str(cores), str(cores)]
