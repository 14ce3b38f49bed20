"""axpo_core/runs.py: the one vocabulary of stages, arms and slugs, read back as it was written."""

from __future__ import annotations

import typing

import pytest

from axpo_core.config import PipelineConfig
from axpo_core.runs import (
    RL_ARMS,
    STAGE_ORDER,
    Arm,
    ablation_name,
    ablation_stage,
    algorithm_of,
    is_ablation,
    stage_from_slug,
    stage_slug,
)


def test_the_config_accepts_exactly_the_stages_runs_knows():
    (stage,) = typing.get_args(PipelineConfig.model_fields["stages"].annotation)
    assert set(typing.get_args(stage)) == set(STAGE_ORDER) == {"Base", "SFT", *RL_ARMS}


@pytest.mark.parametrize("stage", [*STAGE_ORDER, "SFT+AXPO[no_credit]", "SFT+GRPO[x1.25]", "SFT+RLTF[k]"])
def test_a_slug_reads_back_as_its_stage(stage):
    assert stage_from_slug(stage_slug(stage)) == stage


def test_labels_slugs_and_algorithms():
    assert stage_slug("SFT+AXPO[no_credit]") == "sft_axpo_no_credit"
    assert ablation_stage("grpo", "x2") == "SFT+GRPO[x2]" and ablation_name("SFT+GRPO[x2]") == "x2"
    assert ablation_name("SFT+GRPO") == "none" and not is_ablation("SFT+GRPO")
    assert [algorithm_of(s) for s in ("SFT+ARPO", "SFT+RLTF[k]", "GRPO", "SFT", "Base", "other")] == [
        "arpo", "rltf", "grpo", None, None, None,
    ]
    assert stage_from_slug("other") == "other"


def test_an_arm_starts_from_its_stage_checkpoint():
    assert Arm(stage="GRPO", algo="grpo").starts_from == "Base"
    assert Arm(stage="SFT+AXPO", algo="axpo").starts_from == "SFT"
    assert Arm(stage="SFT+GRPO[x2]", algo="grpo").starts_from == "SFT"
