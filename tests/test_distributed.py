"""The sharded update (issue 17): `training.world_size` 2 runs the update as two gloo processes under torchrun
(FSDP2 `fully_shard` on CPU) and gives the weights of the one-process update on the same AXPO batch, KL
term included; its checkpoint loads with `from_pretrained` and its sharded optimizer state resumes."""

from __future__ import annotations

import json

import pytest
import torch
from axpo_batches import AXPO_ROUND, axpo_round_inputs

from axpo_core.config import load_config
from axpo_core.models.loader import load_policy
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.serialization import requests_to_records, trajectories_to_bytes
from axpo_core.training.checkpoint import load_optimizer_state, save_checkpoint
from axpo_core.training.distributed import SHARDED_OPTIMIZER, launch, write_job
from axpo_core.training.steps import update_step
from axpo_core.training.update import make_optimizer

OVERRIDES = [
    *AXPO_ROUND,
    "model.device=cpu",  # gloo ranks on the CPU, like the one-process side, on any machine
    "training.learning_rate=1e-6",  # see test_two_gloo_processes_give_the_one_process_update
    "training.ppo_epochs=2",
    "training.minibatch=rows",  # single rows, so that ...
    "training.mini_batch_size=5",  # ... 3 + 2 rows per rank, so one rank pads a micro-batch
    "training.micro_batch_size=2",
]


@pytest.fixture(scope="module")
def axpo_batch(tiny_model_dir):
    """An AXPO round's inputs: per question two tool-using oracle rollouts (scored wrong, so the group
    triggers) and two no-tool ones, their log-probs under the model, and the tiny model's real continuations
    of the ranked tool-call prefixes."""
    config = load_config(None, OVERRIDES)
    policy = load_policy(tiny_model_dir, device="cpu", max_image_pixels=config.model.max_image_pixels)
    _, inputs = axpo_round_inputs(config, policy, "python_count")
    return config, inputs


def max_abs_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


def _one_process(policy_dir, reference_dir, config, inputs, round_index=1, resume=False):
    originals, continuations, requests, triggered = inputs
    trainee = load_policy(policy_dir, device="cpu", max_image_pixels=config.model.max_image_pixels)
    reference = load_policy(reference_dir, device="cpu").model.requires_grad_(False)
    optimizer = make_optimizer(trainee.model, config.training)
    assert load_optimizer_state(optimizer, policy_dir) == resume
    chat = ChatFormat(trainee.tokenizer, trainee.image_processor, trainee.special)
    result = update_step(
        trainee, optimizer, config, chat, originals, continuations, requests, triggered,
        reference=reference, round_index=round_index,
    )
    return trainee, optimizer, result.metrics()


def _sharded(job, policy_dir, reference_dir, config, inputs, round_index=1):
    originals, continuations, requests, triggered = inputs
    write_job(
        job, config.model_dump(mode="json"), policy_dir, reference_dir, job / "out", round_index, triggered,
        trajectories_to_bytes(originals), trajectories_to_bytes(continuations),
        json.dumps(requests_to_records(requests)).encode(),
    )
    return job / "out", launch(job, world_size=2)


@pytest.fixture(scope="module")
def moved_policy(tiny_model_dir, axpo_batch, tmp_path_factory):
    """The tiny model after one AXPO update at a large learning rate: away from the reference (the KL term
    is not ~0) and from the rollouts' policy (the ratio departs from 1, so the clip acts)."""
    config, inputs = axpo_batch
    fast = config.model_copy(update={"training": config.training.model_copy(update={"learning_rate": 1e-3})})
    trainee, _, _ = _one_process(tiny_model_dir, tiny_model_dir, fast, inputs)
    return save_checkpoint(trainee, tmp_path_factory.mktemp("moved"))  # no optimizer state: a fresh start


def test_two_gloo_processes_give_the_one_process_update(
    tiny_model_dir, moved_policy, axpo_batch, tmp_path, record_property
):
    """Same weights within 1e-6 (fp32) and the same statistics. The learning rate is small because AdamW's
    first steps divide each gradient by its own magnitude: an element whose gradient nearly cancels (its
    sum rounds differently over two ranks) moves by ±lr; at 1e-6 that stays within the tolerance."""
    config, inputs = axpo_batch
    one, _, one_metrics = _one_process(moved_policy, tiny_model_dir, config, inputs)
    out, metrics = _sharded(tmp_path / "job", moved_policy, tiny_model_dir, config, inputs)
    two = load_policy(out, device="cpu")  # the gathered full state dict loads with from_pretrained
    start = load_policy(moved_policy, device="cpu")
    moved, diff = max_abs_diff(one.model, start.model), max_abs_diff(one.model, two.model)
    record_property("summary", f"sharded update (2 gloo ranks) vs one process: max |Δw| {diff:.2e}, "
                    f"the update itself moved weights by up to {moved:.2e}")
    assert moved > 4e-6  # 6 steps of ~lr each
    assert diff <= 1e-6, diff
    assert metrics["update/steps"] == one_metrics["update/steps"] == 6
    assert metrics["update/kl"] > 0.01 and metrics["update/clip_fraction"] > 0  # the KL term and the clip act
    assert metrics["continuations"] == one_metrics["continuations"] > 0  # AXPO's extra streams
    for key in ("update/loss", "update/kl", "update/clip_fraction", "update/entropy", "update/grad_norm",
                "update/policy_tokens", "update/original_token_weight"):
        assert metrics[key] == pytest.approx(one_metrics[key], rel=1e-5, abs=1e-7), key
    assert (out / SHARDED_OPTIMIZER).is_dir() and not (out / "optimizer.pt").exists()
    with pytest.raises(ValueError, match="saved by a sharded update"):
        load_optimizer_state(make_optimizer(two.model, config.training), out)


