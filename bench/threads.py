"""Thread oversubscription, measured side by side in one run: P torch processes at once (default 2, as two
torchrun ranks, two rollout shards or two pipelines on one machine), each running the same fixed workload,
a tiny-s forward/backward on a fixed batch.

- default: torch's own thread count in each process (every CPU the process sees);
- shared:  the count axpo_core.threads chooses for P processes at once (its cores // P).

The processes load the model and warm up first, then start the timed steps together; a mode's time is
its slowest process's. Modes alternate within each repeat (the median of the repeats is printed), so a
drift in the machine's load falls on both. Prints `oversubscribed_vs_shared` = default time / shared time
(> 1: the shared count is faster), and `solo_s`, one process alone at its full count, for scale.

Usage: python bench/threads.py [--processes 2] [--steps 4] [--repeats 2] [--batch 8] [--length 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = (  # cleared for the workers: each mode sets its own count, or none
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "MKL_DYNAMIC", "AXPO_TORCH_THREADS", "AXPO_CONCURRENT_RUNS",
)  # fmt: skip


def worker(args: argparse.Namespace) -> None:
    """One process: load, warm up, say ready, wait for "go" on stdin, run the steps, print the seconds."""
    if args.mode == "shared":
        from axpo_core.threads import configure_process

        configure_process(args.processes)  # as each of P ranks or shards does
    import torch

    from axpo_core.models.loader import load_policy

    torch.manual_seed(0)
    model = load_policy(args.worker, device="cpu").model.train()
    vocab = model.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.length))

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, lazy initialisation
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


def side_by_side(model: Path, mode: str, processes: int, args: argparse.Namespace) -> tuple[float, int]:
    """`processes` workers started together; the slowest one's seconds, and their thread count."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    cmd = [
        sys.executable, __file__, "--worker", str(model), "--mode", mode, f"--processes={processes}",
        f"--steps={args.steps}", f"--batch={args.batch}", f"--length={args.length}",
    ]  # fmt: skip
    procs = [
        subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(processes)
    ]
    threads = {json.loads(p.stdout.readline())["threads"] for p in procs}  # type: ignore[union-attr]
    for p in procs:  # all loaded and warm: start the timed steps together
        p.stdin.write("go\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
    seconds = [json.loads(p.stdout.readline())["seconds"] for p in procs]  # type: ignore[union-attr]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"a {mode} worker failed with code {p.returncode}")
    return max(seconds), threads.pop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["default", "shared"], default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from axpo_core.models.tiny import build_tiny
    from axpo_core.threads import available_cores, torch_threads

    model = build_tiny("tiny-s", Path(tempfile.mkdtemp(prefix="axpo-threads-")) / "tiny-s", pretrain_steps=0)
    times: dict[str, list[float]] = {"default": [], "shared": []}
    threads: dict[str, int] = {}
    for r in range(args.repeats):
        for mode in ("default", "shared") if r % 2 == 0 else ("shared", "default"):
            seconds, threads[mode] = side_by_side(model, mode, args.processes, args)
            times[mode].append(seconds)
    solo, solo_threads = side_by_side(model, "default", 1, args)
    default, shared = statistics.median(times["default"]), statistics.median(times["shared"])
    print(f"cores = {available_cores()}")  # affinity and cgroup quota
    print(f"processes = {args.processes}")  # side by side
    print(f"shared_threads = {torch_threads(args.processes, env={})}")
    print(f"workload = {args.steps} forward/backward steps of tiny-s on {args.batch} x {args.length} tokens")
    for mode, median in (("default", default), ("shared", shared)):
        runs = ", ".join(f"{s:.2f}" for s in times[mode])
        print(f"{mode}: {threads[mode]} threads each, repeats {runs} s")
        print(f"{mode}_s = {median:.4g}")
    print(f"solo: one process alone, {solo_threads} threads")
    print(f"solo_s = {solo:.4g}")
    print(f"oversubscribed_vs_shared = {default / shared:.3f}")


if __name__ == "__main__":
    main()
