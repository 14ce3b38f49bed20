"""Every knob of an experiment, as pydantic models loaded from YAML.

`load_config(path, overrides)` is the one entry point: unknown keys and bad values fail with a single
`ConfigError` that names the file and the dotted field (e.g. `configs/tiny.yaml: algorithm.budget_ratio:
Input should be less than or equal to 1`).
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from axpo_core.envs.suites import BENCHMARK_SUITES

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
    # How AXPO's extra streams enter the loss (DESIGN §4, training/update.py `token_weights`):
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
    sweep: SweepConfig = SweepConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _names_and_bounds(self) -> Config:
        problems = config_problems(self)
        if problems:
            raise ConfigProblems(problems)
        return self


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the file and the field."""


# ------------------------------------------------------------------------------------ semantic checks
# Kept apart from the sections' field lists: each check names the dotted field(s) it is about, so that
# load_config can blame the file or the `--set` override that set them.

# = axpo_core.models.tiny.TINY_SCALES (a test keeps them equal); not imported: that module loads torch.
TINY_SCALE_NAMES = ("tiny-s", "tiny-m", "tiny-l")
_DEVICE = re.compile(r"auto|cpu|mps|meta|(cuda|xpu)(:\d+)?")
_MAX_NAMES_SHOWN = 12


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: the dotted fields it is about (the first is named) and why."""

    fields: tuple[str, ...]
    message: str


class ConfigProblems(ValueError):
    """Raised inside validation with every Problem found; load_config turns it into one ConfigError."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.fields[0]}: {p.message}" for p in problems))
        self.problems = problems


