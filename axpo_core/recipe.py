"""The effective training and evaluation recipe of a config next to the paper's (arXiv 2605.28774, App. A).

`recipe_rows(config)` gives one row per number that shapes a run: the config's value, the paper's value
(or None where the paper gives none, i.e. this project's choice) and where in the paper it comes from;
`format_recipe` prints them for `axpo run --dry-run`. Nothing here loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from axpo_core.config import Config

__all__ = ["PAPER", "RecipeRow", "format_recipe", "recipe_rows"]

# field -> (the paper's value, where it says so). Fields absent here and listed in SHOWN are not given by
# the paper: their values are this project's choice (the real-scale YAMLs mark them so).
NINE = [
    "mathvision",
    "dynamath",
    "mathvr",
    "vstar",
    "visualprobe",
    "hrbench4k",
    "hrbench8k",
    "hrmmsearch",
    "mmsearch",
]
PAPER: dict[str, tuple[Any, str]] = {
    "model.path": (
        "Qwen3-VL-{2B,4B,8B}-Thinking",
        "Experimental setup; 32B is inference-only, the SFT teacher (Limitations)",
    ),
    "rollout.group_size": (8, "App. A, hyperparameters: N = 8 rollouts per question"),
    "rollout.max_turns": (3, "App. A: maximum number of turns per trajectory 3"),
    "rollout.sampling.temperature": (1.0, "App. A: sampling temperature 1.0"),
    "algorithm.eps_low": (0.2, "App. A: asymmetric clipping eps_low 0.2 (DAPO)"),
    "algorithm.eps_high": (0.4, "App. A: eps_high 0.4"),
    "algorithm.kl_beta": (0.001, "App. A: KL coefficient 1e-3"),
    "algorithm.budget_ratio": (0.25, "App. A: branching budget r = 0.25 of B*N"),
    "algorithm.continuations_per_prefix": (4, "App. A: K = 4 continuations per prefix"),
    "training.filter_samples": (4, "App. A: drop problems the SFT model solves on all 4 rollouts"),
    "training.teacher_path": (
        "Qwen3-VL-32B-Thinking",
        "App. A: drop problems the 32B teacher fails on all 4 rollouts",
    ),
    "training.pool_size": (
        "~37K after the filter",
        "App. A: 15,591 filtered SFT problems + 22,000 MMFineReason-hard",
    ),
    "sft.examples": (64274, "App. A: 64,274 teacher trajectories"),
    "sft.tool_share": (0.25, "App. A: ~25% of the trajectories call a tool"),
    "evaluation.benchmarks": (NINE, "Experimental setup, App. A benchmark details: nine benchmarks"),
    "evaluation.samples": (4, "App. A: 4 rollouts per question"),
    "evaluation.k": ([1, 4], "App. A: Pass@1 and Pass@4"),
    "evaluation.max_turns": (5, "App. A: maximum agentic turns 5"),
    "evaluation.max_total_tokens": (
        "32768 response tokens",
        "App. A: maximum response length 32,768; this budget counts the prompt too",
    ),
    "evaluation.sampling.temperature": (0.7, "App. A, evaluation: temperature 0.7"),
    "evaluation.sampling.top_p": (0.8, "App. A: top-p 0.8"),
    "evaluation.sampling.top_k": (20, "App. A: top-k 20"),
    "evaluation.sampling.presence_penalty": (1.5, "App. A: presence penalty 1.5"),
    "pipeline.stages": (
        ["Base", "SFT", "GRPO", "SFT+GRPO", "SFT+AXPO"],
        "Experimental setup: the baselines and SFT+AXPO (32B: Base only)",
    ),
}

SHOWN = (
    "model.path",
    "model.max_image_pixels",
    "rollout.group_size",
    "rollout.max_turns",
    "rollout.max_new_tokens_per_turn",
    "rollout.max_total_tokens",
    "rollout.sampling.temperature",
    "algorithm.eps_low",
    "algorithm.eps_high",
    "algorithm.kl_beta",
    "algorithm.budget_ratio",
    "algorithm.continuations_per_prefix",
    "training.rounds",
    "training.questions_per_round",
    "training.pool_size",
    "training.filter_samples",
    "training.teacher_path",
    "training.learning_rate",
    "training.ppo_epochs",
    "training.mini_batch_size",
    "sft.examples",
    "sft.tool_share",
    "sft.learning_rate",
    "sft.epochs",
    "sft.lora",
    "evaluation.benchmarks",
    "evaluation.samples",
    "evaluation.k",
    "evaluation.max_turns",
    "evaluation.max_new_tokens_per_turn",
    "evaluation.max_total_tokens",
    "evaluation.sampling.temperature",
    "evaluation.sampling.top_p",
    "evaluation.sampling.top_k",
    "evaluation.sampling.presence_penalty",
    "evaluation.judge",
    "pipeline.stages",
)


@dataclass(frozen=True)
class RecipeRow:
    field: str
    value: Any
    paper: Any  # None: the paper gives no value (this project's choice)
    source: str

    @property
    def differs(self) -> bool:
        """The value is not the paper's (only where the paper gives a comparable value)."""
        if self.paper is None or isinstance(self.paper, str):
            return False
        if isinstance(self.paper, list) and isinstance(self.value, list) and self.field == "pipeline.stages":
            return not set(self.value) <= set(self.paper)  # a subset of the paper's stages is its recipe
        return self.value != self.paper


def _get(config: Config, field: str) -> Any:
    node: Any = config
    for part in field.split("."):
        node = getattr(node, part)
    return node


def _effective(config: Config, field: str) -> Any:
    """Evaluation token budgets fall back to the rollout's (`runner.evaluation_config`)."""
    value = _get(config, field)
    if value is None and field in ("evaluation.max_total_tokens", "evaluation.max_new_tokens_per_turn"):
        return _get(config, "rollout." + field.split(".", 1)[1])
    return value


def recipe_rows(config: Config) -> list[RecipeRow]:
    rows = []
    for field in SHOWN:
        paper, source = PAPER.get(field, (None, "not in the paper: this project's choice"))
        rows.append(RecipeRow(field, _effective(config, field), paper, source))
    return rows


def _show(value: Any, limit: int = 40) -> str:
    text = "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
    text = "null" if value is None else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_recipe(config: Config) -> str:
    """A table: field, this config's value, the paper's value (or "-"), and the source or "this project's
    choice"; a `!` marks values that differ from a number the paper gives."""
    rows = recipe_rows(config)
    width = max(len(r.field) for r in rows)
    value_width = min(max(len(_show(r.value)) for r in rows), 40)
    lines = [f"{'field':<{width}}   {'value':<{value_width}}  paper (arXiv 2605.28774)"]
    for r in rows:
        mark = "!" if r.differs else " "
        paper = "-" if r.paper is None else _show(r.paper)
        lines.append(f"{r.field:<{width}} {mark} {_show(r.value):<{value_width}}  {paper}  ({r.source})")
    return "\n".join(lines)
