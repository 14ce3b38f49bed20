"""Rollouts sharded over workers (issue 17): per-request seeds make a trajectory independent of the batch,
the shard and the worker that ran it; threads and a local Ray cluster give the same results."""

from __future__ import annotations

import importlib.util

import pytest

from axpo_core.config import SamplingConfig
from axpo_core.envs.suites import get_suite
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.transformers_backend import TransformersGenerator

SUITES = ["zoom_detail", "python_count", "control_shapes"]
HAS_RAY = all(importlib.util.find_spec(m) is not None for m in ("ray", "prefect_ray"))


def _engine(policy, chat, config, batch_size: int, sampling: SamplingConfig) -> RolloutEngine:
    rollout = config.rollout.model_copy(update={"max_new_tokens_per_turn": 24, "batch_size": batch_size})
    generator = TransformersGenerator(policy, batch_size=batch_size)
    return RolloutEngine(generator, chat, rollout, config.tools, sampling)


def _fields(trajectories) -> list[tuple]:
    return [(t.question_id, t.sample_id, t.token_ids, t.reward, t.text, t.tool_calls) for t in trajectories]


def assert_same_trajectories(a, b) -> None:
    """Same tokens, texts, rewards and tool calls; log-probs equal up to float noise (a row's matmuls may
    round differently in a batch of another shape)."""
    assert _fields(a) == _fields(b)
    for x, y in zip(a, b):
        assert max((abs(p - q) for p, q in zip(x.logprobs, y.logprobs)), default=0.0) <= 1e-4


@pytest.mark.parametrize(
    "sampling", [SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.7, top_p=0.8, top_k=20)]
)
def test_seeded_rollouts_do_not_depend_on_the_split_or_the_batch(policy, chat, config, sampling):
    questions = [q for name in SUITES for q in get_suite(name).generate(2, 0)]
    whole = _engine(policy, chat, config, 8, sampling).rollout(questions, group_size=2, seed=11)
    halves = [
        t
        for part in (questions[:3], questions[3:])
        for t in _engine(policy, chat, config, 3, sampling).rollout(part, group_size=2, seed=11)
    ]
    assert_same_trajectories(whole, halves)
    other = _engine(policy, chat, config, 8, sampling).rollout(questions, group_size=2, seed=12)
    assert [t.token_ids for t in other] != [t.token_ids for t in whole]  # the seed does matter
    # two samples of one question differ: the seed is per request, not per batch
    assert whole[0].token_ids != whole[1].token_ids


# ---- the round flow, sharded over workers (Prefect test server; real tasks, storage and tiny model) ----

SMALL = [
    "rollout.group_size=2",
    "rollout.max_new_tokens_per_turn=24",
    "training.questions_per_round=3",
    "training.pool_size=6",
    "evaluation.questions=2",
    "evaluation.samples=2",
    "evaluation.k=[1,2]",
    "evaluation.benchmarks=[control_shapes,zoom_detail]",
]
# RLTF resamples whatever the tiny base model got wrong: the round's resample step has requests to shard.
ARM = {"stage": "SFT+RLTF", "algo": "rltf", "overrides": {"rltf_revisions": 1}}


@pytest.fixture(scope="module")
def prefect_server():
    from flows.runtime import configure_prefect

    configure_prefect()
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=240):
        yield


def one_round(tmp_path, workers: int, runner: str = "threads", extra: tuple[str, ...] = ()):
    """One RL round from the base model with `workers` rollout shards (and `extra` overrides): its stored
    rollouts and continuations, and the update's metrics."""
    from axpo_core.config import load_config
    from axpo_core.rollout.serialization import trajectories_from_bytes
    from axpo_core.runs import Arm
    from axpo_core.training.data import question_pool_ids
    from flows.runtime import make_context
    from flows.training import axpo_round, on_shard_runner
    from tasks.stages import build_model

    overrides = [f"rollout.num_workers={workers}", f"pipeline.task_runner={runner}", *extra]
    root = f"file://{tmp_path}/{runner}{workers}{len(extra)}"
    config = load_config(None, [*SMALL, f"storage.root={root}", *overrides])
    ctx = make_context(config, "round")
    base = build_model(ctx, "tiny-s")
    arm = Arm(**ARM)
    record = on_shard_runner(axpo_round, config)(ctx, arm, 1, base, base, question_pool_ids(config))
    store, rollouts = ctx.store, ctx.layout("tiny-s", arm.slug).base + "/rollouts/round-1"
    originals = trajectories_from_bytes(store.get_bytes(rollouts + ".jsonl.pkl"))
    continuations = trajectories_from_bytes(store.get_bytes(rollouts + ".resampled.pkl"))
    # the update's cost differs: wall times (seconds_*) from run to run, and the tokens it forwarded
    # (tokens_update_*) with how its micro-batches were cut (one process: by question; a rank: its rows)
    cost = ("seconds_", "tokens_update_")
    metrics = {k: v for k, v in record.metrics.items() if not k.split("/")[-1].startswith(cost)}
    return originals, continuations, metrics


