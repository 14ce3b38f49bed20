"""The algorithm registry: every name the config accepts has one registered owner, and nothing else in the
training code dispatches on the name."""

from __future__ import annotations

import re
import subprocess
import typing
from pathlib import Path

import pytest

from axpo_core.algorithms.registry import Algorithm, extra_budget, get_algorithm, register
from axpo_core.config import AlgorithmConfig

ROOT = Path(__file__).resolve().parent.parent


def test_every_configurable_name_has_a_registered_algorithm():
    names = typing.get_args(AlgorithmConfig.model_fields["name"].annotation)
    assert set(names) == {"grpo", "axpo", "arpo", "rltf"}
    for name in names:
        algorithm = get_algorithm(name)
        assert isinstance(algorithm, Algorithm) and algorithm.name == name
    with pytest.raises(ValueError, match="unknown algorithm 'trace'"):
        get_algorithm("trace")


def test_a_name_is_registered_once():
    class Again(Algorithm):
        name = "grpo"

    get_algorithm("grpo")  # the built-ins are registered
    with pytest.raises(ValueError, match="only one class per name"):
        register(Again)


def test_the_extra_budget_multiplies_left_to_right_as_each_algorithm_did():
    assert extra_budget(0.29, 100) == 29  # 0.29·100 is 28.999… in floats
    assert extra_budget(0.25, 8) == 2 and extra_budget(0.5, 2, 4) == 4
    assert extra_budget(0.25, 3, 7) == int(0.25 * 3 * 7 + 1e-9)


def test_no_code_outside_the_registry_dispatches_on_the_algorithm_name():
    found = subprocess.run(
        ["grep", "-rnE", r"(algorithm|cfg)\.name (==|!=|in) ", "axpo_core", "tasks", "flows"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout
    hits = [line for line in found.splitlines() if not re.match(r"axpo_core/algorithms/registry\.py", line)]
    assert hits == []
