"""Every random stream of a run, derived from (experiment seed, purpose, round) in one place.

A rerun after a crash redoes the same work because each step draws from its own stream, keyed by what it
is for and which round it is in, never from a shared generator whose position depends on what ran before.
The recipes below are the ones the project has always used (the pinned tests in tests/test_randomness.py
hold them): changing one changes every result, so a new purpose gets a new name, never an edited recipe.

Purposes:
  rollout, resample  the base seed of a round's rollouts / continuations (`engine_seed`: an integer the
                     engine derives each request's seed from)
  round              which pool questions a round draws (training/data.py)
  rank               AXPO's random ranking ablation (algorithms/axpo.py)
  arpo               ARPO's per-branch α draws (algorithms/arpo.py)
  update             the update's mini-batch order (training/update.py)

The data splits' question seeds are offsets from the experiment seed, one per split, so no question is in
two of them (for any seed below ~10⁹ − 2000).
"""

from __future__ import annotations

import hashlib
import random
from typing import Literal

RL_SEED_OFFSET = 1000  # the RL training pool: suite seed 1000 + seed (training/data.py)
EVAL_SEED_OFFSET = 2000  # evaluation questions: 2000 + seed (evaluation/runner.py)
SFT_SEED_OFFSET = 1_000_000_000  # SFT questions: 10⁹ + seed (training/sft_data.py)

EngineStream = Literal["rollout", "resample"]
Stream = Literal["round", "rank", "arpo", "update"]

# The update's order predates the string keys: it hashes one integer, seed·7919 + round (7919 is prime, so
# no two (seed, round) pairs below 7919 rounds collide).
_UPDATE_SEED_STRIDE = 7919


def engine_seed(seed: int, purpose: EngineStream, round_index: int) -> int:
    """The base seed of a round's rollouts or resamples; the engine derives each request's seed from it and
    the request's question, sample and turn, so no worker, shard or batch changes a trajectory."""
    digest = hashlib.sha256(f"{seed}:{purpose}:{round_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def stream(seed: int, purpose: Stream, round_index: int) -> random.Random:
    """A fresh generator for one purpose in one round (module doc)."""
    if purpose == "update":
        return random.Random(f"update:{seed * _UPDATE_SEED_STRIDE + round_index}")
    return random.Random(f"{seed}:{purpose}:{round_index}")