def assert_same_round(a, b) -> None:
    (originals_a, continuations_a, metrics_a), (originals_b, continuations_b, metrics_b) = a, b
    assert_same_trajectories(originals_a, originals_b)
    assert_same_trajectories(continuations_a, continuations_b)
    assert metrics_a.keys() == metrics_b.keys()
    # the update reads the sampler's log-probs (old log-probs of the ratio), equal up to that same float noise
    close = {k: pytest.approx(v, rel=1e-4, abs=1e-6) for k, v in metrics_b.items()}
    differ = {k: (a, metrics_b[k]) for k, a in metrics_a.items() if a != close[k]}
    assert not differ


@pytest.mark.slow
def test_two_rollout_workers_give_the_trajectories_of_one(prefect_server, tmp_path):
    one = one_round(tmp_path, 1)
    two = one_round(tmp_path, 2)
    assert len(one[0]) == 3 * 2 and one[1], "the round must resample something to shard"
    assert_same_round(one, two)
    shards = sorted(p.name for p in (tmp_path / "threads20").rglob("round-1.*shard-*.pkl"))
    assert shards == [
        "round-1.resampled.shard-0-of-2.pkl",
        "round-1.resampled.shard-1-of-2.pkl",
        "round-1.shard-0-of-2.jsonl.pkl",
        "round-1.shard-1-of-2.jsonl.pkl",
    ]


@pytest.mark.slow
def test_the_update_task_runs_sharded_under_torchrun(prefect_server, tmp_path):
    """training.world_size 2: the round's update task runs two FSDP2 ranks (gloo) and logs the metrics of
    the one-process update (test_distributed.py compares the weights)."""
    one = one_round(tmp_path, 1)
    two = one_round(tmp_path, 1, extra=("training.world_size=2",))
    assert_same_round(one, two)
    checkpoint = next((tmp_path / "threads11").rglob("checkpoints/round-1"))
    assert (checkpoint / "optimizer").is_dir() and (checkpoint / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def local_ray():
    """A fresh local Ray cluster on 127.0.0.1 with 2 CPUs; RayTaskRunner uses it (it is initialised)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=200 * 2**20,
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="needs the ray extra: pip install -e '.[ray]'")
def test_ray_evaluation_and_sharded_rollouts_equal_threads(prefect_server, local_ray, tmp_path):
    from axpo_core.config import load_config
    from flows.evaluation import run_evaluation
    from flows.runtime import make_context
    from tasks.stages import build_model

    def evaluation(runner: str):
        root = f"storage.root=file://{tmp_path}/eval-{runner}"
        config = load_config(None, [*SMALL, root, f"pipeline.task_runner={runner}"])
        ctx = make_context(config, "eval")
        results = run_evaluation(ctx, {"Base": build_model(ctx, "tiny-s")})
        return [(e.benchmark, e.metrics, [r["text"] for r in ctx.store.get_jsonl(e.uri)]) for e in results]

    import ray

    assert evaluation("ray") == evaluation("threads")
    assert_same_round(one_round(tmp_path, 2, "ray"), one_round(tmp_path, 1, "threads"))
    # they did run on Ray: 1 evaluate task (Base, both benchmarks in one run), 2 rollout and 2 resample shards
    names = [e.get("name", "") for e in ray.timeline()]
    assert sum(n.endswith("_run_prefect_task") for n in names) == 5, sorted(set(names))


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="needs the ray extra: pip install -e '.[ray]'")
def test_pipeline_on_ray_with_two_rollout_workers_equals_the_default(prefect_server, local_ray, tmp_path):
    """The issue's check: `rollout.num_workers=2 pipeline.task_runner=ray` gives the default run's table
    and every RL round's diagnostics (wall times aside)."""
    from axpo_core.config import load_config
    from flows.pipeline import pipeline

    sizes = [o for o in SMALL if not o.startswith("rollout.max_new_tokens")]  # SFT's oracles need the default
    small = [*sizes, "training.rounds=1", "training.filter_samples=2", "sft.examples=16", "sft.epochs=1"]

    def run(label: str, *extra: str):
        config = load_config(None, [*small, f"storage.root=file://{tmp_path}/{label}", *extra])
        result = pipeline(config, "cmp")
        rounds = {
            stage: [{k: v for k, v in r.items() if not k.startswith("seconds_")} for r in records]
            for stage, records in result.round_metrics.items()
        }
        return result.table_markdown, rounds

    ray_table, ray_rounds = run("ray", "rollout.num_workers=2", "pipeline.task_runner=ray")
    table, rounds = run("default")
    assert ray_table == table
    assert ray_rounds.keys() == rounds.keys() == {"SFT+GRPO", "SFT+AXPO"}
    for stage, records in rounds.items():
        # up to the sampler's float noise in the update's old log-probs (assert_same_round)
        assert [pytest.approx(r, rel=1e-4, abs=1e-6) for r in records] == ray_rounds[stage], stage
