"""Token weights for `clipped_policy_loss` in tests: what training/update.py `token_weights` gives one
stream of rows under `algorithm.aggregation`, as a [B, T] tensor."""

from __future__ import annotations

import torch


def batch_weights(mask: torch.Tensor, aggregation: str = "token-mean") -> torch.Tensor:
    """token-mean: 1/Σ mask over the batch; seq-mean-token-mean: 1/(B·T_row) (an empty row weighs 0)."""
    m = mask.float()
    if aggregation == "token-mean":
        return m / m.sum().clamp(min=1.0)
    return m / (m.sum(-1, keepdim=True).clamp(min=1.0) * m.shape[0])
