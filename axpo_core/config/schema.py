"""The config's schema: every knob of an experiment as pydantic sections, their types, defaults and bounds.

The cross-field checks are checks.py's, the YAML loading loading.py's (package doc).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from axpo_core.envs.suites import BENCHMARK_SUITES

# The paper's real benchmarks a config may name (read from <evaluation.data_root>/<name>); their adapters
# are axpo_core/evaluation/benchmarks/, whose registry checks at import that it serves exactly these.
REAL_BENCHMARKS = (
    "mathvision", "dynamath", "mathvr", "vstar", "visualprobe", "hrbench4k", "hrbench8k", "hrmmsearch",
    "mmsearch",
)
# The stages a pipeline can run; what each is (its algorithm, its start, its folder) is axpo_core/runs.py's.
Stage = Literal["Base", "SFT", "SFT+GRPO", "SFT+AXPO", "SFT+ARPO", "SFT+RLTF", "GRPO"]


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
    # Tiny scales: at most this many steps of in-context recall pretraining in the build (models/pretrain.py);
    # None: the scale's own (tiny.py). 0 builds an untrained model, as the plumbing tests use.
    recall_pretrain_steps: int | None = Field(None, ge=0)


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
    # The RL rounds' rollout and resample tasks split their questions/requests into this many shards, run
    # on pipeline.task_runner; each shard on Ray asks for num_gpus GPUs. The trajectories do not change.
    num_workers: int = Field(1, ge=1)
    num_gpus: float = Field(0.0, ge=0)


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
    # The one cap on every text a tool puts into the context (tools.ToolSession): python's output, errors
    # and tracebacks, search results, messages about malformed calls (plus one note of what was cut).
    python_max_output_chars: int = Field(2000, ge=16)
    # The python sandbox refuses to run when the host lacks bubblewrap or seccomp (envs/sandbox.py), unless
    # this allows the weaker isolation it reports.
    python_allow_weak_isolation: bool = False


class AlgorithmConfig(Section):
    """The RL algorithm: `name` picks the registered one (algorithms/registry.py); the clip, KL, loss and
    advantage fields are common, the rest belong to one algorithm each. The AXPO switches reproduce the
    paper's ablations; the ARPO, RLTF, CISPO (`loss: cispo` under `name: grpo`) and reward-shaping fields its
    comparison table (tables/tab_comparison.tex)."""

    name: Literal["grpo", "axpo", "arpo", "rltf"] = "axpo"
    eps_low: float = Field(0.2, ge=0)
    eps_high: float = Field(0.4, ge=0)
    kl_beta: float = Field(1e-3, ge=0)  # 0 skips loading the reference model
    aggregation: Literal["token-mean", "seq-mean-token-mean"] = "token-mean"
    # How AXPO's extra streams enter the loss (docs/design.md §4, training/update.py `token_weights`):
    # batch_token_mean: one token mean over every rollout of the step, originals and continuations alike
    #   (verl's token-mean over the appended batch, which the paper's implementation builds on);
    # per_stream: Eq. 5 read literally: the GRPO term, each prefix term and each continuation term are
    #   token means, summed. Under GRPO (no extra streams) the two are the same.
    loss_normalization: Literal["batch_token_mean", "per_stream"] = "batch_token_mean"
    # The policy objective: ppo_clip (App. A, Eq. clip-app) or cispo (MiniMax-M1's clipped IS weight, a
    # baseline of the paper's comparison table; its upper bound is eps_high, this project's choice, so the
    # two differ only in the objective; no lower bound by default, as MiniMax-M1).
    loss: Literal["ppo_clip", "cispo"] = "ppo_clip"
    cispo_eps_low: float | None = Field(None, ge=0)
    adv_eps: float = Field(1e-6, gt=0)
    # AXPO
    budget_ratio: float = Field(0.25, ge=0, le=1)  # r: extra continuations <= r * B * N
    continuations_per_prefix: int = Field(4, ge=1)  # K
    ranking: Literal["probability", "entropy", "random"] = "probability"
    prefix_fixing: bool = True  # off: resample whole rollouts from the prompt
    resample_target: Literal["tool", "no_tool"] = "tool"
    prefix_credit: bool = True
    merge_into_source_group: bool = False
    # N x this many rollouts per question (an integer): 2 is the paper's equal-compute GRPO baseline, 1.25
    # the budget-matched one (N = 10 for AXPO's N = 8 plus <= 25% continuations). Mini-batches grow by the
    # same factor (verl counts them in questions), so the optimizer steps per round stay the same.
    rollout_multiplier: float = Field(1.0, ge=1)
    # ARPO (arXiv 2507.19849 §3.1; algorithms/arpo.py). Defaults: their released 7B script (k = 20 tokens,
    # beam 2 = one branch per decision, branch_probability 0.5, entropy_weight 0.2).
    arpo_entropy_tokens: int = Field(20, ge=1)  # k: tokens after a tool response whose entropy is read
    arpo_entropy_weight: float = Field(0.2, ge=0)  # β in P_t = α + β·ΔH_t
    arpo_threshold: float = 0.5  # τ: branch where P_t > τ (above 1 + β·k: never)
    arpo_base_probability: float | None = Field(None, ge=0, le=1)  # α; None: α ~ U(0, 1) per decision
    arpo_branches: int = Field(1, ge=0)  # Z partial rollouts per branching decision; 0: ARPO is GRPO
    # M − N' per question; None: ⌊budget_ratio · N⌋, AXPO's extra budget per question (equal cost).
    arpo_branch_budget: int | None = Field(None, ge=0)
    arpo_fill: bool = True  # budget the branches left: fresh rollouts from the prompt (ARPO's termination)
    arpo_advantage: Literal["soft", "hard"] = "soft"  # §3.2; soft (ARPO's default) is GRPO over all M
    # RLTF-SD (arXiv 2602.02482; algorithms/rltf.py): second attempts after the verifier's critique, per
    # question; None: ⌊budget_ratio · N⌋, AXPO's extra budget.
    rltf_revisions: int | None = Field(None, ge=0)
    # Reward shaping of the comparison table (algorithms/grpo.py `shaped_reward`): GRPO + tool bonus
    # (DeepEyes: a bonus for a correct rollout that used a tool) and GRPO + tool penalty (OTC: fewer calls
    # for the same correct answer). Only the advantages see them; rewards, diagnostics' reward_mean and
    # Pass@k keep the raw answer score.
    tool_bonus: float = Field(0.0, ge=0)  # DeepEyes: 1.5 (its 1.2 tool vs 0.8 accuracy weights)
    tool_bonus_unit: Literal["rollout", "call"] = "rollout"  # once per tool-using rollout, or per call
    tool_bonus_on: Literal["correct", "all"] = "correct"
    tool_penalty: float = Field(0.0, ge=0)
    tool_penalty_unit: Literal["call", "rollout"] = "call"
    tool_penalty_on: Literal["correct", "all"] = "correct"


class TrainingConfig(Section):
    rounds: int = Field(12, ge=1)  # configs/tiny.yaml says why 12; the sweeps pin 6
    questions_per_round: int = Field(8, ge=1)  # B
    pool_size: int = Field(90, ge=1)  # training questions generated before the RL data filter
    filter_samples: int = Field(4, ge=1)  # drop questions the SFT model solves n / n times (the paper: 4)
    # The paper's second filter: drop questions the teacher (its Qwen3-VL-32B-Thinking) fails n / n times.
    # A local checkpoint folder; None: no teacher filter (the synthetic suites' oracles are the teacher).
    teacher_path: str | None = None
    learning_rate: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    micro_batch_size: int = Field(16, ge=1)  # sequences per forward/backward (memory bound)
    # PPO-style updates per rollout batch (the verl/ProRL recipe): `ppo_epochs` passes over the batch, each
    # split into mini-batches of `mini_batch_size` sequences with one optimizer step each, so the
    # importance ratio departs from 1 after the first step and the clip acts.
    ppo_epochs: int = Field(2, ge=1)
    mini_batch_size: int = Field(16, ge=1)
    # "groups": a mini-batch is mini_batch_size / group_size whole questions with all their rollouts and
    # continuations (verl counts mini-batches in prompts; every arm takes the same optimizer steps); "rows":
    # single rollouts shuffled (the published sweeps' protocol). training/update.py says more.
    minibatch: Literal["groups", "rows"] = "groups"
    # Forward a micro-batch's shared prompts and continuation prefixes once (rollout/prefix_tree.py): the
    # same loss and gradients up to float rounding, fewer tokens forwarded.
    shared_prefix: bool = True
    # Real sizes (training/distributed.py). world_size > 1: the update runs on that many local processes
    # under torchrun, FSDP2-sharded (policy, reference, optimizer state), with the one-process loss.
    world_size: int = Field(1, ge=1)
    autocast_bf16: bool = False  # bf16 compute (FSDP: its mixed-precision policy, fp32 gradient reduction)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass
    reference_device: str | None = None  # the frozen reference's device, e.g. "cpu" (None: the policy's)
    # SFT and the RL pool draw from every evaluated suite (training seeds, disjoint from evaluation's), plus
    # the no-tool control.
    suites: list[str] = [*BENCHMARK_SUITES, "control_shapes"]


class SFTConfig(Section):
    examples: int = Field(2880, ge=1)
    tool_share: float = Field(0.25, ge=0, le=1)
    # Of the no-tool examples: the share that are tool suites' lucky tool-free guesses (the rest: control
    # suites' always-right oracles); see training/sft_data.py.
    guess_share: float = Field(0.4, ge=0, le=1)
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(1e-2, gt=0)
    batch_size: int = Field(4, ge=1)
    lora: bool = False
    # One prefix-tree forward per batch (the rows' shared system prompt once, no padding): the same loss up to
    # float rounding (training/sft.py)
    shared_prefix: bool = True


class EvaluationConfig(Section):
    benchmarks: list[str] = list(BENCHMARK_SUITES)  # the nine suites mirroring the paper's benchmarks
    questions: int = Field(12, ge=1)
    samples: int = Field(4, ge=1)  # n per question
    k: list[int] = [1, 4]
    max_turns: int = Field(5, ge=1)
    # Token budgets of evaluation rollouts (the paper: 32,768 response tokens); None: the rollout's.
    max_new_tokens_per_turn: int | None = Field(None, ge=1)
    max_total_tokens: int | None = Field(None, ge=16)
    # The paper's protocol is T 0.7, top-p 0.8, top-k 20, presence penalty 1.5 (the real-scale configs). The
    # tiny default drops the presence penalty: it subtracts 1.5 from every token already in the turn, and a
    # tiny model's logits are not peaked enough to write a tool call's JSON (which repeats `"`, `,` and
    # digits) through it; real checkpoints' are (see configs/qwen3vl-*.yaml).
    sampling: SamplingConfig = SamplingConfig(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=0.0)
    data_root: str | None = None  # folder holding the real benchmarks (one sub-folder each), read offline
    judge: Literal["rule", "llm"] = "rule"  # where matching is hard: rule-based, or an LLM judge
    judge_model_path: str | None = None  # the local checkpoint of the LLM judge


class PipelineConfig(Section):
    """The main job's shape: which stages to train/evaluate, and what a sweep varies."""

    stages: list[Stage] = [
        "Base",
        "SFT",
        "SFT+GRPO",
        "SFT+AXPO",
    ]
    scales: list[str] = ["tiny-s"]  # a sweep runs the pipeline once per scale (× seeds)
    seeds: list[int] = [0]
    # name -> algorithm overrides, each trained as an extra arm from the SFT checkpoint: AXPO with those
    # switches, or the algorithm the overrides' `name` sets (`SFT+GRPO[x2]` for {name: grpo, ...}).
    ablations: dict[str, dict[str, Any]] = {}
    task_runner: Literal["threads", "dask", "ray"] = "threads"  # the evaluation fan-out, rollout shards
    max_workers: int = Field(2, ge=1)


