"""Every knob of an experiment, as pydantic models loaded from YAML.

`load_config(path, overrides)` is the one entry point: unknown keys and bad values fail with a single
`ConfigError` that names the file and the dotted field (e.g. `configs/tiny.yaml: algorithm.budget_ratio:
Input should be less than or equal to 1`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from axpo_core.envs.suites import BENCHMARK_SUITES


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    """Which policy: a tiny built scale (`tiny-s|m|l`) or a local checkpoint path (real Qwen3-VL)."""

    scale: str = "tiny-s"
    path: str | None = None  # a local from_pretrained folder; built from `scale` when None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"  # auto: cuda when available, else cpu
    max_image_pixels: int = Field(128 * 128, gt=0)  # the processor's max_pixels: what the model sees
    min_image_pixels: int = Field(32 * 32, gt=0)


class SamplingConfig(Section):
    temperature: float = Field(1.0, ge=0)  # 0 = greedy (log-probs then reported at T = 1)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)  # 0 = off
    presence_penalty: float = 0.0


class RolloutConfig(Section):
    backend: Literal["transformers", "vllm"] = "transformers"
    group_size: int = Field(8, ge=1)  # N rollouts per question
    max_turns: int = Field(3, ge=1)
    max_new_tokens_per_turn: int = Field(128, ge=1)
    max_total_tokens: int = Field(1024, ge=16)
    batch_size: int = Field(64, ge=1)  # rollouts generated together
    sampling: SamplingConfig = SamplingConfig()


class ToolsConfig(Section):
    enabled: list[Literal["image_zoom_in", "python", "search"]] = ["image_zoom_in", "python", "search"]
    search_index: str | None = (
        None  # a local document folder/file for `search`; None: the suites' built-in corpus
    )
    # compact: one line per tool (the tiny scales: the JSON schemas would be ~85% of every rollout's
    # tokens); full: the OpenAI-style JSON schemas real checkpoints' chat templates use.
    descriptions: Literal["full", "compact"] = "compact"
    max_calls: int = Field(4, ge=0)
    max_image_pixels: int = Field(40_000_000, gt=0)  # decompression-bomb guard
    python_timeout_s: float = Field(12.0, gt=0)
    python_memory_mb: int = Field(1024, ge=64)
    python_max_output_chars: int = Field(2000, ge=16)
    # The python sandbox refuses to run when the host lacks bubblewrap or seccomp (envs/sandbox.py), unless
    # this allows the weaker isolation it reports.
    python_allow_weak_isolation: bool = False


class AlgorithmConfig(Section):
    """GRPO and AXPO (DESIGN §4); the AXPO switches reproduce the paper's ablations."""

    name: Literal["grpo", "axpo"] = "axpo"
    eps_low: float = Field(0.2, ge=0)
    eps_high: float = Field(0.4, ge=0)
    kl_beta: float = Field(1e-3, ge=0)  # 0 skips loading the reference model
    aggregation: Literal["token-mean", "seq-mean-token-mean"] = "token-mean"
    # How AXPO's extra streams enter the loss (DESIGN §4, training/update.py `token_weights`):
    # batch_token_mean: one token mean over every rollout of the step, originals and continuations alike
    #   (verl's token-mean over the appended batch, which the paper's implementation builds on);
    # per_stream: Eq. 5 read literally: the GRPO term, each prefix term and each continuation term are
    #   token means, summed. Under GRPO (no extra streams) the two are the same.
    loss_normalization: Literal["batch_token_mean", "per_stream"] = "batch_token_mean"
    adv_eps: float = Field(1e-6, gt=0)
    # AXPO
    budget_ratio: float = Field(0.25, ge=0, le=1)  # r: extra continuations <= r * B * N
    continuations_per_prefix: int = Field(4, ge=1)  # K
    ranking: Literal["probability", "entropy", "random"] = "probability"
    prefix_fixing: bool = True  # off: resample whole rollouts from the prompt
    resample_target: Literal["tool", "no_tool"] = "tool"
    prefix_credit: bool = True
    merge_into_source_group: bool = False
    rollout_multiplier: int = Field(1, ge=1)  # GRPO with 2x rollouts = the equal-compute baseline
    resample: bool = True  # off: AXPO is GRPO bit for bit


