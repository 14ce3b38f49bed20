"""The transformers backend's shared prefills: a group's identical prompts, and continuations of one prefix,
prefilled once, with the same tokens and log-probs as the unshared path (real tiny Qwen3-VL)."""

from __future__ import annotations

import random

import pytest
import torch

from axpo_core.config import SamplingConfig
from axpo_core.envs.suites import get_suite
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.generator import GenerationRequest
from axpo_core.rollout.oracle import ScriptedGenerator
from axpo_core.rollout.trajectory import ContinuationRequest
from axpo_core.rollout.transformers_backend import TransformersGenerator

GROUP = 4


def oracle_rollout(chat, config, question):
    """The suite's oracle trajectory for `question`, played through the engine (tools run)."""
    scripts = {(question.question_id, 0): get_suite(question.suite).oracle(question, random.Random(0))}
    engine = RolloutEngine(ScriptedGenerator(chat, scripts), chat, config.rollout, config.tools)
    return engine.rollout([question], 1)[0]


@pytest.fixture(scope="module")
def requests(chat, config):
    """2 groups x 4 identical prompts (zoom_detail with its image, control_shapes' text alone: different
    lengths), then 2 continuations of one prefix: an oracle's zoom_detail rollout cut after its tool
    response (two images: the question's and the crop). Each request has its own seed."""
    engine = RolloutEngine(ScriptedGenerator(chat, {}), chat, config.rollout, config.tools)
    batch: list[GenerationRequest] = []
    zoom, shapes = get_suite("zoom_detail").generate(1, 0)[0], get_suite("control_shapes").generate(1, 0)[0]
    for q, images in ((zoom, zoom.images), (shapes, [])):
        encoded = [chat.encode_image(img) for img in images]
        prompt = chat.prompt(engine.system, q.text, encoded)
        batch += [
            GenerationRequest(prompt, encoded, 16, (q.question_id, s), 100 + len(batch) + s)
            for s in range(GROUP)
        ]
    q = get_suite("zoom_detail").generate(1, 3)[0]
    source = oracle_rollout(chat, config, q)
    cut = source.token_ids.index(chat.special.tool_response_end, source.tool_call_spans[0][1]) + 4
    encoded = [chat.encode_image(img) for img in source.images]
    assert len(encoded) == 2 and source.token_ids[:cut].count(chat.special.vision_start) == 2
    prefix = source.token_ids[:cut]
    batch += [GenerationRequest(prefix, encoded, 16, (q.question_id, 8 + k), 200 + k) for k in range(2)]
    assert len({len(r.token_ids) for r in batch}) == 3  # three context lengths: left padding is exercised
    return batch


def generate(policy, requests, share_prefill: bool, temperature: float = 1.0):
    generator = TransformersGenerator(policy, batch_size=64, share_prefill=share_prefill)
    special = policy.special
    stop_ids = [special.tool_call_end, special.im_end, special.endoftext]
    return generator.generate(requests, SamplingConfig(temperature=temperature), stop_ids)


@pytest.mark.parametrize("temperature", [1.0, 0.0])
@pytest.mark.parametrize("rows", ["all", "text"])
def test_shared_prefill_gives_the_unshared_tokens_and_logprobs(policy, requests, temperature, rows):
    """The mixed batch, and the text group alone (a batch without images: text positions only)."""
    requests = requests if rows == "all" else requests[GROUP : 2 * GROUP]
    torch.manual_seed(0)
    flat = generate(policy, requests, share_prefill=False, temperature=temperature)
    shared = generate(policy, requests, share_prefill=True, temperature=temperature)
    assert sum(len(o.token_ids) for o in flat) > len(requests)  # more than one token per row was decoded
    if temperature > 0:  # the seeds drive sampling: a group's samples differ
        assert len({tuple(o.token_ids) for o in flat[:GROUP]}) > 1
    for a, b in zip(flat, shared):
        assert a.token_ids == b.token_ids and a.stopped == b.stopped
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= 1e-5
        assert max(abs(x - y) for x, y in zip(a.entropies, b.entropies)) <= 1e-4


