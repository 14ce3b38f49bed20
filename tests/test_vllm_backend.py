"""The vLLM backend: its pure helpers here; parity with the transformers backend on a GPU machine only."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from axpo_core.config import load_config
from axpo_core.rollout.vllm_backend import VLLMUnavailable, collapse_image_pads, require_vllm, topk_entropy

HAS_GPU_VLLM = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def test_image_pads_collapse_to_one_per_image():
    pad = 5
    assert collapse_image_pads([1, 3, pad, pad, pad, 4, 7, 3, pad, pad, 4], pad) == [
        1,
        3,
        pad,
        4,
        7,
        3,
        pad,
        4,
    ]
    assert collapse_image_pads([1, 2], pad) == [1, 2]


def test_topk_entropy_is_the_renormalised_entropy():
    assert topk_entropy([math.log(0.5), math.log(0.5)]) == pytest.approx(math.log(2))
    assert topk_entropy([0.0]) == 0.0
    assert topk_entropy([]) == 0.0


@pytest.mark.skipif(HAS_GPU_VLLM, reason="this machine has vLLM and a GPU")
def test_missing_vllm_or_gpu_is_one_clear_error(policy):
    from axpo_core.rollout.factory import make_generator

    with pytest.raises(VLLMUnavailable, match="rollout.backend"):
        require_vllm()
    with pytest.raises(VLLMUnavailable, match="rollout.backend=transformers"):
        make_generator(load_config(None, ["rollout.backend=vllm"]), policy)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU_VLLM, reason="needs the vllm extra and a CUDA GPU (run on a GPU machine)")
def test_vllm_logprobs_match_transformers_within_bf16(tmp_path):
    """Same sequences, both backends: vLLM's sampled-token log-probs vs a teacher-forced transformers pass."""
    from axpo_core.envs.suites import get_suite
    from axpo_core.models.loader import load_policy
    from axpo_core.models.tiny import build_tiny
    from axpo_core.rollout.factory import build_engine
    from axpo_core.rollout.logprobs import pack, sequence_logprobs

    folder = build_tiny("tiny-m", tmp_path / "m")
    config = load_config(
        None, ["rollout.backend=vllm", "model.dtype=bfloat16", "rollout.max_new_tokens_per_turn=32"]
    )
    policy = load_policy(
        folder, device="cuda", dtype="bfloat16", max_image_pixels=config.model.max_image_pixels
    )
    engine, _ = build_engine(config, policy=policy)
    trajectories = engine.rollout(get_suite("control_shapes").generate(4, 0), group_size=2)
    for t in trajectories:
        images = [engine.chat.encode_image(img) for img in t.images]
        batch = pack(
            [t.token_ids], [images], policy.special.pad, policy.special.image_pad, "right", policy.device
        )
        with torch.no_grad():
            tf, _ = sequence_logprobs(policy.model, batch, 1.0, policy.special.never_sampled())
        mask = torch.tensor(t.loss_mask, dtype=torch.bool, device=tf.device)
        diff = (tf[0][mask].float().cpu() - torch.tensor(t.logprobs)[mask.cpu()]).abs()
        assert diff.mean() < 0.05 and diff.max() < 0.5  # bf16 tolerance