class TrainingConfig(Section):
    rounds: int = Field(6, ge=1)
    questions_per_round: int = Field(8, ge=1)  # B
    pool_size: int = Field(90, ge=1)  # training questions generated before the RL data filter
    filter_samples: int = Field(4, ge=1)  # drop questions the SFT model solves n / n times (the paper: 4)
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(16, ge=1)  # sequences per forward/backward (memory bound)
    # PPO-style updates per rollout batch (the verl/ProRL recipe): `ppo_epochs` passes over the batch, each
    # split into mini-batches of `mini_batch_size` sequences with one optimizer step each, so the
    # importance ratio departs from 1 after the first step and the clip acts.
    ppo_epochs: int = Field(2, ge=1)
    mini_batch_size: int = Field(16, ge=1)
    seed: int = 0
    # SFT and the RL pool draw from every evaluated suite (training seeds, disjoint from evaluation's), plus
    # the no-tool control.
    suites: list[str] = [*BENCHMARK_SUITES, "control_shapes"]


class SFTConfig(Section):
    examples: int = Field(1440, ge=1)
    tool_share: float = Field(0.25, ge=0, le=1)
    # Of the no-tool examples: the share that are tool suites' lucky tool-free guesses (the rest: control
    # suites' always-right oracles); see training/sft_data.py.
    guess_share: float = Field(0.4, ge=0, le=1)
    epochs: float = Field(6.0, gt=0)
    learning_rate: float = Field(1e-2, gt=0)
    batch_size: int = Field(4, ge=1)
    lora: bool = False


class EvaluationConfig(Section):
    benchmarks: list[str] = list(BENCHMARK_SUITES)  # the nine suites mirroring the paper's benchmarks
    questions: int = Field(6, ge=1)
    samples: int = Field(4, ge=1)  # n per question
    k: list[int] = [1, 4]
    max_turns: int = Field(5, ge=1)
    # The paper's protocol is T 0.7, top-p 0.8, top-k 20, presence penalty 1.5 (the real-scale configs). The
    # tiny default drops the presence penalty: it subtracts 1.5 from every token already in the turn, and a
    # tiny model's logits are not peaked enough to write a tool call's JSON (which repeats `"`, `,` and
    # digits) through it; real checkpoints' are (see configs/qwen3vl-*.yaml).
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=0.0)
    data_root: str | None = None  # folder holding the real benchmarks (one sub-folder each), read offline
    judge: Literal["rule", "llm"] = "rule"  # where matching is hard: rule-based, or an LLM judge
    judge_model_path: str | None = None  # the local checkpoint of the LLM judge

    @model_validator(mode="after")
    def _k_fits_samples(self) -> EvaluationConfig:
        if max(self.k) > self.samples:
            raise ValueError(f"pass@k needs k <= samples; got k={max(self.k)} > samples={self.samples}")
        return self


class PipelineConfig(Section):
    """The main job's shape: which stages to train/evaluate, and what a sweep varies."""

    stages: list[Literal["Base", "SFT", "SFT+GRPO", "SFT+AXPO", "GRPO"]] = [
        "Base",
        "SFT",
        "SFT+GRPO",
        "SFT+AXPO",
    ]
    scales: list[str] = ["tiny-s"]  # a sweep runs the pipeline once per scale (× seeds)
    seeds: list[int] = [0]
    ablations: dict[
        str, dict[str, Any]
    ] = {}  # name -> algorithm overrides, each trained as an extra AXPO arm
    task_runner: Literal["threads", "dask", "ray"] = "threads"  # the evaluation fan-out
    max_workers: int = Field(2, ge=1)


class StorageConfig(Section):
    root: str = "file://runs"  # or s3://bucket/prefix
    s3_endpoint_url: str | None = None


class TrackingConfig(Section):
    tracking_uri: str | None = None  # default: sqlite:///<output dir>/mlflow.db
    experiment: str = "axpo"


class Config(Section):
    experiment: str = "tiny"
    seed: int = 0
    model: ModelConfig = ModelConfig()
    rollout: RolloutConfig = RolloutConfig()
    tools: ToolsConfig = ToolsConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    training: TrainingConfig = TrainingConfig()
    sft: SFTConfig = SFTConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    pipeline: PipelineConfig = PipelineConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the file and the field."""


DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[leaf] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (the embedded tiny default when `path` is None) with `a.b=value` overrides."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        data = yaml.safe_load(source.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    for override in overrides or []:
        key, sep, raw = override.partition("=")
        if not sep:
            raise ConfigError(f"override {override!r}: expected key=value")
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden" else " (unknown key)")
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None
