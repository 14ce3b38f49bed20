"""vLLM vs transformers rollout backends side by side in one process: on a GPU (`axpo[vllm]` + CUDA) or on
the CPU (the vLLM lane's .venv-vllm, `make setup-vllm`; tiny-m and tiny-l, not tiny-s).

1. vllm_vs_transformers: tokens/s of the multi-turn engine on each backend, same model, questions, group
   size and lengths (goal >= 5 on a GPU).
2. vllm_sync_s: one weight sync (the policy's parameters into vLLM's model, caches reset).
3. axpo_resample_prefix_cache: the cost of AXPO's resampling (K continuations of each prefix) with vLLM's
   prefix caching on vs off, as a time ratio (< 1 means the cache saves prefill).

Usage:
    pip install -e '.[vllm]' && python bench/backends.py --scale tiny-l --questions 32 --group 8   # GPU
    .venv-vllm/bin/python bench/backends.py --scale tiny-m --dtype float32 --questions 8 --group 4  # CPU
    python bench/backends.py --model /models/Qwen3-VL-2B-Thinking --questions 64 --group 8
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from axpo_core.config import load_config
from axpo_core.envs.suites import get_suite
from axpo_core.models.loader import load_policy
from axpo_core.models.tiny import build_tiny
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.trajectory import ContinuationRequest
from axpo_core.rollout.transformers_backend import TransformersGenerator
from axpo_core.rollout.vllm_backend import VLLMEngine, VLLMGenerator, require_vllm


def tokens_per_second(engine: RolloutEngine, questions, group: int) -> tuple[float, list]:
    start = time.perf_counter()
    trajectories = engine.rollout(questions, group)
    seconds = time.perf_counter() - start
    return sum(t.num_policy_tokens for t in trajectories) / seconds, trajectories


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="tiny-l")
    parser.add_argument("--model", default=None, help="a local checkpoint instead of a tiny scale")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    device = require_vllm()  # "cuda" or "cpu"

    folder = args.model or build_tiny(args.scale, tempfile.mkdtemp(prefix="axpo-bench-"), pretrain_steps=0)
    config = load_config(
        None,
        [f"rollout.max_new_tokens_per_turn={args.max_new_tokens}", f"model.dtype={args.dtype}"],
        check_environment=False,
    )
    policy = load_policy(
        folder, device=device, dtype=args.dtype, max_image_pixels=config.model.max_image_pixels
    )
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    questions = [q for name in config.training.suites for q in get_suite(name).generate(args.questions, 3)]
    questions = questions[: args.questions]

    hf = RolloutEngine(TransformersGenerator(policy, batch_size=64), chat, config.rollout, config.tools)
    vllm_engine = RolloutEngine(VLLMGenerator(policy), chat, config.rollout, config.tools)
    tokens_per_second(hf, questions[:2], 1), tokens_per_second(vllm_engine, questions[:2], 1)  # warm-up
    hf_tps, _ = tokens_per_second(hf, questions, args.group)
    vllm_tps, sources = tokens_per_second(vllm_engine, questions, args.group)
    shared = vllm_engine.generator.engine
    start = time.perf_counter()
    shared._load_weights(policy)  # what sync_weights() costs at the next generate
    sync_s = time.perf_counter() - start

    # AXPO-style resampling: K = 4 continuations of a mid-rollout prefix of each source, cut right after
    # its middle policy token (prompt_len + half the policy tokens lands inside a tool response whenever
    # the rollout called a tool, and ContinuationRequest refuses such a cut).
    by_id = {q.question_id: q for q in questions}
    requests = []
    for s in sources[:: args.group]:
        generated = [i for i, sampled in enumerate(s.loss_mask) if sampled]
        if len(generated) >= 2:
            cut = generated[len(generated) // 2 - 1] + 1
            requests.append(
                ContinuationRequest(s, cut, 4, f"{s.question_id}/r{s.sample_id}", 1000 + 4 * s.sample_id)
            )
    start = time.perf_counter()
    vllm_engine.continue_from(requests, by_id)
    cached = time.perf_counter() - start
    vllm_engine.generator.close()  # frees its GPU memory before the second engine starts
    del vllm_engine
    no_prefix_cache = VLLMEngine(policy, enable_prefix_caching=False)
    uncached = RolloutEngine(
        VLLMGenerator(policy, engine=no_prefix_cache), chat, config.rollout, config.tools
    )
    start = time.perf_counter()
    uncached.continue_from(requests, by_id)
    no_cache = time.perf_counter() - start

    threads = f"cpu, {torch.get_num_threads()} torch threads"
    name = torch.cuda.get_device_name() if device == "cuda" else threads
    print(
        f"model = {folder}, dtype = {args.dtype}, questions = {len(questions)}, group = {args.group}, "
        f"device = {name}"
    )
    print(f"transformers_tokens_per_s = {hf_tps:.1f}")
    print(f"vllm_tokens_per_s = {vllm_tps:.1f}")
    print(f"vllm_vs_transformers = {vllm_tps / hf_tps:.2f}")
    print(f"vllm_sync_s = {sync_s:.3f}")
    print(f"axpo_resample_prefix_cache = {cached / no_cache:.3f}")


if __name__ == "__main__":
    main()
