"""Orchestration overhead: one RL round through the Prefect flow (tasks, persisted results, object storage,
model loads by URI) vs the same round as plain function calls in one process (`RLTrainer.run_round`).

Both start from the same tiny-s checkpoint and run the same round (same questions, seeds, sizes). The
Prefect server is started (and a warm-up round run on each side) before timing. Prints
`orchestration_overhead_share = (flow - plain) / flow` (goal <= 0.10 at the tiny default).

Usage: python bench/orchestration_overhead.py [--repeats 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from flows.runtime import configure_prefect

configure_prefect()

from axpo_core.config import load_config  # noqa: E402
from axpo_core.rollout.factory import build_engine  # noqa: E402
from axpo_core.runs import Arm  # noqa: E402
from axpo_core.training.data import question_pool  # noqa: E402
from axpo_core.training.loop import RLTrainer  # noqa: E402
from flows.runtime import in_process_run, make_context  # noqa: E402
from flows.training import axpo_round  # noqa: E402
from tasks.context import load_trainable  # noqa: E402
from tasks.stages import build_model  # noqa: E402


def main() -> None:
    # As `axpo run` runs flows: in this process, on Prefect's ephemeral server (no heartbeat threads).
    with in_process_run():
        measure()


def measure() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="axpo-orch-")
    config = load_config(None, [f"storage.root=file://{root}", *args.overrides])
    arm = Arm(stage="SFT+AXPO", algo="axpo")
    config = arm.config(config)
    pool = [q.question_id for q in question_pool(config)]

    ctx = make_context(config, "bench")
    base = build_model(ctx, config.model.scale)  # also starts the Prefect server

    def plain(round_index: int) -> float:
        policy = load_trainable(ctx, base.uri)  # the flow's update task loads its own copy too
        engine, _ = build_engine(config, policy=policy)
        start = time.perf_counter()
        RLTrainer(config, policy, engine, pool_ids=pool).run_round(round_index)
        return time.perf_counter() - start

    def flow(round_index: int) -> float:
        run_ctx = ctx.model_copy(
            update={"run_name": f"bench-{round_index}-{time.time_ns()}"}
        )  # no cache hits
        start = time.perf_counter()
        axpo_round(run_ctx, arm, round_index, base, base, pool)
        return time.perf_counter() - start

    plain(1), flow(1)  # warm-up: imports, first model load, first flow run
    plain_times, flow_times = [], []
    for _ in range(args.repeats):
        plain_times.append(plain(1))
        flow_times.append(flow(1))
    plain_s, flow_s = statistics.median(plain_times), statistics.median(flow_times)
    print(
        f"round = {config.training.questions_per_round} questions x {config.rollout.group_size} rollouts, "
        f"{config.model.scale}, repeats = {args.repeats}"
    )
    print(f"plain_round_s = {plain_s:.2f}")
    print(f"flow_round_s = {flow_s:.2f}")
    print(f"orchestration_overhead_share = {(flow_s - plain_s) / flow_s:.3f}")


if __name__ == "__main__":
    main()
