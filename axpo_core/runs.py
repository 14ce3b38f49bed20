"""Runs: the pipeline's stages and RL arms, their labels and folder slugs, and the run folder's layout.

The config's `Stage` lists the stage names a config may ask for (the schema); this module says what each is.
Everything that names a stage, builds an arm, or writes or reads a path inside a run folder asks this
module: the config's stage list, the flows, the tasks, MLflow tracking, the report, the rollout viewer and
the sweep tables. A label is what people read (`SFT+AXPO`, `SFT+GRPO[x2]`: an arm with an ablation), a
slug its folder (`sft_axpo`, `sft_grpo_x2`).

The run folder (`<experiment>/<run>/` in the object store; under a sweep `<run>/<scale>-seedS/`):

    <scale>/checkpoints/base, <scale>/checkpoints/sft       the Base model and the SFT checkpoint
    <scale>/data/rl_questions.json                          the RL data filter's kept pool
    <scale>/<stage slug>/eval/<benchmark>.jsonl             one record per evaluation sample
    <scale>/<arm slug>/checkpoints/round-N/                 the arm's policy after round N
    <scale>/<arm slug>/metrics/round-N.json                 the round's diagnostics + update/* stats
    <scale>/<arm slug>/rollouts/round-N.jsonl               one record per rollout (Trajectory.record())
    <scale>/<arm slug>/rollouts/round-N.jsonl.pkl           the same with tokens and images
    <scale>/<arm slug>/rollouts/round-N.requests.json       the round's continuation requests
    <scale>/<arm slug>/rollouts/round-N.resampled.{jsonl,pkl}   their continuations
    report/                                                 tables, plots, the rollout viewer

`RunLayout` builds these URIs for the writers; `ROUND_METRICS` and `ROUND_ROLLOUTS` parse the round files'
names back for the readers (evaluation/run_dir.py).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from axpo_core.config import AlgorithmConfig, Config, Stage
from axpo_core.storage import ObjectStore, join_uri

# The RL stages: label -> (the algorithm it trains, the stage whose checkpoint it starts from).
RL_ARMS: dict[str, tuple[str, str]] = {
    "SFT+GRPO": ("grpo", "SFT"),
    "SFT+AXPO": ("axpo", "SFT"),
    "SFT+ARPO": ("arpo", "SFT"),
    "SFT+RLTF": ("rltf", "SFT"),
    "GRPO": ("grpo", "Base"),
}
_NOT_RL = ("Base", "SFT")
if set(typing.get_args(Stage)) != {*_NOT_RL, *RL_ARMS}:  # the config accepts exactly the stages named here
    raise ImportError(f"config.Stage {typing.get_args(Stage)} and runs.RL_ARMS disagree")
#: The paper's stage order (its results table's rows); other stages (ablations) sort after, by name.
STAGE_ORDER = ["Base", "GRPO", "SFT", "SFT+GRPO", "SFT+RLTF", "SFT+ARPO", "SFT+AXPO"]
ABLATION_DEFAULT_ALGORITHM = "axpo"  # an ablation without its own `name` switches AXPO's knobs

ROUND_METRICS = re.compile(r"^round-(\d+)\.json$")  # <arm>/metrics/
ROUND_ROLLOUTS = re.compile(r"^round-(\d+)\.jsonl$")  # <arm>/rollouts/


def stage_slug(stage: str) -> str:
    """A stage's folder: `SFT+AXPO` -> `sft_axpo`, `SFT+AXPO[no_credit]` -> `sft_axpo_no_credit`."""
    return stage.lower().replace("+", "_").replace(" ", "_").replace("[", "_").replace("]", "")


_SLUGS = {stage_slug(stage): stage for stage in (*_NOT_RL, *RL_ARMS)}


def stage_from_slug(slug: str) -> str:
    """Invert `stage_slug` for the pipeline's stages and their ablations (`sft_axpo_x` -> `SFT+AXPO[x]`);
    any other folder name is its own label."""
    if slug in _SLUGS:
        return _SLUGS[slug]
    for stage in RL_ARMS:
        prefix = stage_slug(stage) + "_"
        if stage.startswith("SFT+") and slug.startswith(prefix):
            return f"{stage}[{slug[len(prefix) :]}]"
    return slug


def ablation_stage(algorithm: str, ablation: str) -> str:
    """The label of an ablation arm from the SFT checkpoint: `SFT+GRPO[x2]`."""
    return f"SFT+{algorithm.upper()}[{ablation}]"


