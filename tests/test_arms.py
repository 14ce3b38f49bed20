"""The sweep's arms: budget-matched GRPO through a fractional rollout multiplier, and ablation arms that
name their own algorithm."""

from __future__ import annotations

import pytest

from axpo_core.config import Config, ConfigError, config_problems, load_config
from axpo_core.runs import arms
from axpo_core.training.steps import group_size


def _config(**algorithm) -> Config:
    base = Config()
    return base.model_copy(update={"algorithm": base.algorithm.model_copy(update=algorithm)})


def test_fractional_multiplier_gives_the_budget_matched_group():
    assert group_size(_config(rollout_multiplier=1.25)) == 10  # N = 8 -> 10: AXPO's N plus its 25%
    assert group_size(_config(rollout_multiplier=2)) == 16
    assert group_size(Config()) == 8


def test_a_multiplier_that_breaks_the_group_is_refused_at_load_with_its_place():
    problems = config_problems(_config(rollout_multiplier=1.3))
    where = [p.fields for p in problems]
    assert ("algorithm.rollout_multiplier", "rollout.group_size") in where
    assert any("10.4" in p.message for p in problems)
    with pytest.raises(ValueError, match="not whole"):
        group_size(_config(rollout_multiplier=1.3))


def test_ablation_arms_take_their_algorithm_from_name(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "pipeline:\n  ablations:\n    x1.25: {name: grpo, rollout_multiplier: 1.25}\n"
        "    no_credit: {prefix_credit: false}\n"
    )
    config = load_config(path)
    chosen = {a.stage: a for a in arms(config)}
    assert chosen["SFT+GRPO[x1.25]"].algo == "grpo"
    assert chosen["SFT+AXPO[no_credit]"].algo == "axpo"
    assert group_size(chosen["SFT+GRPO[x1.25]"].config(config)) == 10
    assert chosen["SFT+GRPO[x1.25]"].config(config).algorithm.name == "grpo"


def test_an_ablation_multiplier_that_breaks_the_group_names_the_ablation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pipeline:\n  ablations:\n    bad: {name: grpo, rollout_multiplier: 1.1}\n")
    with pytest.raises(ConfigError, match=r"pipeline\.ablations\.bad\.rollout_multiplier"):
        load_config(path)
