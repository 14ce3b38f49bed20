"""The one random-stream helper reproduces each stream the project drew before it existed, number for
number: the five recipes written out literally, and their first numbers pinned."""

from __future__ import annotations

import hashlib
import random

import pytest

from axpo_core import randomness
from axpo_core.randomness import engine_seed, stream

# (seed, round) -> the first number of each stream, recorded from the literal recipes below.
PINNED = {
    (0, 1): {
        "rollout": 15869709445077838842, "resample": 1929538528345272740, "arpo": 0.41070726191526274,
        "rank": 0.577109305106709, "round": 0.010286938465437379, "update": 0.4207499227768311,
    },
    (3, 7): {
        "rollout": 630554625843244968, "resample": 15472613695389310385, "arpo": 0.7601716777693206,
        "rank": 0.42680801850895433, "round": 0.3906248646174587, "update": 0.990071312338173,
    },
}


def _before(seed: int, purpose: str, round_index: int) -> random.Random:
    """The recipes as each module wrote them before the helper."""
    return {
        "arpo": lambda: random.Random(f"{seed}:arpo:{round_index}"),  # training/steps.py detect_step
        "rank": lambda: random.Random(f"{seed}:rank:{round_index}"),  # training/steps.py detect_step
        "round": lambda: random.Random(f"{seed}:round:{round_index}"),  # training/data.py
        "update": lambda: random.Random(f"update:{seed * 7919 + round_index}"),  # steps.py + update.py
    }[purpose]()


@pytest.mark.parametrize(("seed", "round_index"), list(PINNED))
def test_each_stream_is_the_one_drawn_before(seed, round_index):
    for purpose in ("rollout", "resample"):
        digest = hashlib.sha256(f"{seed}:{purpose}:{round_index}".encode()).digest()
        assert engine_seed(seed, purpose, round_index) == int.from_bytes(digest[:8], "little")
        assert engine_seed(seed, purpose, round_index) == PINNED[(seed, round_index)][purpose]
    for purpose in ("arpo", "rank", "round", "update"):
        got, want = stream(seed, purpose, round_index), _before(seed, purpose, round_index)
        assert [got.random() for _ in range(20)] == [want.random() for _ in range(20)]
        assert stream(seed, purpose, round_index).random() == PINNED[(seed, round_index)][purpose]


def test_streams_differ_by_purpose_and_round():
    firsts = {stream(0, p, r).random() for p in ("arpo", "rank", "round", "update") for r in (1, 2)}
    assert len(firsts) == 8


def test_split_offsets_are_defined_once_and_used_by_each_split():
    from axpo_core.evaluation import runner
    from axpo_core.training import data, sft_data

    assert (randomness.RL_SEED_OFFSET, randomness.EVAL_SEED_OFFSET, randomness.SFT_SEED_OFFSET) == (
        1000, 2000, 10**9,
    )
    assert data.RL_SEED_OFFSET is randomness.RL_SEED_OFFSET
    assert runner.EVAL_SEED_OFFSET is randomness.EVAL_SEED_OFFSET
    assert sft_data.SFT_SEED_OFFSET is randomness.SFT_SEED_OFFSET
