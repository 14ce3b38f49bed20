"""Scale-out of a round's rollout: the flow's rollout step (flows.training.sharded_rollout) with
`rollout.num_workers` = 1 vs 2 shards on the threads task runner, timed side by side in one run.

Both start from the same tiny-s checkpoint with the same questions and seeds, so they produce the same
trajectories (tests/test_scale_out.py); the Prefect server is started and each side warmed up before timing.
Prints `rollout_2worker_speedup = 1-worker time / 2-worker time` (no goal; a figure below 1 is explained).

Usage: python bench/scale_out.py [--repeats 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from flows.runtime import configure_prefect

configure_prefect()

from prefect import flow  # noqa: E402

from axpo_core.config import load_config  # noqa: E402
from axpo_core.rollout.serialization import trajectories_from_bytes  # noqa: E402
from axpo_core.runs import Arm  # noqa: E402
from axpo_core.training.data import question_pool_ids  # noqa: E402
from flows.runtime import in_process_run, make_context  # noqa: E402
from flows.training import on_shard_runner, sharded_rollout  # noqa: E402
from tasks.context import CheckpointRef, RolloutRef, RunContext  # noqa: E402
from tasks.stages import build_model  # noqa: E402

BELOW_ONE = (
    "on threads both shards share one model in one process: TransformersGenerator serialises generate "
    "calls on a module (its M-RoPE state), and torch's intra-op threads already use the cores; a speedup "
    "needs a model per worker (pipeline.task_runner=dask or ray, a GPU each via rollout.num_gpus)"
)


@flow(name="rollout_only", flow_run_name="rollout_only[{ctx.run_name}]")
def rollout_only(ctx: RunContext, arm: Arm, policy: CheckpointRef, pool_ids: list[str]) -> RolloutRef:
    return sharded_rollout(ctx, arm, 1, policy, pool_ids)


def main() -> None:
    with in_process_run():  # as `axpo run` runs flows: in this process, no heartbeat threads
        measure()


def measure() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="axpo-scale-")
    fixed = [f"storage.root=file://{root}", "pipeline.task_runner=threads"]
    config = load_config(None, [*fixed, *args.overrides])
    arm = Arm(stage="SFT+GRPO", algo="grpo")
    pool = question_pool_ids(config)
    ctx = make_context(config, "bench")
    base = build_model(ctx, config.model.scale)  # also starts the Prefect server

    def timed(workers: int) -> tuple[float, RolloutRef]:
        run_config = config.model_copy(
            update={"rollout": config.rollout.model_copy(update={"num_workers": workers})}
        )
        run_name = f"bench-{workers}-{time.time_ns()}"  # a new run name: no cached result is reused
        run_ctx = ctx.model_copy(update={"config": run_config, "run_name": run_name})
        start = time.perf_counter()
        ref = on_shard_runner(rollout_only, run_config)(run_ctx, arm, base, pool)
        return time.perf_counter() - start, ref

    timed(1), timed(2)  # warm-up: imports, the model load, the first flow runs
    times: dict[int, list[float]] = {1: [], 2: []}
    refs = {}
    for _ in range(args.repeats):
        for workers in (1, 2):
            seconds, refs[workers] = timed(workers)
            times[workers].append(seconds)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    speedup = one / two
    print(
        f"rollout = {config.training.questions_per_round} questions x {config.rollout.group_size} rollouts, "
        f"{config.model.scale}, threads, repeats = {args.repeats}"
    )
    print(f"rollout_1worker_s = {one:.2f}")
    print(f"rollout_2worker_s = {two:.2f}")
    stored = {w: trajectories_from_bytes(ctx.store.get_bytes(ref.uri)) for w, ref in refs.items()}
    same = [t.token_ids for t in stored[1]] == [t.token_ids for t in stored[2]]
    print(f"same_trajectories = {same}")
    print(f"rollout_2worker_speedup = {speedup:.3f}")
    if speedup < 1:
        print(f"below 1: {BELOW_ONE}")


if __name__ == "__main__":
    main()