def ablation_name(stage: str) -> str:
    """`SFT+AXPO[no_credit]` -> `no_credit`; a stage without an ablation -> `none`."""
    return stage[stage.index("[") + 1 : -1] if is_ablation(stage) else "none"


def is_ablation(stage: str) -> bool:
    return stage.endswith("]") and "[" in stage


def base_stage(stage: str) -> str:
    """The stage an ablation label extends (`SFT+GRPO[x2]` -> `SFT+GRPO`); any other label itself."""
    return stage[: stage.index("[")] if is_ablation(stage) else stage


def stage_key(stage: str) -> tuple[int, str]:
    """Sort key putting stages in `STAGE_ORDER`, unknown ones after it in name order."""
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), stage)


def algorithm_of(stage: str) -> str | None:
    """The algorithm an RL stage trains, read off its label (`SFT+RLTF[x]` -> `rltf`); None for Base, SFT
    and labels the pipeline does not make."""
    arm = RL_ARMS.get(base_stage(stage))
    return arm[0] if arm else None


class Arm(BaseModel):
    """One RL arm to train: its label in the results table, its algorithm and any ablation switches."""

    model_config = ConfigDict(frozen=True)

    stage: str  # an RL_ARMS label, or an ablation label (`ablation_stage`)
    algo: str  # the registered algorithm it trains (config/schema.py AlgorithmConfig.name)
    overrides: dict = {}  # AlgorithmConfig fields (the paper's ablation switches)

    @property
    def slug(self) -> str:
        return stage_slug(self.stage)

    @property
    def starts_from(self) -> str:
        """The stage whose checkpoint the arm starts from (GRPO: Base; the others and ablations: SFT)."""
        return RL_ARMS[self.stage][1] if self.stage in RL_ARMS else "SFT"

    def config(self, config: Config) -> Config:
        """The run's config with this arm's algorithm (overrides validated like a config file's)."""
        fields = {**config.algorithm.model_dump(), "name": self.algo, **self.overrides}
        return config.model_copy(update={"algorithm": AlgorithmConfig.model_validate(fields)})


def arms(config: Config) -> list[Arm]:
    """The RL arms the config's stages ask for, plus one arm per configured ablation, from the SFT
    checkpoint: AXPO with the ablation's switches, or the algorithm its `name` sets (e.g. `x2:
    {name: grpo, rollout_multiplier: 2}` is the arm `SFT+GRPO[x2]`)."""
    chosen = [Arm(stage=s, algo=RL_ARMS[s][0]) for s in config.pipeline.stages if s in RL_ARMS]
    for name, overrides in config.pipeline.ablations.items():
        algo = overrides.get("name", ABLATION_DEFAULT_ALGORITHM)
        chosen.append(Arm(stage=ablation_stage(algo, name), algo=algo, overrides=overrides))
    return chosen


@dataclass(frozen=True)
class RunLayout:
    """The URIs of one run's artifacts (module doc), so every task agrees on the layout; `run` is the run's
    name and any sub-folders (a scale, an arm's slug)."""

    store: ObjectStore
    experiment: str
    run: str

    @property
    def base(self) -> str:
        return self.store.uri(self.experiment, self.run)

    def checkpoint(self, name: int | str) -> str:
        """`checkpoints/round-N` for an int, `checkpoints/<name>` otherwise (e.g. "sft", "base")."""
        return join_uri(self.base, "checkpoints", f"round-{name}" if isinstance(name, int) else name)

    def rollouts(self, round_: int) -> str:
        return join_uri(self.base, "rollouts", f"round-{round_}.jsonl")

    def requests(self, round_: int) -> str:
        return join_uri(self.base, "rollouts", f"round-{round_}.requests.json")

    def resampled(self, round_: int) -> str:
        """The continuations' stem: `.jsonl` (records) and `.pkl` (trajectories) are added to it."""
        return join_uri(self.base, "rollouts", f"round-{round_}.resampled")

    def metrics(self, round_: int) -> str:
        return join_uri(self.base, "metrics", f"round-{round_}.json")

    def rl_questions(self) -> str:
        return join_uri(self.base, "data", "rl_questions.json")

    def eval(self, benchmark: str) -> str:
        return join_uri(self.base, "eval", f"{benchmark}.jsonl")

    def report(self, *parts: str) -> str:
        return join_uri(self.base, "report", *parts)
