"""The policy's per-token distribution, defined once for the sampler and the update.

Log-probs are taken at the sampling temperature with the never-sampled ids (image pads, turn headers, tool
response tags: tokens only the engine writes) removed from the support. The rollout engine records them
with this function and the update recomputes them with it, so the importance ratio is exactly 1 at the
rollout policy. Top-k / top-p / presence penalty (evaluation only) shape sampling but not these numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def policy_log_softmax(
    logits: torch.Tensor, temperature: float, never_sampled: Sequence[int]
) -> torch.Tensor:
    """log π(·) over the last dim: logits / T with the never-sampled ids masked out, in float32."""
    scaled = logits.float() / temperature
    if never_sampled:
        scaled = scaled.index_fill(-1, torch.tensor(list(never_sampled), device=logits.device), float("-inf"))
    return torch.log_softmax(scaled, dim=-1)


def token_logprobs_and_entropy(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float, never_sampled: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of `token_ids` and the distribution's entropy, for logits [..., V] and ids [...]."""
    logp = policy_log_softmax(logits, temperature, never_sampled)
    chosen = logp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    probs = logp.exp()
    entropy = -(probs * logp.masked_fill(probs == 0, 0.0)).sum(-1)
    return chosen, entropy


@dataclass
class PackedBatch:
    """Sequences padded to one tensor, their images concatenated in row order (the model's expectation)."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    mm_token_type_ids: torch.Tensor  # [B, T], 1 on image pads
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    offsets: list[int]  # per row, where its first real token sits (left padding) or 0 (right padding)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "mm_token_type_ids": self.mm_token_type_ids,
        }
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
            inputs["image_grid_thw"] = self.image_grid_thw
        return inputs


def pack(
    sequences: Sequence[Sequence[int]],
    images: Sequence[Sequence],  # per row, EncodedImage-like objects with .pixel_values and .grid_thw
    pad_id: int,
    image_pad_id: int,
    side: str,
    device: torch.device,
) -> PackedBatch:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    offsets = []
    for row, seq in enumerate(sequences):
        start = width - len(seq) if side == "left" else 0
        input_ids[row, start : start + len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        attention[row, start : start + len(seq)] = 1
        offsets.append(start)
    row_images = [img for per_row in images for img in per_row]
    pixel_values = torch.cat([img.pixel_values for img in row_images]) if row_images else None
    grids = torch.stack([img.grid_thw for img in row_images]) if row_images else None
    return PackedBatch(
        input_ids.to(device),
        attention.to(device),
        (input_ids == image_pad_id).long().to(device),
        pixel_values.to(device) if pixel_values is not None else None,
        grids.to(device) if grids is not None else None,
        offsets,
    )


def reset_rope_cache(model: torch.nn.Module) -> None:
    """Qwen3-VL caches M-RoPE deltas on the module between calls; a stale value shifts positions."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "rope_deltas"):
        inner.rope_deltas = None


def sequence_logprobs(
    model: torch.nn.Module,
    batch: PackedBatch,
    temperature: float,
    never_sampled: Sequence[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probs and entropies of each token given its prefix, for a right-padded batch.

    Position 0 has no prefix and gets 0. Returns [B, T] tensors aligned with `batch.input_ids`.
    """
    reset_rope_cache(model)
    logits = model(**batch.model_inputs()).logits  # [B, T, V]
    logp, entropy = token_logprobs_and_entropy(
        logits[:, :-1], batch.input_ids[:, 1:], temperature, never_sampled
    )
    pad = torch.zeros_like(logp[:, :1])
    return torch.cat([pad, logp], dim=1), torch.cat([pad, entropy], dim=1)