class SweepConfig(Section):
    """How `axpo sweep` runs its scale × seed variants (all under one MLflow parent run either way)."""

    # inline: one after the other in this process. deployments: each variant is a run of `deployment`
    # (registered by `axpo deploy`), which any worker of its work pool picks up, so as many variants run at
    # once as there are workers; the sweep waits for all. Workers on other machines need the same store
    # (S3) and MLflow tracking server as the sweep.
    mode: Literal["inline", "deployments"] = "inline"
    deployment: str = "pipeline/pipeline-tiny"  # <flow>/<deployment>, as deployments/prefect.yaml names it
    poll_s: float = Field(5.0, gt=0)  # how often the sweep reads its variants' states
    timeout_s: float = Field(6 * 3600.0, gt=0)  # a variant still not finished then fails the sweep


class StorageConfig(Section):
    root: str = "file://runs"  # or s3://bucket/prefix
    s3_endpoint_url: str | None = None
    # Per attempt: a black-hole endpoint fails after (retries + 1) attempts of at most this long each,
    # plus the backoff (0.2 + 0.4 + 0.8 + 1.6 s): under 30 s with the defaults.
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    read_timeout_s: float = Field(5.0, gt=0, le=300)
    retries: int = Field(4, ge=0, le=20)
    retry_backoff_s: float = Field(0.2, ge=0, le=60)


class TrackingConfig(Section):
    tracking_uri: str | None = None  # default: sqlite:///<output dir>/mlflow.db
    experiment: str = "axpo"
    # Where MLflow keeps run artifacts (report, tables, rollout samples): e.g. s3://bucket/mlflow (reached
    # through storage.s3_endpoint_url). Default: <output dir>/mlartifacts next to a local store, or the
    # tracking server's own default. Fixed when the MLflow experiment is created (MLflow cannot move it).
    artifact_location: str | None = None


class ConfigSchema(Section):
    """The top level of a config: its sections. `Config` (checks.py) is this with the cross-field checks
    run on every construction; use that one."""

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
    sweep: SweepConfig = SweepConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()
