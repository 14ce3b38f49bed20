"""Rollout engine throughput, measured side by side in one process.

1. engine_vs_generate: tokens/s of the multi-turn engine (one turn, tools on, log-probs, entropies, masks)
   vs raw batched `model.generate` on the same model, prompts (with images), batch and max length.
   Both sides include what any generate pipeline does per call: image preprocessing and prompt
   tokenisation, then a left-padded batch. Goal >= 0.9.
2. continuation_cost: time per new token, continuing from a prefix (prefix prefilled once) vs generating
   from the prompt alone; the prefix costs one prefill, never a token-by-token decode. Goal <= 1.1.
   Both sides decode exactly `--new-tokens` per row (stop ids off for this part): with sampled lengths,
   a batch's time follows its longest row and the ratio would measure length spread, not the prefix.

Usage: python bench/rollout_throughput.py [--scale tiny-s] [--batch 16] [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from axpo_core.config import SamplingConfig, load_config
from axpo_core.envs.suites import get_suite
from axpo_core.models.loader import load_policy
from axpo_core.models.tiny import build_tiny
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.logprobs import pack, reset_rope_cache
from axpo_core.rollout.trajectory import ContinuationRequest
from axpo_core.rollout.transformers_backend import TransformersGenerator


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="tiny-s")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    config = load_config(
        None,
        [
            f"rollout.max_new_tokens_per_turn={args.new_tokens}",
            "rollout.max_turns=1",
            f"rollout.batch_size={args.batch}",
            "rollout.max_total_tokens=4096",
        ],
    )
    folder = build_tiny(args.scale, tempfile.mkdtemp(prefix="axpo-bench-"), seed=0, pretrain_steps=0)
    policy = load_policy(folder, device="auto", max_image_pixels=config.model.max_image_pixels)
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    sampling = SamplingConfig(temperature=1.0)
    generator = TransformersGenerator(policy, batch_size=args.batch)
    engine = RolloutEngine(generator, chat, config.rollout, config.tools, sampling)
    suites = ["zoom_detail", "python_count", "control_shapes"]
    questions = [q for name in suites for q in get_suite(name).generate(args.batch, seed=1)][: args.batch]

    def raw_generate() -> int:
        """The plain pipeline: processor, prompt ids, one left-padded batch, `model.generate`."""
        encoded = [[chat.encode_image(img) for img in q.images] for q in questions]
        prompts = [chat.prompt(engine.system, q.text, e) for q, e in zip(questions, encoded)]
        batch = pack(prompts, encoded, policy.special.pad, policy.special.image_pad, "left", policy.device)
        width = batch.input_ids.shape[1]
        reset_rope_cache(policy.model)
        with torch.no_grad():
            out = policy.model.generate(
                **batch.model_inputs(),
                max_new_tokens=args.new_tokens,
                do_sample=True,
                temperature=1.0,
                eos_token_id=engine.stop_ids,
                pad_token_id=policy.special.pad,
                suppress_tokens=policy.special.never_sampled(),
            )
        new = out[:, width:]
        stops = torch.isin(new, torch.tensor(engine.stop_ids, device=new.device))
        # tokens up to and including each row's first stop id
        full = torch.full_like(stops[:, 0], new.shape[1], dtype=torch.long)
        lengths = torch.where(stops.any(1), stops.int().argmax(1) + 1, full)
        return int(lengths.sum())

    def engine_rollout() -> int:
        return sum(t.num_policy_tokens for t in engine.rollout(questions, group_size=1))

    raw_generate(), engine_rollout()  # warm-up
    raw_rates, engine_rates = [], []
    for _ in range(args.repeats):
        tokens, seconds = timed(raw_generate)
        raw_rates.append(tokens / seconds)
        tokens, seconds = timed(engine_rollout)
        engine_rates.append(tokens / seconds)

    # Continuation: sources are fresh rollouts; cut halfway through each one's generated tokens.
    engine.stop_ids = []  # every row decodes exactly --new-tokens, on both sides (see the docstring)
    sources = engine.rollout(questions, group_size=1)
    qmap = {q.question_id: q for q in questions}
    requests = [
        ContinuationRequest(s, s.prompt_len + max(1, s.num_policy_tokens // 2), 1, f"{s.question_id}/c", 100)
        for s in sources
        if s.num_policy_tokens >= 2
    ]
    prefix_tokens = sum(r.prefix_tokens - r.source.prompt_len for r in requests)

    def continuation() -> int:
        return sum(c.num_policy_tokens for c in engine.continue_from(requests, qmap)) - prefix_tokens

    fresh_rates, cont_rates = [], []
    for _ in range(args.repeats):
        tokens, seconds = timed(engine_rollout)
        fresh_rates.append(seconds / tokens)
        tokens, seconds = timed(continuation)
        cont_rates.append(seconds / max(tokens, 1))

    engine_tps, raw_tps = statistics.median(engine_rates), statistics.median(raw_rates)
    fresh, cont = statistics.median(fresh_rates), statistics.median(cont_rates)
    print(
        f"model = {args.scale} ({sum(p.numel() for p in policy.model.parameters()) / 1e6:.2f}M), "
        f"device = {policy.device}, batch = {args.batch}, max_new_tokens = {args.new_tokens}"
    )
    print(f"raw_generate_tokens_per_s = {raw_tps:.1f}")
    print(f"engine_tokens_per_s = {engine_tps:.1f}")
    print(f"engine_vs_generate = {engine_tps / raw_tps:.3f}")
    print(f"continuation_cost = {cont / fresh:.3f}")
    mean_prefix = prefix_tokens / max(len(requests), 1)
    print(f"prefix_tokens_mean = {mean_prefix:.1f}")


if __name__ == "__main__":
    main()