def test_the_sharded_optimizer_state_resumes(
    tiny_model_dir, moved_policy, axpo_batch, tmp_path, record_property
):
    """Two rounds, sharded (round 2 loads round 1's optimizer/ into two ranks) and in one process
    (optimizer.pt): the same weights, and far from a round 2 whose optimizer restarts."""
    config, inputs = axpo_batch
    training = config.training.model_copy(update={"learning_rate": 1e-5})
    config = config.model_copy(update={"training": training})
    one_r1, optimizer, _ = _one_process(moved_policy, tiny_model_dir, config, inputs)
    save_checkpoint(one_r1, tmp_path / "one-r1", optimizer)
    one_r2, _, _ = _one_process(tmp_path / "one-r1", tiny_model_dir, config, inputs, 2, resume=True)
    save_checkpoint(one_r1, tmp_path / "one-r1-no-optimizer")
    restarted, _, _ = _one_process(tmp_path / "one-r1-no-optimizer", tiny_model_dir, config, inputs, 2)
    r1, _ = _sharded(tmp_path / "r1", moved_policy, tiny_model_dir, config, inputs)
    r2, _ = _sharded(tmp_path / "r2", r1, tiny_model_dir, config, inputs, 2)
    resumed = max_abs_diff(one_r2.model, load_policy(r2, device="cpu").model)
    fresh = max_abs_diff(one_r2.model, restarted.model)  # what a silently restarted optimizer would give
    record_property("summary", f"sharded resume: round 2 vs one process {resumed:.2e}, "
                    f"with the optimizer state dropped {fresh:.2e}")
    assert resumed < fresh / 10, (resumed, fresh)


# ---- the knobs for real sizes, on the tiny scale ----


def _with(config, **training):
    return config.model_copy(update={"training": config.training.model_copy(update=training)})


def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir, moved_policy, axpo_batch):
    config, inputs = axpo_batch
    plain, _, plain_metrics = _one_process(moved_policy, tiny_model_dir, config, inputs)
    recomputed, _, metrics = _one_process(
        moved_policy, tiny_model_dir, _with(config, gradient_checkpointing=True), inputs
    )
    assert recomputed.model.is_gradient_checkpointing
    assert max_abs_diff(plain.model, recomputed.model) <= 1e-6
    assert metrics["update/loss"] == pytest.approx(plain_metrics["update/loss"], rel=1e-5)


def test_bf16_autocast_in_one_process_and_sharded(tiny_model_dir, moved_policy, axpo_batch, tmp_path):
    """bf16 compute (autocast in one process, FSDP's mixed-precision policy sharded): fp32 weights that move,
    finite statistics close to fp32's (bf16 rounds to ~3 significant digits)."""
    config, inputs = axpo_batch
    fast = _with(config, learning_rate=1e-4)
    _, _, fp32 = _one_process(moved_policy, tiny_model_dir, fast, inputs)
    bf16 = _with(fast, autocast_bf16=True)
    one, _, metrics = _one_process(moved_policy, tiny_model_dir, bf16, inputs)
    out, sharded = _sharded(tmp_path / "job", moved_policy, tiny_model_dir, bf16, inputs)
    two = load_policy(out, device="cpu")
    start = load_policy(moved_policy, device="cpu")
    for model in (one.model, two.model):
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert max_abs_diff(model, start.model) > 1e-5
    for m in (metrics, sharded):
        assert m["update/kl"] == pytest.approx(fp32["update/kl"], rel=0.05)
        assert m["update/entropy"] == pytest.approx(fp32["update/entropy"], rel=0.05)


def test_bf16_weights_train_and_save_as_bf16(tiny_model_dir, moved_policy, axpo_batch, tmp_path):
    config, inputs = axpo_batch
    config = config.model_copy(update={"model": config.model.model_copy(update={"dtype": "bfloat16"})})
    originals, continuations, requests, triggered = inputs
    trainee = load_policy(moved_policy, device="cpu", dtype="bfloat16")
    reference = load_policy(tiny_model_dir, device="cpu", dtype="bfloat16").model.requires_grad_(False)
    optimizer = make_optimizer(trainee.model, _with(config, learning_rate=1e-3).training)
    chat = ChatFormat(trainee.tokenizer, trainee.image_processor, trainee.special)
    result = update_step(trainee, optimizer, config, chat, originals, continuations, requests, triggered,
                         reference=reference, round_index=1)
    assert result.stats.steps == 6 and torch.isfinite(torch.tensor(result.stats.loss))
    save_checkpoint(trainee, tmp_path / "bf16")
    saved = load_policy(tmp_path / "bf16", device="cpu", dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in saved.model.parameters())
    assert max_abs_diff(saved.model.float(), load_policy(moved_policy, device="cpu").model) > 1e-3


def test_a_whole_reference_beside_the_sharded_policy(tiny_model_dir, moved_policy, axpo_batch, tmp_path):
    """`training.reference_device: cpu`: each rank keeps the frozen reference whole on the CPU (not sharded)
    and brings its log-probs to the policy's device; the update is the same."""
    config, inputs = axpo_batch
    one, _, one_metrics = _one_process(moved_policy, tiny_model_dir, config, inputs)
    whole_reference = _with(config, reference_device="cpu")
    out, metrics = _sharded(tmp_path / "job", moved_policy, tiny_model_dir, whole_reference, inputs)
    assert max_abs_diff(one.model, load_policy(out, device="cpu").model) <= 1e-6
    assert metrics["update/kl"] == pytest.approx(one_metrics["update/kl"], rel=1e-5)
