"""The algorithm registry: `algorithm.name` → the one object that owns that algorithm's whole contract.

An `Algorithm` answers, for one round (training/steps.py calls these and nothing else by name):
  * `plan`          which groups it counts as triggered and which prefixes to continue (resample, branch,
                    revise); GRPO continues nothing
  * `advantages`    the `Scored` rows (defined here) the update trains on: per-token advantages, masks,
                    and the loss stream each row belongs to (the stream decides its token weight,
                    training/update.py `token_weights`, from the common `algorithm.loss_normalization`)
  * `before_update` what it must do to the rows before the update (RLTF recomputes old log-probs)
  * `diagnostics`   its own per-round figures, beside the shared `step_diagnostics`

GRPO, AXPO, ARPO and RLTF register themselves in their modules. The comparison table's other baselines are
GRPO variants chosen by common fields, not names: CISPO is `name: grpo` with `loss: cispo` (the objective,
algorithms/grpo.py `clipped_policy_loss`), the tool bonus and penalty are `name: grpo` with `tool_bonus` /
`tool_penalty` (the reward, grpo.py `shaped_reward`).

A new algorithm is one module with a subclass of `Algorithm` decorated with `@register`, plus its module
name in `BUILTIN` (so the registry imports it) and its name in config/schema.py's `AlgorithmConfig.name`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from axpo_core.rollout.trajectory import ContinuationRequest, Trajectory

if TYPE_CHECKING:
    from axpo_core.config import Config
    from axpo_core.models.loader import Policy, SpecialIds

# The modules whose import registers the built-in algorithms.
BUILTIN = ("grpo", "axpo", "arpo", "rltf")

_REGISTRY: dict[str, Algorithm] = {}
GRPO_STREAM = "grpo"  # the ordinary GRPO term of the loss; AXPO adds one stream per prefix and continuation
A = TypeVar("A", bound="type[Algorithm]")


@dataclass
class Scored:
    """A trajectory with what the update needs: one advantage per token and the tokens that enter the loss.

    `advantages` and `mask` have the length of `trajectory.token_ids`; `mask` ⊆ `trajectory.loss_mask`
    (AXPO masks a source's continuation and a resample's prefix), and `advantages` is 0.0 off the mask.
    `stream` names the loss term the tokens belong to (Eq. 5), for `algorithm.loss_normalization`: the
    stream, not the algorithm, decides a row's token weight.
    """

    trajectory: Trajectory
    advantages: list[float]
    mask: list[int]
    stream: str = GRPO_STREAM


@dataclass(frozen=True)
class RoundData:
    """What one round hands its algorithm: the config, the rollouts, and (after the resample) the requests
    and their continuations; `group_size` rollouts per question (training/steps.py `group_size`)."""

    config: Config
    originals: Sequence[Trajectory]
    special: SpecialIds
    round_index: int
    num_questions: int
    group_size: int
    requests: Sequence[ContinuationRequest] = ()
    continuations: Sequence[Trajectory] = ()


class Algorithm:
    """The contract (module doc). The defaults are "nothing extra": no plan, no hook, no diagnostics;
    `advantages` has no default, every algorithm says how it scores."""

    name: str = ""

    def plan(self, data: RoundData) -> tuple[list[str], list[ContinuationRequest]]:
        """(triggered groups, continuation requests) for the round's originals."""
        return [], []

    def advantages(self, data: RoundData) -> list[Scored]:
        raise NotImplementedError

    def before_update(self, data: RoundData, policy: Policy, chat: Any, scored: Sequence[Scored]) -> None:
        """Called with the scored rows just before the policy update."""

    def diagnostics(self, data: RoundData) -> dict[str, float]:
        return {}


def register(cls: A) -> A:
    """Class decorator: one instance of `cls` serves `cls.name`."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"algorithm {cls.name!r}: a name, and only one class per name")
    _REGISTRY[cls.name] = cls()
    return cls


def get_algorithm(name: str) -> Algorithm:
    """The registered algorithm called `name` (config/schema.py's `algorithm.name`)."""
    for module in BUILTIN:
        importlib.import_module(f"axpo_core.algorithms.{module}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; registered: {sorted(_REGISTRY)}") from None


def extra_budget(budget_ratio: float, *counts: int) -> int:
    """The extra rollouts an algorithm may add: ⌊r · counts…⌋ (AXPO: r·B·N over the round, ARPO and RLTF:
    r·N per question), so the three arms cost the same. Multiplied left to right, as each algorithm always
    has (float products are not associative); the epsilon keeps 0.29·100 (28.999…) at 29."""
    extra = budget_ratio
    for count in counts:
        extra *= count
    return math.floor(extra + 1e-9)
