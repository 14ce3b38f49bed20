"""The trajectory: one rollout, token-in/token-out.

A trajectory is the exact token sequence the policy saw and produced (prompt, its own turns, the tool
responses appended as tokens), with per-token sampler log-probs, entropies and a loss mask. It is never
re-rendered through a chat template: what the update trains on is what the sampler generated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# The error codes the engine records for a call whose tags are malformed (both are "format" outcomes).
UNOPENED = "unopened"  # a lone `</tool_call>`: not tool use
UNCLOSED = "unclosed"  # a `<tool_call>` whose turn ended without `</tool_call>`: tool use


@dataclass(frozen=True)
class Parent:
    """Where a resampled rollout branched off: the source rollout and how many of its tokens it kept."""

    sample_id: int
    prefix_tokens: int


@dataclass
class Trajectory:
    """One rollout of one question.

    Token arrays all have the length of `token_ids` (prompt included). `loss_mask[i] == 1` exactly for
    tokens the policy sampled; prompt and tool-response tokens are 0 (and their log-prob/entropy 0.0).
    """

    question_id: str
    sample_id: int
    token_ids: list[int]
    logprobs: list[float]
    entropies: list[float]
    loss_mask: list[int]
    prompt_len: int
    images: list[Image.Image] = field(default_factory=list, repr=False)
    # Per tool-call attempt, in order: every `<tool_call>` block the policy opened, and every lone
    # `</tool_call>` (a format error that is not tool use, paper §2.2).
    # Token spans [start, end): both tags included; an unopened call's span is its whole turn, an unclosed
    # one's runs to the end of its turn.
    tool_call_spans: list[tuple[int, int]] = field(default_factory=list)
    tool_calls: list[str] = field(default_factory=list)  # the raw text between the tags, per call
    tool_errors: list[str | None] = field(default_factory=list)  # None for a call that succeeded
    tool_outcomes: list[str] = field(default_factory=list)  # "ok" | "format" | "execution" (envs.tools)
    tool_call_opened: list[bool] = field(default_factory=list)  # False: a lone `</tool_call>`
    turns: int = 0
    truncated: bool = False
    reward: float = 0.0
    text: str = ""  # the completion (everything after the prompt), decoded with special tokens kept
    # The policy's final turn, decoded: what the reward reads (never tool output, which `text` includes).
    answer_text: str = ""
    # Why the rollout ended early when something failed on it alone (then truncated, reward 0); else None.
    error: str | None = None
    parent: Parent | None = None
    prefix_text: str = ""  # a resampled rollout's kept prefix, decoded (the completion part only)
    # The advantage group; defaults to question_id (AXPO gives each prefix's continuations their own).
    group_id: str | None = None

    @property
    def group(self) -> str:
        return self.group_id if self.group_id is not None else self.question_id

    @property
    def used_tool(self) -> bool:
        """The paper's tool use: the rollout opened at least one `<tool_call>` block."""
        return any(self.tool_call_opened)

    @property
    def num_tool_calls(self) -> int:
        """Tool-call attempts, lone closing tags included (each is a format error)."""
        return len(self.tool_calls)

    def num_outcome(self, outcome: str) -> int:
        return self.tool_outcomes.count(outcome)

    @property
    def num_tool_errors(self) -> int:
        return sum(error is not None for error in self.tool_errors)

    @property
    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def correct(self) -> bool:
        return self.reward > 0.5

    def record(self) -> dict[str, Any]:
        """The JSON-serialisable summary written to rollouts.jsonl (images are not embedded)."""
        return {
            "question_id": self.question_id,
            "sample_id": self.sample_id,
            "group_id": self.group,
            "reward": self.reward,
            "used_tool": self.used_tool,
            "num_tool_calls": self.num_tool_calls,
            "tool_calls": self.tool_calls,
            "tool_errors": self.num_tool_errors,
            "tool_error_messages": [e for e in self.tool_errors if e is not None],
            "tool_outcomes": self.tool_outcomes,
            "tool_call_opened": self.tool_call_opened,
            "turns": self.turns,
            "truncated": self.truncated,
            "error": self.error,
            "text": self.text,
            "num_policy_tokens": self.num_policy_tokens,
            "num_tokens": len(self.token_ids),
            "prompt_len": self.prompt_len,
            "num_images": len(self.images),
            "parent": None
            if self.parent is None
            else {"sample_id": self.parent.sample_id, "prefix_tokens": self.parent.prefix_tokens},
            "prefix_text": self.prefix_text,
        }

    def tensors(self) -> dict[str, list]:
        """Token-level arrays, for storing a trajectory so an update can run from storage."""
        return {
            "token_ids": self.token_ids,
            "logprobs": self.logprobs,
            "entropies": self.entropies,
            "loss_mask": self.loss_mask,
            "tool_call_spans": [list(span) for span in self.tool_call_spans],
        }


@dataclass(frozen=True)
class ContinuationRequest:
    """Sample `num_samples` continuations of `source` after its first `prefix_tokens` tokens.

    The continuations keep those tokens bit-identical (with their log-probs and mask), get
    `parent = Parent(source.sample_id, prefix_tokens)`, sample ids `first_sample_id, first_sample_id + 1, …`
    and `group_id` (AXPO gives each prefix's K continuations their own advantage group).
    `feedback` (RLTF): a critique the environment adds as a user turn after the prefix (the whole finished
    source), so each continuation is a second attempt conditioned on it.
    """

    source: Trajectory
    prefix_tokens: int
    num_samples: int
    group_id: str
    first_sample_id: int
    feedback: str | None = None

    def __post_init__(self) -> None:
        check_cut(self.source, self.prefix_tokens, feedback=self.feedback is not None)


def check_cut(source: Trajectory, cut: int, feedback: bool = False) -> None:
    """Raise ValueError unless a continuation may start after ``source[:cut]``: where the policy generates.

    Allowed: the end of the prompt; right after a token the policy sampled (inside its turn, or after a
    `</tool_call>`, whose response the engine then appends); right before one (where a turn of the policy
    begins, after a tool response and the assistant header); and, with RLTF feedback, the end of the
    rollout (the feedback turn follows). Refused: a cut inside environment tokens (a tool response, an
    image, a chat header), which would splice the policy's tokens into them and record the cut tool call
    again when the continuation repeats it.
    """
    n, mask, name = len(source.token_ids), source.loss_mask, f"{source.question_id}/{source.sample_id}"
    if not source.prompt_len <= cut <= n:
        raise ValueError(f"prefix_tokens={cut} outside [{source.prompt_len}, {n}] for {name}")
    if cut == source.prompt_len or mask[cut - 1] or (cut < n and mask[cut]) or (feedback and cut == n):
        return
    raise ValueError(
        f"prefix_tokens={cut} of {name} cuts inside environment tokens (positions {cut - 1} and "
        f"{cut} were not generated by the policy: a tool response, an image or a chat header); a "
        "continuation must start right after a policy token or where a policy turn begins"
    )
