"""The `Generator` protocol: one assistant turn for a batch of token sequences.

The multi-turn engine (tools, turns, rewards) is backend-agnostic; a backend only continues token
sequences until a stop id or a length limit, and reports per-token log-probs and entropies
(`axpo_core.rollout.logprobs`). Backends: transformers (default, CPU/GPU), vllm (optional extra).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from axpo_core.config import SamplingConfig
from axpo_core.rollout.chat import EncodedImage


@dataclass
class GenerationRequest:
    token_ids: list[int]  # the whole context so far (prompt, earlier turns, tool responses)
    images: list[EncodedImage]  # every image whose pads appear in token_ids, in order
    max_new_tokens: int
    rollout_key: tuple[str, int] | None = (
        None  # (question_id, sample_id): lets a scripted policy find its script
    )
    # This request's sampling noise (see request_seed): the same whichever batch, worker or shard runs it.
    # None: the backend's own RNG.
    seed: int | None = None


def request_seed(seed: int, rollout_key: tuple[str, int] | None, length: int) -> int:
    """A request's sampling seed from a base seed, its rollout and its context length (one per turn)."""
    key = f"{seed}|{rollout_key}|{length}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


@dataclass
class GenerationOutput:
    token_ids: list[int]  # new tokens, the stop id included when one was hit
    logprobs: list[float]
    entropies: list[float]
    stopped: bool  # True when a stop id ended the turn, False when max_new_tokens did


class Generator(Protocol):
    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig, stop_ids: Sequence[int]
    ) -> list[GenerationOutput]: ...

    def sync_weights(self) -> None:
        """Pick up the training model's new weights (a no-op when the generator shares the module)."""
        ...
