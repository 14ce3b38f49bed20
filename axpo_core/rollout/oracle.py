"""A scripted policy: plays given assistant turns through the rollout engine.

The suites' oracle trajectories go through the same engine as the model's rollouts (same tool execution,
same token rendering), so SFT data and RL trajectories share one token format by construction.
Scripted tokens carry log-prob 0 (the script is deterministic).
"""

from __future__ import annotations

from collections.abc import Sequence

from axpo_core.config import SamplingConfig
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.generator import GenerationOutput, GenerationRequest


class ScriptedGenerator:
    """`scripts[(question_id, sample_id)]` is the list of assistant turn texts to play, in order."""

    def __init__(self, chat: ChatFormat, scripts: dict[tuple[str, int], list[str]]):
        self.chat = chat
        self.scripts = scripts

    def sync_weights(self) -> None:
        """A script has no weights."""

    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig, stop_ids: Sequence[int]
    ) -> list[GenerationOutput]:
        special = self.chat.special
        outputs = []
        for request in requests:
            if request.rollout_key not in self.scripts:
                raise KeyError(f"no script for rollout {request.rollout_key}")
            turns = self.scripts[request.rollout_key]
            turn_index = self._turns_done(request.token_ids)
            if turn_index >= len(turns):
                raise ValueError(
                    f"script for {request.rollout_key} has {len(turns)} turns; turn {turn_index + 1} asked"
                )
            ids = self.chat.text(turns[turn_index])
            if not ids or ids[-1] != special.tool_call_end:
                ids.append(special.im_end)  # an answer turn ends the assistant message
            ids = ids[: request.max_new_tokens]
            stopped = bool(ids) and ids[-1] in stop_ids
            outputs.append(GenerationOutput(ids, [0.0] * len(ids), [0.0] * len(ids), stopped))
        return outputs

    def _turns_done(self, token_ids: list[int]) -> int:
        """Tool responses after the prompt (the system prompt may mention the tags as tokens too)."""
        header = self.chat.assistant_header()
        for start in range(len(token_ids) - len(header) + 1):
            if token_ids[start : start + len(header)] == header:
                return token_ids[start:].count(self.chat.special.tool_response)
        return 0