def _known(names: Any) -> str:
    names = list(names)
    shown = ", ".join(names[:_MAX_NAMES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_NAMES_SHOWN else "")


def _storage_problems(storage: StorageConfig) -> list[Problem]:
    root = storage.root
    scheme, sep, rest = root.partition("://")
    if not root.strip():
        return [Problem(("storage.root",), "is empty (use file://<folder> or s3://<bucket>/<prefix>)")]
    if sep and scheme == "s3":
        if not rest.partition("/")[0]:
            return [
                Problem(
                    ("storage.root",), f"S3 root without a bucket: {short(root)} (s3://<bucket>/<prefix>)"
                )
            ]
    elif sep and scheme != "file":
        return [
            Problem(
                ("storage.root",), f"unsupported storage scheme {short(scheme)}:// (use file:// or s3://)"
            )
        ]
    endpoint = storage.s3_endpoint_url
    if endpoint is not None and not re.match(r"https?://[^/\s]+", endpoint):
        return [Problem(("storage.s3_endpoint_url",), f"not an http(s):// URL: {short(endpoint)}")]
    return []


def config_problems(config: Config) -> list[Problem]:
    """What is wrong with a config beyond field types: unknown names, crossed bounds, empty lists.
    Pure (no filesystem, no imports of heavy packages); `environment_problems` checks the machine."""
    from axpo_core.envs.suites import SUITES
    from axpo_core.evaluation.benchmarks import BENCHMARKS

    out: list[Problem] = []
    m = config.model
    if m.path is None:
        if m.scale not in TINY_SCALE_NAMES:
            out.append(
                Problem(
                    ("model.scale", "model.path"),
                    f"unknown scale {short(m.scale)}: tiny scales are {_known(TINY_SCALE_NAMES)}; "
                    "any other scale needs model.path (a local checkpoint folder)",
                )
            )
        for i, scale in enumerate(config.pipeline.scales):
            if scale not in TINY_SCALE_NAMES:
                out.append(
                    Problem(
                        (f"pipeline.scales.{i}", "model.path"),
                        f"unknown scale {short(scale)}: tiny scales are {_known(TINY_SCALE_NAMES)}",
                    )
                )
    if not _DEVICE.fullmatch(m.device):
        out.append(
            Problem(("model.device",), f"unknown device {short(m.device)} (auto, cpu, cuda, cuda:N, mps)")
        )
    if m.min_image_pixels > m.max_image_pixels:
        out.append(
            Problem(
                ("model.min_image_pixels", "model.max_image_pixels"),
                f"{m.min_image_pixels} is above model.max_image_pixels={m.max_image_pixels}",
            )
        )
    r = config.rollout
    if r.max_new_tokens_per_turn > r.max_total_tokens:
        out.append(
            Problem(
                ("rollout.max_new_tokens_per_turn", "rollout.max_total_tokens"),
                f"{r.max_new_tokens_per_turn} is above rollout.max_total_tokens={r.max_total_tokens}",
            )
        )
    t = config.training
    if t.questions_per_round > t.pool_size:
        out.append(
            Problem(
                ("training.questions_per_round", "training.pool_size"),
                f"{t.questions_per_round} questions per round from a pool of {t.pool_size} (before the "
                "data filter): every round would reuse the same questions; raise training.pool_size",
            )
        )
    if t.teacher_path is not None and not t.teacher_path.strip():
        out.append(
            Problem(("training.teacher_path",), "is empty (a checkpoint folder, or null for no filter)")
        )
    if not config.training.suites:
        out.append(Problem(("training.suites",), f"is empty; known suites: {_known(SUITES)}"))
    for i, suite in enumerate(config.training.suites):
        if suite not in SUITES:
            out.append(
                Problem((f"training.suites.{i}",), f"unknown suite {short(suite)}; known: {_known(SUITES)}")
            )
    ev = config.evaluation
    eval_turn = ev.max_new_tokens_per_turn or r.max_new_tokens_per_turn
    eval_total = ev.max_total_tokens or r.max_total_tokens
    own_budget = ev.max_new_tokens_per_turn is not None or ev.max_total_tokens is not None
    if own_budget and eval_turn > eval_total:  # (the rollout's own pair is checked above)
        out.append(
            Problem(
                ("evaluation.max_new_tokens_per_turn", "evaluation.max_total_tokens"),
                f"{eval_turn} tokens per turn is above the evaluation's max_total_tokens={eval_total}",
            )
        )
    if not ev.k or min(ev.k) < 1:
        out.append(Problem(("evaluation.k",), f"pass@k needs at least one k, each >= 1; got k={short(ev.k)}"))
    elif max(ev.k) > ev.samples:
        out.append(
            Problem(
                ("evaluation.k", "evaluation.samples"),
                f"pass@k needs k <= samples; got k={max(ev.k)} > samples={ev.samples}",
            )
        )
    if not ev.benchmarks:
        out.append(Problem(("evaluation.benchmarks",), "is empty"))
    for i, bench in enumerate(ev.benchmarks):
        if bench not in SUITES and bench not in BENCHMARKS:
            out.append(
                Problem(
                    (f"evaluation.benchmarks.{i}",),
                    f"unknown benchmark {short(bench)}; synthetic suites: {_known(SUITES)}; "
                    f"real benchmarks (read from evaluation.data_root): {_known(BENCHMARKS)}",
                )
            )
        elif bench in BENCHMARKS and ev.data_root is None:
            out.append(
                Problem(
                    (f"evaluation.benchmarks.{i}", "evaluation.data_root"),
                    f"{bench} is a real benchmark, read from <evaluation.data_root>/{bench}: set "
                    "evaluation.data_root",
                )
            )
    if ev.judge == "llm" and ev.judge_model_path is None:
        out.append(
            Problem(("evaluation.judge_model_path", "evaluation.judge"), "evaluation.judge is llm: set it")
        )
    multiplier = config.algorithm.rollout_multiplier
    out += _multiplier_problems(("algorithm.rollout_multiplier",), multiplier, config)
    p = config.pipeline
    out += _shaping_problems("algorithm", config.algorithm, "SFT+AXPO" in p.stages)
    if not p.stages:
        out.append(Problem(("pipeline.stages",), "is empty: name at least one stage (e.g. [Base])"))
    for name, overrides in p.ablations.items():
        where = f"pipeline.ablations.{short(str(name), 60)}"
        if not isinstance(overrides, dict) or not overrides:
            out.append(
                Problem((where,), "must map AlgorithmConfig fields to values, e.g. {prefix_credit: false}")
            )
            continue
        unknown = [k for k in overrides if k not in AlgorithmConfig.model_fields]
        for key in unknown:
            known = f"not an algorithm field; known: {_known(AlgorithmConfig.model_fields)}"
            out.append(
                Problem((f"{where}.{short(str(key), 60)}",), REMOVED_KEYS.get(("algorithm", key), known))
            )
        if not unknown:
            try:
                arm = AlgorithmConfig.model_validate({**config.algorithm.model_dump(), **overrides})
            except ValidationError as exc:
                out += [
                    Problem((f"{where}.{_loc(err['loc'])}",), _pydantic_message(err)) for err in exc.errors()
                ]
            else:
                where_m = (f"{where}.rollout_multiplier",)
                out += _multiplier_problems(where_m, arm.rollout_multiplier, config)
                out += _shaping_problems(where, arm, arm.name == "axpo")
    out += _storage_problems(config.storage)
    return out


def _shaping_problems(where: str, algorithm: AlgorithmConfig, axpo: bool) -> list[Problem]:
    """Reward shaping is a GRPO (or ARPO) baseline: AXPO's prefix credit reads the raw reward, so a shaped
    AXPO would mix two rewards in one group."""
    out = []
    for field in ("tool_bonus", "tool_penalty"):
        if axpo and getattr(algorithm, field) > 0:
            out.append(
                Problem(
                    (f"{where}.{field}",),
                    f"{getattr(algorithm, field):g} reaches an AXPO arm: reward shaping is a GRPO baseline; "
                    "set it in an arm with name: grpo (e.g. pipeline.ablations.bonus: {name: grpo, "
                    "tool_bonus: 0.5})",
                )
            )
    return out


def scaled_count(count: int, multiplier: float, what: str) -> int:
    """`count` x `multiplier`, which must be a whole number (config_problems checks it at load)."""
    n = count * multiplier
    if abs(n - round(n)) > 1e-9:
        raise ValueError(f"algorithm.rollout_multiplier={multiplier:g} x {what}={count} is not whole")
    return round(n)


def _multiplier_problems(where: tuple[str, ...], multiplier: float, config: Config) -> list[Problem]:
    """N x the multiplier rollouts per question, and mini-batches scaled alike, must be whole numbers."""
    out = []
    for field, count in (
        ("rollout.group_size", config.rollout.group_size),
        ("training.mini_batch_size", config.training.mini_batch_size),
    ):
        n = count * multiplier
        if abs(n - round(n)) > 1e-9:
            out.append(
                Problem((*where, field), f"{multiplier:g} x {field}={count} is {n:g}: it must be whole")
            )
    return out


def environment_problems(config: Config) -> list[Problem]:
    """What this machine lacks for a config: model/index/data folders, vLLM and CUDA, task-runner extras."""
    import importlib.util

    out: list[Problem] = []

    def folder(field: str, value: str | None, need: str | None = None) -> None:
        if value is None:
            return
        path = Path(value).expanduser()
        if not path.exists():
            out.append(Problem((field,), f"no such folder: {short(value)}"))
        elif not path.is_dir():
            out.append(Problem((field,), f"not a folder: {short(value)}"))
        elif need is not None and not (path / need).is_file():
            out.append(Problem((field,), f"{short(value)} has no {need} (not a from_pretrained folder)"))

    folder("model.path", config.model.path, need="config.json")
    folder("training.teacher_path", config.training.teacher_path, need="config.json")
    index = config.tools.search_index
    if index is not None and not Path(index).expanduser().exists():
        out.append(Problem(("tools.search_index",), f"no such file or folder: {short(index)}"))
    ev = config.evaluation
    folder("evaluation.data_root", ev.data_root)
    if ev.data_root is not None and Path(ev.data_root).expanduser().is_dir():
        from axpo_core.evaluation.benchmarks import BENCHMARKS

        for i, bench in enumerate(ev.benchmarks):
            if bench in BENCHMARKS and not (Path(ev.data_root).expanduser() / bench).is_dir():
                out.append(
                    Problem(
                        (f"evaluation.benchmarks.{i}", "evaluation.data_root"),
                        f"{bench}: no folder {short(str(Path(ev.data_root) / bench))}",
                    )
                )
    if ev.judge == "llm":
        folder("evaluation.judge_model_path", ev.judge_model_path, need="config.json")

    wants_cuda = config.rollout.backend == "vllm" or config.model.device.startswith("cuda")
    if config.rollout.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        out.append(
            Problem(
                ("rollout.backend",),
                "vllm is not installed (pip install 'axpo[vllm]' on a CUDA machine), or use "
                "rollout.backend=transformers",
            )
        )
    elif wants_cuda and not _cuda_available():
        field = "rollout.backend" if config.rollout.backend == "vllm" else "model.device"
        out.append(Problem((field,), "needs a CUDA GPU, and this machine has none (torch sees no CUDA)"))
    extras = {"dask": "prefect_dask", "ray": "prefect_ray"}
    module = extras.get(config.pipeline.task_runner)
    if module is not None and importlib.util.find_spec(module) is None:
        out.append(
            Problem(
                ("pipeline.task_runner",),
                f"{config.pipeline.task_runner} needs `pip install {module.replace('_', '-')}`",
            )
        )
    return out


def _cuda_available() -> bool:
    import torch  # only for configs that ask for CUDA

    return bool(torch.cuda.is_available())


# ------------------------------------------------------------------------------------------- loading

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; more is a mistake (or an attack)
MAX_CONFIG_VALUES = 20_000  # values after YAML aliases are expanded (an alias bomb expands to billions)
MAX_ECHO_CHARS = 200  # echoed input in an error (a value, a YAML snippet) is cut here
MAX_ERROR_CHARS = 2000  # the whole message
_MAX_PROBLEMS_SHOWN = 8

_echo = reprlib.Repr()
_echo.maxstring = _echo.maxother = 80
_echo.maxlist = _echo.maxtuple = _echo.maxdict = _echo.maxset = 6
_echo.maxlevel = 3


def short(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` on one line, cut to `limit` characters (errors echo input; input may be huge)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(short(str(part), 60) for part in loc) or "<root>"


# Keys that were once fields: (section, key) -> what to write instead, so an old config fails by name.
REMOVED_KEYS = {
    ("training", "seed"): "removed (it was never read): the experiment seed is the top-level `seed`",
    ("algorithm", "resample"): "removed: AXPO without resampling is GRPO, set algorithm.name: grpo",
}


def _pydantic_message(err: Any) -> str:
    message = short(str(err["msg"]).removeprefix("Value error, "))
    if err["type"] == "extra_forbidden":
        return REMOVED_KEYS.get(tuple(err["loc"][-2:]), "unknown key")
    if isinstance(err["input"], dict):  # a whole section: its fields are named elsewhere
        return message
    return f"{message} (got {short(_echo.repr(err['input']))})"


def _yaml_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return short(f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})")
    return short(exc)


def _count_values(data: Any) -> int:
    """The number of values in `data` with aliases expanded, counting at most MAX_CONFIG_VALUES + 1."""
    count, stack = 0, [data]
    while stack and count <= MAX_CONFIG_VALUES:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend(node)
    return count


def _read_yaml(source: Path) -> Any:
    where = str(source)
    try:
        if source.is_dir():
            raise ConfigError(f"{where}: is a folder, not a config file")
        with source.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {short(exc.strerror or str(exc))}") from None
    except ConfigError:
        raise
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ConfigError(f"{where}: not a usable path: {short(exc)}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    return _parse_yaml(text, where)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_message(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None
    if _count_values(data) > MAX_CONFIG_VALUES:
        raise ConfigError(
            f"{where}: expands to more than {MAX_CONFIG_VALUES} values (YAML aliases?); not a config"
        )
    return data


@dataclass(frozen=True)
class _Override:
    text: str  # as given, `a.b=value`
    key: str

    def covers(self, field: str) -> bool:
        return field == self.key or field.startswith(self.key + ".") or self.key.startswith(field + ".")


def _apply_override(data: dict[str, Any], text: str) -> _Override:
    where = f"--set {short(text)}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"{where}: expected key=value")
    parts = key.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(
            f"{where}: the key {short(key)!r} has an empty part (expected e.g. rollout.group_size)"
        )
    value = _parse_yaml(raw, where)
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    return _Override(text, key)


def _origin(fields: tuple[str, ...], overrides: list[_Override], source: str) -> str:
    for override in reversed(overrides):  # the last override of a field is the one that counts
        if any(override.covers(f) for f in fields):
            return f"--set {short(override.text)}"
    return source


def _format(problems: list[tuple[str, str]]) -> str:
    """`origin: field: why` per problem; an origin is not repeated for the problems that follow it."""
    parts, last = [], None
    for origin, text in problems[:_MAX_PROBLEMS_SHOWN]:
        parts.append(text if origin == last else f"{origin}: {text}")
        last = origin
    if len(problems) > _MAX_PROBLEMS_SHOWN:
        parts.append(f"... and {len(problems) - _MAX_PROBLEMS_SHOWN} more")
    return short("; ".join(parts), MAX_ERROR_CHARS)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, check_environment: bool = True
) -> Config:
    """Load a YAML config (the embedded tiny default when `path` is None) with `a.b=value` overrides.

    Every problem fails here, in one `ConfigError` naming the file or the `--set` override and the field:
    YAML and types, unknown names and crossed bounds (`config_problems`) and, unless `check_environment`
    is off, what this machine lacks (`environment_problems`: folders, vLLM/CUDA, task-runner extras).
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG
    where = short(str(source))
    data = _read_yaml(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping, got {type(data).__name__}")
    applied = [_apply_override(data, text) for text in overrides or []]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        found: list[tuple[str, str]] = []
        for err in exc.errors():
            error = (err.get("ctx") or {}).get("error")
            if isinstance(error, ConfigProblems):
                found += [
                    (_origin(p.fields, applied, where), f"{p.fields[0]}: {p.message}") for p in error.problems
                ]
            else:
                field = _loc(err["loc"])
                found.append((_origin((field,), applied, where), f"{field}: {_pydantic_message(err)}"))
        raise ConfigError(_format(found)) from None
    if check_environment:
        problems = environment_problems(config)
        if problems:
            raise ConfigError(
                _format(
                    [(_origin(p.fields, applied, where), f"{p.fields[0]}: {p.message}") for p in problems]
                )
            )
    return config
