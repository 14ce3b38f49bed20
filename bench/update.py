"""The shared-prefix update vs the flat one, same batch, side by side in one process.

update_shared_vs_flat: policy tokens per second of `policy_update` with `training.shared_prefix` on, over
the same with it off (rollout/prefix_tree.py). The batch has make run's shape: B questions × N rollouts
drawn from `config.training.suites` (make run's ten training suites), played by the suites' own oracles
through the real engine (half of each group calls a tool, half answers directly: a trained policy's
lengths, where a random model would write up to its token budget), so prompts, images and tool responses
are those of a round. The AXPO batch adds K continuations of one tool-call prefix per question, as
AXPO's resample writes them (the model's own tokens). The update runs make run's training settings
(2 PPO epochs, mini-batches of 16, micro-batches of 16, the reference's KL term) on a fresh copy of the
weights each time, after one warm-up update of each kind; flat and shared take turns, and the figure is the
median of the per-pair ratios. Threads: axpo_core.threads' choice (--threads overrides).

Usage: python bench/update.py [--scale tiny-s] [--questions 8] [--group 8] [--pairs 3] [--threads T]
The run ends with one `name = value` line per figure.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from axpo_core.algorithms.axpo import axpo_advantages  # noqa: E402
from axpo_core.algorithms.grpo import Scored, grpo_advantages  # noqa: E402
from axpo_core.config import Config, load_config  # noqa: E402
from axpo_core.envs.suites import get_suite  # noqa: E402
from axpo_core.models.loader import Policy  # noqa: E402
from axpo_core.models.tiny import build_tiny  # noqa: E402
from axpo_core.rollout.chat import ChatFormat  # noqa: E402
from axpo_core.rollout.engine import RolloutEngine  # noqa: E402
from axpo_core.rollout.factory import load_configured_policy  # noqa: E402
from axpo_core.rollout.oracle import ScriptedGenerator  # noqa: E402
from axpo_core.rollout.trajectory import ContinuationRequest  # noqa: E402
from axpo_core.rollout.transformers_backend import TransformersGenerator  # noqa: E402
from axpo_core.threads import configure_process  # noqa: E402
from axpo_core.training.update import policy_update  # noqa: E402


def oracle_round(config: Config, chat: ChatFormat, questions: int, group: int):
    """B questions across the training suites, N scripted rollouts each (half with the tool oracle)."""
    rng = random.Random(0)
    suites = config.training.suites
    drawn = [get_suite(suites[i % len(suites)]).generate(1 + i // len(suites), 11)[i // len(suites)]
             for i in range(questions)]
    scripts = {}
    for q in drawn:
        suite = get_suite(q.suite)
        for s in range(group):
            tool = s < group // 2 and q.tool is not None
            scripts[(q.question_id, s)] = suite.oracle(q, rng) if tool else suite.no_tool_oracle(q, rng)
    rollout = config.rollout.model_copy(update={"max_new_tokens_per_turn": 256})
    engine = RolloutEngine(ScriptedGenerator(chat, scripts), chat, rollout, config.tools)
    trajectories = engine.rollout(drawn, group_size=group)
    for t in trajectories:
        t.reward = float(rng.random() < 0.5)
        t.logprobs = [-1.0 if m else 0.0 for m in t.loss_mask]  # a plausible sampler log-prob
    return drawn, trajectories


def axpo_batch(config: Config, policy: Policy, chat: ChatFormat, questions, originals, k: int):
    """K model continuations of each question's first tool-call prefix, scored as AXPO scores them."""
    requests = []
    for q in questions:
        source = next((t for t in originals if t.question_id == q.question_id and t.tool_call_spans), None)
        if source is None:
            continue
        cut = source.tool_call_spans[0][0] + 1  # the prefix ends at the opening tag, as AXPO's
        requests.append(ContinuationRequest(source, cut, k, f"{q.question_id}/p0", 1000))
    rollout = config.rollout.model_copy(update={"max_new_tokens_per_turn": 64})
    engine = RolloutEngine(TransformersGenerator(policy, batch_size=64, seed=0), chat, rollout, config.tools)
    continuations = engine.continue_from(requests, {q.question_id: q for q in questions}, seed=0)
    for t in continuations:
        t.reward = float(t.sample_id % 2)
    return axpo_advantages(originals, continuations, requests, config.algorithm), len(continuations)


def timed_update(policy: Policy, chat, scored: list[Scored], config: Config, shared: bool):
    """Seconds of one `policy_update` on a fresh copy of the weights, and its statistics."""
    trainee = copy.deepcopy(policy.model)
    local = Policy(trainee, policy.tokenizer, policy.image_processor, policy.special, policy.path)
    reference = copy.deepcopy(policy.model).requires_grad_(False)
    training = config.training.model_copy(update={"shared_prefix": shared})
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=training.learning_rate)
    trainee.train()
    start = time.perf_counter()
    stats = policy_update(local, optimizer, scored, config.algorithm, training, chat, reference=reference,
                          group_size=config.rollout.group_size)
    seconds = time.perf_counter() - start
    return seconds, stats


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--scale", default="tiny-s")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--continuations", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the project's)")
    args = parser.parse_args()
    if args.threads:
        os.environ["AXPO_TORCH_THREADS"] = str(args.threads)
    configure_process()
    folder = build_tiny(args.scale, tempfile.mkdtemp(prefix="axpo-bench-"), pretrain_steps=0)
    config = load_config(None, [f"rollout.group_size={args.group}", "model.device=cpu"])
    policy = load_configured_policy(config, folder)
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    questions, originals = oracle_round(config, chat, args.questions, args.group)
    grpo = grpo_advantages(originals, config.algorithm)
    axpo, n_cont = axpo_batch(config, policy, chat, questions, originals, args.continuations)
    prompt = statistics.mean(t.prompt_len for t in originals)
    policy_tokens = statistics.mean(t.num_policy_tokens for t in originals)
    print(f"batch: {len(originals)} rollouts (prompt {prompt:.0f} tokens, {policy_tokens:.0f} policy tokens "
          f"on average, {sum(len(t.images) for t in originals)} images), + {n_cont} AXPO continuations; "
          f"torch threads {torch.get_num_threads()}")
    for shared in (False, True):  # warm-up: first calls pay for lazy initialisation
        timed_update(policy, chat, grpo[: args.group], config, shared)
    figures = {}
    for name, scored in (("grpo", grpo), ("axpo", axpo)):
        ratios, sharing = [], None
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            times = {}
            for shared in order:
                seconds, stats = timed_update(policy, chat, scored, config, shared)
                times[shared] = seconds
                if shared:
                    sharing = stats.flat_tokens / max(1, stats.forwarded_tokens)
            ratios.append(times[False] / times[True])  # same tokens: the tokens/s ratio
            print(f"{name} pair {pair}: flat {times[False]:.2f} s, shared {times[True]:.2f} s")
        figures[f"update_shared_vs_flat_{name}"] = statistics.median(ratios)
        figures[f"update_tokens_flat_over_forwarded_{name}"] = sharing
    figures["update_shared_vs_flat"] = figures["update_shared_vs_flat_grpo"]
    for key, value in figures.items():
        print(f"{key} = {value:.3f}")


if __name__ == "__main__":
    main()
