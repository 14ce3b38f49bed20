"""A real AXPO round's inputs for tests: oracle rollouts through the engine, and the model's continuations."""

from __future__ import annotations

import random

import torch

from axpo_core.config import Config
from axpo_core.envs.suites import get_suite
from axpo_core.models.loader import Policy
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.logprobs import pack, sequence_logprobs
from axpo_core.rollout.oracle import ScriptedGenerator
from axpo_core.rollout.transformers_backend import TransformersGenerator
from axpo_core.training.steps import detect_step, resample_step

# The config `axpo_round_inputs` is made for: AXPO with a reference KL term, N = 4, one prefix of 2
# continuations per triggered question; tests add their own training sizes.
AXPO_ROUND = [
    "tools.python_timeout_s=5",
    "algorithm.name=axpo",
    "algorithm.kl_beta=0.05",
    "algorithm.continuations_per_prefix=2",
    "algorithm.budget_ratio=0.5",
    "rollout.group_size=4",
    "rollout.max_new_tokens_per_turn=16",
]


def axpo_round_inputs(config: Config, policy: Policy, suite_name: str, num_questions: int = 2):
    """Per question two tool-using oracle rollouts (scored wrong, so the group triggers) and two no-tool
    ones (group_size 4), their log-probs under the model, and the model's real continuations of the ranked
    tool-call prefixes: (originals, continuations, requests, triggered)."""
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    suite, rng = get_suite(suite_name), random.Random(0)
    questions = suite.generate(num_questions, 0)
    scripts = {
        (q.question_id, s): (suite.oracle(q, rng) if s < 2 else suite.no_tool_oracle(q, rng))
        for q in questions
        for s in range(4)
    }
    scripted = config.rollout.model_copy(update={"max_new_tokens_per_turn": 128})  # whole oracle turns
    originals = RolloutEngine(ScriptedGenerator(chat, scripts), chat, scripted, config.tools).rollout(
        questions, group_size=4
    )
    never = policy.special.never_sampled()
    for t in originals:
        t.reward = float(not t.used_tool and t.sample_id == 3)  # tool subgroup all wrong, one no-tool right
        batch = pack([t.token_ids], [[chat.encode_image(i) for i in t.images]], policy.special.pad,
                     policy.special.image_pad, "right", policy.device)
        with torch.no_grad():
            logprobs, _ = sequence_logprobs(policy.model, batch, 1.0, never)
        t.logprobs = [v if m else 0.0 for v, m in zip(logprobs[0].tolist(), t.loss_mask, strict=True)]
    triggered, requests = detect_step(config, originals, len(questions), policy.special, 1)
    engine = RolloutEngine(TransformersGenerator(policy, batch_size=8), chat, config.rollout, config.tools)
    continuations = resample_step(engine, config, requests, questions, 1)
    assert triggered and continuations
    return questions, (originals, continuations, requests, triggered)
