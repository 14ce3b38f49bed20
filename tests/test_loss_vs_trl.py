"""`clipped_policy_loss` against TRL 1.16's own GRPO loss, with TRL as the oracle.

The path compared: `trl.trainer.grpo_trainer.GRPOTrainer._compute_loss` (TRL 1.16.0), the real, unmodified
method, called on a stand-in for `self` that carries only the attributes it reads (token-level importance
sampling, no entropy mask, no off-policy mask, no vLLM IS correction, no entropy bonus, no aux loss, one
process, gradient accumulation 1). Its call into the model also runs for real: TRL's own
`_get_per_token_logps_and_entropies` is bound to the stand-in, and the "model" is a stub returning what a
fused-LM-head forward returns (`log_probs`, `entropy`) built from our crafted per-token log-probs, so TRL
slices the completion part out itself. Inputs: identical log-probs, old log-probs, reference log-probs,
per-token advantages and masks. Compared: the loss, its gradient w.r.t. the log-probs, and the KL and clip
statistics TRL logs.

Correspondence: our "token-mean" = TRL `loss_type="bnpo"` (Σ over masked tokens / their count) and
`loss_type="dapo"` with `num_items_in_batch` = the batch's masked-token count; our "seq-mean-token-mean" =
TRL `loss_type="grpo"`. TRL's `epsilon` / `epsilon_high` / `beta` are our `eps_low` / `eps_high` / `kl_beta`.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from loss_weights import batch_weights

from axpo_core.algorithms.grpo import clipped_policy_loss

grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
GRPOTrainer = grpo_trainer.GRPOTrainer

B, P, T = 4, 3, 7  # sequences, prompt length, completion length
EPS_LOW, EPS_HIGH = 0.2, 0.4


def crafted_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Ratios spread well past both clip edges, per-token advantages of both signs, ragged masks."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g) * 3
    new = old + torch.randn(B, T, generator=g) * 0.6  # ratios ≈ e^±1.2: many tokens clipped low and high
    ref = old + torch.randn(B, T, generator=g) * 0.3
    advantages = torch.randn(B, 1, generator=g).expand(B, T).clone()
    advantages[0, :3] = -advantages[0, :3]  # per-token advantages (AXPO's prefix vs continuation)
    advantages[1] = 0.0  # an all-zero-advantage rollout
    advantages[2], advantages[3] = 1.3, -0.8  # and make sure both clip edges are hit:
    new[2, 3], new[3, 0] = old[2, 3] + 0.7, old[3, 0] - 0.6  # ρ ≈ 2.01 with Â > 0, ρ ≈ 0.55 with Â < 0
    mask = torch.ones(B, T)
    mask[0, 5:] = 0  # padding
    mask[2, :2] = 0  # a masked prefix (an AXPO continuation)
    mask[3, 1:4] = 0  # a masked tool response inside the completion
    return {"new": new, "old": old, "ref": ref, "advantages": advantages, "mask": mask}


def trl_stand_in(loss_type: str, beta: float) -> SimpleNamespace:
    """Only the attributes `_compute_loss` and `_get_per_token_logps_and_entropies` read, at TRL's defaults
    for a single-process, non-vLLM, token-level run."""
    accelerator = SimpleNamespace(
        num_processes=1,
        is_main_process=True,  # read by TRL's profiling decorator
        autocast=contextlib.nullcontext,
        reduce=lambda tensor, reduction="sum": tensor,
        gather=lambda tensor: tensor,
        gather_for_metrics=lambda tensor: tensor,
    )
    fake = SimpleNamespace(
        loss_type=loss_type,
        beta=beta,
        epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH,
        importance_sampling_level="token",
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        aux_loss_enabled=False,
        _entropy_bonus_enabled=False,
        current_gradient_accumulation_steps=1,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        model=SimpleNamespace(training=True),
        accelerator=accelerator,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    fake._get_per_token_logps_and_entropies = partial(GRPOTrainer._get_per_token_logps_and_entropies, fake)
    return fake


def trl_loss(batch: dict[str, torch.Tensor], loss_type: str, beta: float):
    """TRL's loss, its gradient w.r.t. the completion log-probs, and its logged metrics."""
    new = batch["new"].clone().requires_grad_(True)

    def model(input_ids, attention_mask, labels, fused_lm_head):  # a fused-LM-head forward's outputs
        assert fused_lm_head and input_ids.shape == (B, P + T)
        full = torch.cat([torch.zeros(B, P), new], dim=1)  # TRL keeps the last T positions
        return SimpleNamespace(log_probs=full, entropy=torch.zeros(B, P + T))

    inputs = {
        "prompt_ids": torch.ones(B, P, dtype=torch.long),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.full((B, T), 7, dtype=torch.long),
        "completion_mask": batch["mask"].long(),
        "advantages": batch["advantages"],
        "old_per_token_logps": batch["old"],
        "ref_per_token_logps": batch["ref"],
        "num_items_in_batch": batch["mask"].sum(),
    }
    fake = trl_stand_in(loss_type, beta)
    loss = GRPOTrainer._compute_loss(fake, model, inputs)
    loss.backward()
    return loss.detach(), new.grad, {k: v[-1] for k, v in fake._metrics["train"].items()}


def ours(batch: dict[str, torch.Tensor], aggregation: str, beta: float):
    new = batch["new"].clone().requires_grad_(True)
    loss, stats = clipped_policy_loss(
        new,
        batch["old"],
        batch["advantages"],
        batch["mask"],
        eps_low=EPS_LOW,
        eps_high=EPS_HIGH,
        ref_logprobs=batch["ref"],
        kl_beta=beta,
        token_weights=batch_weights(batch["mask"], aggregation),
    )
    loss.backward()
    return loss.detach(), new.grad, stats


@pytest.mark.parametrize(
    ("loss_type", "aggregation"),
    [("bnpo", "token-mean"), ("dapo", "token-mean"), ("grpo", "seq-mean-token-mean")],
)
@pytest.mark.parametrize("beta", [1e-3, 0.5, 0.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_clipped_loss_matches_trl(loss_type: str, aggregation: str, beta: float, seed: int) -> None:
    batch = crafted_batch(seed)
    trl_value, trl_grad, trl_metrics = trl_loss(batch, loss_type, beta)
    our_value, our_grad, stats = ours(batch, aggregation, beta)

    torch.testing.assert_close(our_value, trl_value, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(our_grad, trl_grad, rtol=1e-5, atol=1e-7)
    assert our_grad.abs().sum() > 0
    assert stats["clip_fraction_low"].item() == pytest.approx(trl_metrics["clip_ratio/low_mean"], abs=1e-7)
    assert stats["clip_fraction_high"].item() == pytest.approx(trl_metrics["clip_ratio/high_mean"], abs=1e-7)
    assert stats["clip_fraction"].item() == pytest.approx(trl_metrics["clip_ratio/region_mean"], abs=1e-7)
    assert 0 < stats["clip_fraction_low"].item() and 0 < stats["clip_fraction_high"].item()  # both edges hit
    if beta:
        assert stats["kl"].item() == pytest.approx(trl_metrics["kl"], rel=1e-6)
