"""An RL round and one stage's evaluation, this checkout against an older one, side by side in one run.

Each figure runs in its own fresh process, alternating between the two checkouts (before, after, before,
after, ...), so a drift in the machine's load falls on both; both load the same checkpoint with the same
config file (each checkout's own `configs/tiny.yaml` unless --config) and one torch thread.

- `grpo_round_s`, `axpo_round_s`: `RLTrainer.run_round` with `algorithm.name` grpo / axpo, in-process (the
  rollout, AXPO's resample, the update and the weight sync; no Prefect, no storage): round 1 warms up,
  rounds 2..R+1 are timed and averaged.
- `eval_stage_s`: the nine benchmarks of one stage, as the pipeline's evaluation runs them: one engine run
  over all of them where the checkout has `evaluate_benchmarks`, else (older checkouts) one seeded engine
  per benchmark, as the old per-benchmark evaluate task built it. After a warm-up on one question per
  benchmark, as the pipeline's stages after the first run warm (they share its process);
  `eval_stage_cold_s`: the same stage in a fresh process, as the first stage runs.

The checkpoint must be one that both checkouts load (a Qwen3-VL folder: any run's checkpoints/sft). The
rounds' rollouts differ a little between the checkouts after round 1 (the updates differ by float
rounding), so a round's time is compared on the same config, seed and starting weights, not on identical
trajectories.

Usage: python bench/vs_before.py --before DIR --checkpoint DIR [--repeats 2] [--rounds 3] [--config FILE]
       (make DIR with `git worktree add --detach DIR <commit>`)
Prints one line per run, then `name_before`, `name_after` (medians of the repeats) and `name_speedup`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("grpo_round_s", "axpo_round_s", "eval_stage_s", "eval_stage_cold_s")


def worker(args: argparse.Namespace) -> None:
    """One figure on the checkout this process imports (PYTHONPATH), printed as `name = seconds`."""
    import torch

    torch.set_num_threads(1)
    from axpo_core.config import load_config
    from axpo_core.rollout.factory import build_engine

    config_file = args.config or "configs/tiny.yaml"
    if args.figure in ("grpo_round_s", "axpo_round_s"):
        from axpo_core.training.loop import RLTrainer

        algorithm = args.figure.split("_")[0]
        config = load_config(config_file, [f"algorithm.name={algorithm}"])
        engine, policy = build_engine(config, model_path=args.checkpoint)
        trainer = RLTrainer(config, policy, engine)
        trainer.run_round(1)  # warm-up
        start = time.perf_counter()
        for round_index in range(2, args.rounds + 2):
            trainer.run_round(round_index)
        print(f"{args.figure} = {(time.perf_counter() - start) / args.rounds:.4f}")
        return
    import hashlib

    from axpo_core.evaluation import runner

    config = runner.evaluation_config(load_config(config_file, []))
    ev = config.evaluation
    benchmarks = {name: runner.benchmark_questions(config, name) for name in ev.benchmarks}

    def stage(benchmarks: dict) -> float:
        start = time.perf_counter()
        if hasattr(runner, "evaluate_benchmarks"):
            engine, _ = build_engine(config, model_path=args.checkpoint)
            runner.evaluate_benchmarks(engine, benchmarks, config.seed, ev.samples, ev.k)
        else:  # before 2026-12-08: one evaluate task per benchmark, its engine seeded by the benchmark
            for name, questions in benchmarks.items():
                seed = int(hashlib.sha256(f"{config.seed}:{name}".encode()).hexdigest()[:8], 16)
                engine, _ = build_engine(config, model_path=args.checkpoint, seed=seed)
                runner.evaluate(engine, name, questions, ev.samples, ev.k)
        return time.perf_counter() - start

    # The pipeline's stages evaluate in one process, so only the first pays the one-time costs (the search
    # index, the sandbox's isolation probe, torch's first calls): warm them on one question per benchmark.
    if args.figure == "eval_stage_s":
        stage({name: questions[:1] for name, questions in benchmarks.items()})
    print(f"{args.figure} = {stage(benchmarks):.4f}")


def run(checkout: Path, figure: str, args: argparse.Namespace) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),
        "OMP_NUM_THREADS": "1",
        "AXPO_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", figure]
    command += ["--checkpoint", args.checkpoint, "--rounds", str(args.rounds)]
    command += ["--config", args.config] if args.config else []
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(f"{figure} = ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{figure} on {checkout} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return float(lines[-1].split("=")[1])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--before", help="the older checkout (a git worktree)")
    parser.add_argument("--checkpoint", required=True, help="a Qwen3-VL checkpoint folder both can load")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up round")
    parser.add_argument("--config", default=None, help="a config file, relative to each checkout")
    parser.add_argument("--figures", nargs="+", default=list(FIGURES), choices=FIGURES)
    parser.add_argument("--worker", choices=FIGURES, dest="figure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.figure:
        worker(args)
        return
    if not args.before:
        parser.error("--before is required")
    sides = {"before": Path(args.before).resolve(), "after": ROOT}
    seconds: dict[tuple[str, str], list[float]] = {}
    for repeat in range(1, args.repeats + 1):
        for figure in args.figures:
            for side, checkout in sides.items():
                value = run(checkout, figure, args)
                seconds.setdefault((figure, side), []).append(value)
                print(f"repeat {repeat}: {figure} {side} = {value:.3f}", flush=True)
    for figure in args.figures:
        before = statistics.median(seconds[(figure, "before")])
        after = statistics.median(seconds[(figure, "after")])
        print(f"{figure}_before = {before:.3f}")
        print(f"{figure}_after = {after:.3f}")
        print(f"{figure}_speedup = {before / after:.2f}")


if __name__ == "__main__":
    main()
