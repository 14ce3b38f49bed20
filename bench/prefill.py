"""Shared prefills vs one prefill per request, side by side in one process (the transformers backend).

A round's rollout sends each question's prompt N times, and AXPO's resample each prefix K times; with
`share_prefill` the generator prefills each distinct context once and copies its KV cache to the group.

1. prefill_shared_vs_flat: rollout tokens/s, shared over unshared, at make run's rollout shape (the embedded
   config: B = training.questions_per_round questions x N = rollout.group_size samples, its tools, turns
   and token limits), same questions and seeds on both sides. Goal > 1.
2. continuation_shared_vs_flat: the same for K = algorithm.continuations_per_prefix continuations of each
   source's first-turn midpoint (one source per question), tokens are the continuations' new ones.

Both sides must give the same trajectories (`same_tokens`, `same_continuations`): the test is
tests/test_generation.py, this only reports it. The model is the scale's untrained build (as
bench/rollout_throughput.py): its turns run to the token limit, so decoding weighs more than in a trained
policy's shorter answers, and the figure is a lower bound for the prefill's share.

Usage: python bench/prefill.py [--scale tiny-s] [--repeats 3] [--threads 1] [--set rollout.group_size=8 ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from axpo_core.config import load_config
from axpo_core.envs.suites import get_suite
from axpo_core.models.tiny import build_tiny
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.factory import load_configured_policy
from axpo_core.rollout.trajectory import ContinuationRequest
from axpo_core.rollout.transformers_backend import TransformersGenerator

SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="tiny-s")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], help="config override, a.b=value")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    config = load_config(None, args.set)
    folder = build_tiny(args.scale, tempfile.mkdtemp(prefix="axpo-bench-"), seed=0, pretrain_steps=0)
    policy = load_configured_policy(config, folder)
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    engines = {
        share: RolloutEngine(
            TransformersGenerator(policy, batch_size=config.rollout.batch_size, share_prefill=share),
            chat,
            config.rollout,
            config.tools,
        )
        for share in (False, True)
    }
    suites = config.training.suites
    count, group = config.training.questions_per_round, config.rollout.group_size
    questions = [get_suite(suites[i % len(suites)]).generate(1, seed=1 + i)[0] for i in range(count)]
    qmap = {q.question_id: q for q in questions}

    def rollout(share: bool) -> list:
        return engines[share].rollout(questions, group_size=group, seed=SEED)

    sources = [t for t in rollout(False) if t.sample_id == 0 and t.num_policy_tokens >= 2]
    k = config.algorithm.continuations_per_prefix
    requests = [
        ContinuationRequest(s, s.prompt_len + s.num_policy_tokens // 2, k, f"{s.question_id}/c", group)
        for s in sources
    ]
    prefix_tokens = k * sum(r.prefix_tokens - r.source.prompt_len for r in requests)

    def continuation(share: bool) -> list:
        return engines[share].continue_from(requests, qmap, seed=SEED)

    rates: dict[tuple[str, bool], list[float]] = {}
    results: dict[tuple[str, bool], list] = {}
    for repeat in range(args.repeats + 1):  # the first pass warms up, and is not timed
        for name, run, extra in (("rollout", rollout, 0), ("continuation", continuation, prefix_tokens)):
            for share in (False, True):  # alternated: the machine's load falls on both sides alike
                start = time.perf_counter()
                trajectories = run(share)
                seconds = time.perf_counter() - start
                results[name, share] = trajectories
                tokens = sum(t.num_policy_tokens for t in trajectories) - extra
                if repeat:
                    rates.setdefault((name, share), []).append(tokens / seconds)

    def same(name: str) -> bool:
        pairs = zip(results[name, False], results[name, True])
        return all(a.token_ids == b.token_ids for a, b in pairs)

    median = {key: statistics.median(values) for key, values in rates.items()}
    print(
        f"model = {args.scale} ({sum(p.numel() for p in policy.model.parameters()) / 1e6:.2f}M), "
        f"device = {policy.device}, threads = {torch.get_num_threads()}, questions = {count}, "
        f"group = {group}, max_new_tokens_per_turn = {config.rollout.max_new_tokens_per_turn}, "
        f"max_turns = {config.rollout.max_turns}, continuations = {len(requests)} x {k}"
    )
    print(f"flat_rollout_tokens_per_s = {median['rollout', False]:.1f}")
    print(f"shared_rollout_tokens_per_s = {median['rollout', True]:.1f}")
    print(f"prefill_shared_vs_flat = {median['rollout', True] / median['rollout', False]:.3f}")
    print(f"same_tokens = {same('rollout')}")
    print(f"continuation_shared_vs_flat = {median['continuation', True] / median['continuation', False]:.3f}")
    print(f"same_continuations = {same('continuation')}")


if __name__ == "__main__":
    main()
