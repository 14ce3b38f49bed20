"""The config's checks beyond field types (names, crossed bounds, empty lists: `config_problems`, run on
every construction of `Config`) and what a machine lacks for a config (`environment_problems`). Each check
names the dotted field(s) it is about, so that loading can blame the file or the `--set` override.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator

from axpo_core.config.schema import (
    REAL_BENCHMARKS,
    AlgorithmConfig,
    ConfigSchema,
    StorageConfig,
)

MAX_ECHO_CHARS = 200  # echoed input in an error (a value, a YAML snippet) is cut here

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
        if bench not in SUITES and bench not in REAL_BENCHMARKS:
            out.append(
                Problem(
                    (f"evaluation.benchmarks.{i}",),
                    f"unknown benchmark {short(bench)}; synthetic suites: {_known(SUITES)}; "
                    f"real benchmarks (read from evaluation.data_root): {_known(REAL_BENCHMARKS)}",
                )
            )
        elif bench in REAL_BENCHMARKS and ev.data_root is None:
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
        for i, bench in enumerate(ev.benchmarks):
            if bench in REAL_BENCHMARKS and not (Path(ev.data_root).expanduser() / bench).is_dir():
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


class Config(ConfigSchema):
    """An experiment's config: the schema's sections, checked across fields whenever one is built."""

    @model_validator(mode="after")
    def _names_and_bounds(self) -> Config:
        problems = config_problems(self)
        if problems:
            raise ConfigProblems(problems)
        return self
