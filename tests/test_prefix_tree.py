"""The shared-prefix update equals the flat one: log-probs, loss and every parameter's gradient, on a real
AXPO batch with images (prompt images and images returned by the zoom tool) and the reference's KL term."""

from __future__ import annotations

import copy

import pytest
import torch
from axpo_batches import AXPO_ROUND, axpo_round_inputs

from axpo_core.algorithms.axpo import axpo_advantages
from axpo_core.config import load_config
from axpo_core.models.loader import Policy
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.logprobs import pack, sequence_logprobs
from axpo_core.rollout.prefix_tree import pack_tree, tree_logprobs
from axpo_core.training.update import policy_update


@pytest.fixture(scope="module")
def axpo_scored(policy):
    """A real AXPO round on zoom_detail (prompt images, and the images the zoom tool returns), scored."""
    config = load_config(None, AXPO_ROUND)
    questions, (originals, continuations, requests, _) = axpo_round_inputs(config, policy, "zoom_detail")
    prompt_images = {q.question_id: len(q.images) for q in questions}
    assert any(len(t.images) > prompt_images[t.question_id] for t in originals), "a zoom returned an image"
    return config, axpo_advantages(originals, continuations, requests, config.algorithm)


def _encoded(chat: ChatFormat, scored) -> tuple[list[list[int]], list[list]]:
    return [s.trajectory.token_ids for s in scored], [
        [chat.encode_image(img) for img in s.trajectory.images] for s in scored
    ]


def test_tree_logprobs_equal_the_flat_forward(policy, chat, axpo_scored):
    _, scored = axpo_scored
    ids, images = _encoded(chat, scored)
    special = policy.special
    flat = pack(ids, images, special.pad, special.image_pad, "right", policy.device)
    tree = pack_tree(policy.model, flat, images, [s.trajectory.question_id for s in scored], special.pad,
                     special.image_pad)
    never = special.never_sampled()
    with torch.no_grad():
        want, want_entropy = sequence_logprobs(policy.model, flat, 1.0, never)
        got, got_entropy = tree_logprobs(policy.model, tree, 1.0, never)
    real = flat.attention_mask.bool()
    assert tree.packed_tokens < tree.flat_tokens / 2  # prompts and continuation prefixes forwarded once
    assert tree.input_ids.shape[0] == 2  # one row per question
    assert torch.allclose(got[real], want[real], atol=2e-5, rtol=0)
    assert torch.allclose(got_entropy[real], want_entropy[real], atol=2e-5, rtol=0)


def _updated(policy: Policy, chat, scored, config, shared: bool, micro: int):
    """One SGD step (lr 1, no clipping) over the whole batch: the parameters move by minus the gradient."""
    trainee = copy.deepcopy(policy.model)
    local = Policy(trainee, policy.tokenizer, policy.image_processor, policy.special, policy.path)
    reference = copy.deepcopy(policy.model).requires_grad_(False)
    training = config.training.model_copy(update={
        "ppo_epochs": 1, "mini_batch_size": 1000, "micro_batch_size": micro, "max_grad_norm": 1e9,
        "shared_prefix": shared,
    })
    optimizer = torch.optim.SGD(trainee.parameters(), lr=1.0)
    stats = policy_update(local, optimizer, scored, config.algorithm, training, chat, reference=reference)
    return stats, [(a - b).detach() for a, b in zip(policy.model.parameters(), trainee.parameters(),
                                                    strict=True)]


@pytest.mark.parametrize("micro", [64, 5])
def test_shared_prefix_update_has_the_flat_loss_and_gradients(policy, chat, axpo_scored, micro):
    config, scored = axpo_scored
    flat_stats, flat_grads = _updated(policy, chat, scored, config, shared=False, micro=micro)
    tree_stats, tree_grads = _updated(policy, chat, scored, config, shared=True, micro=micro)
    assert tree_stats.forwarded_tokens < flat_stats.forwarded_tokens == flat_stats.flat_tokens
    assert tree_stats.loss == pytest.approx(flat_stats.loss, rel=1e-5, abs=1e-7)
    assert tree_stats.kl == pytest.approx(flat_stats.kl, rel=1e-4, abs=1e-8)
    assert any(g.abs().max() > 0 for g in flat_grads)
    for want, got in zip(flat_grads, tree_grads, strict=True):
        scale = want.abs().max().item()
        assert (got - want).abs().max().item() <= 1e-4 * scale + 1e-7


def test_sft_tree_loss_and_gradients_equal_the_flat_ones(policy, chat, axpo_scored):
    """SFT's token-mean NLL from one prefix tree of the whole batch (rows of two questions: the system
    prompt shared) equals the flat forward's, and so do the gradients."""
    from axpo_core.rollout.logprobs import PackedBatch
    from axpo_core.rollout.prefix_tree import tree_nll
    from axpo_core.training.sft import IGNORE, TrajectoryCollator

    _, scored = axpo_scored
    trajectories = [s.trajectory for s in scored]
    collate = TrajectoryCollator.for_trajectories(trajectories, chat)
    inputs = collate([{"input_ids": t.token_ids, "loss_mask": t.loss_mask, "row": i}
                      for i, t in enumerate(trajectories)])
    model = copy.deepcopy(policy.model)

    model.zero_grad()
    rest = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**rest, use_cache=False).logits[:, :-1]
    labels = inputs["labels"][:, 1:]
    flat_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    flat_loss.backward()
    flat_grads = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    flat = PackedBatch(inputs["input_ids"], inputs["attention_mask"], inputs["mm_token_type_ids"],
                       inputs["pixel_values"], inputs["image_grid_thw"], [0] * len(trajectories))
    nll, _, count = tree_nll(model, flat, inputs["labels"], policy.special.image_pad, IGNORE)
    tree_loss = nll / count
    tree_loss.backward()
    assert count == (labels != IGNORE).sum()
    assert tree_loss.item() == pytest.approx(flat_loss.item(), rel=1e-5)
    for want, p in zip(flat_grads, model.parameters(), strict=True):
        assert (p.grad - want).abs().max().item() <= 1e-4 * want.abs().max().item() + 1e-7