def test_shared_prefill_forwards_each_unique_context_once(policy, requests):
    """The first forward holds the 3 unique contexts, not the 10 requests, and the vision encoder sees the
    unique contexts' images alone; a batch without duplicates prefills every row, as before."""
    calls: list[tuple[int, int]] = []
    images: list[int] = []
    hooks = [
        policy.model.register_forward_hook(
            lambda _m, _a, kw, _o: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True
        ),
        policy.model.model.visual.register_forward_hook(
            lambda _m, _a, kw, _o: images.append(len(kw["grid_thw"])), with_kwargs=True
        ),
    ]
    try:
        generate(policy, requests, share_prefill=True)
        shared_calls, shared_images = list(calls), list(images)
        calls.clear()
        images.clear()
        generate(policy, requests, share_prefill=False)
        flat_calls, flat_images = list(calls), list(images)
        calls.clear()
        distinct = [requests[0], requests[GROUP], requests[-1]]
        generate(policy, distinct, share_prefill=True)
        distinct_calls = list(calls)
    finally:
        for hook in hooks:
            hook.remove()
    width = max(len(r.token_ids) for r in requests)
    assert shared_calls[0] == (3, width - 1)  # the unique contexts, all but their last token
    assert shared_calls[1] == (len(requests), 1)  # then every row's last context token, from the cache
    assert flat_calls[0] == (len(requests), width)
    assert sum(shared_images) == sum(len(r.images) for r in distinct) == 3  # 1 + 0 + 2
    assert sum(flat_images) == sum(len(r.images) for r in requests) == 8
    assert distinct_calls[0] == (3, width)


def test_rollouts_and_continuations_are_the_same_with_and_without_shared_prefills(policy, chat, config):
    """Through the engine: a seeded round's rollouts (groups of 4), then AXPO's 4 continuations of an oracle
    prefix cut after its `<tool_call>`; the same trajectories whichever prefill path ran."""
    rollout = config.rollout.model_copy(update={"max_new_tokens_per_turn": 12, "max_turns": 2})
    qs = [get_suite(name).generate(1, 0)[0] for name in ("zoom_detail", "python_count")]
    source = oracle_rollout(chat, config, qs[1])
    axpo = ContinuationRequest(source, source.tool_call_spans[0][0] + 1, GROUP, "g", first_sample_id=GROUP)
    runs = []
    for share in (False, True):
        generator = TransformersGenerator(policy, batch_size=16, share_prefill=share)
        engine = RolloutEngine(generator, chat, rollout, config.tools, SamplingConfig(temperature=1.0))
        rollouts = engine.rollout(qs, group_size=GROUP, seed=7)
        runs.append(rollouts + engine.continue_from([axpo], {q.question_id: q for q in qs}, seed=7))
    assert len({tuple(t.token_ids) for t in runs[0][-GROUP:]}) == GROUP  # the continuations differ
    for a, b in zip(*runs):
        assert a.token_ids == b.token_ids and a.loss_mask == b.loss_mask and a.reward == b.reward
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= 1e-5


EVAL_SAMPLING = SamplingConfig(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5)


SAMPLINGS = [SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.0), EVAL_SAMPLING]


@pytest.mark.parametrize("sampling", SAMPLINGS)
@pytest.mark.parametrize("share_prefill", [False, True])
def test_dropping_finished_rows_gives_generates_tokens(policy, requests, sampling, share_prefill):
    """The own decode loop, whose finished rows leave the batch, against `model.generate` (drop_finished off)
    on the mixed batch with each request's own token budget (4 to 16: rows finish at different steps); the
    forwards' batch shrinks as rows finish."""
    requests = [
        GenerationRequest(r.token_ids, r.images, 4 + (i * 5) % 13, r.rollout_key, r.seed)
        for i, r in enumerate(requests)
    ]
    special = policy.special
    stop_ids = [special.tool_call_end, special.im_end, special.endoftext]
    rows: list[int] = []
    hook = policy.model.register_forward_hook(
        lambda _m, _a, kw, _o: rows.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        outputs = {}
        for drop in (False, True):
            rows.clear()
            generator = TransformersGenerator(policy, 64, share_prefill=share_prefill, drop_finished=drop)
            outputs[drop] = generator.generate(requests, sampling, stop_ids)
            outputs[drop, "rows"] = list(rows)
    finally:
        hook.remove()
    assert outputs[False, "rows"][-1] == len(requests)  # `generate` decodes every row to the end
    assert outputs[True, "rows"][-1] < len(requests)  # the loop had dropped finished rows by then
    for request, a, b in zip(requests, outputs[False], outputs[True]):
        assert a.token_ids == b.token_ids and a.stopped == b.stopped
        assert len(b.token_ids) <= request.max_new_tokens
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) <= 1e-4
        assert max(abs(x - y) for x, y in zip(a.entropies, b.entropies)) <= 1e-4
