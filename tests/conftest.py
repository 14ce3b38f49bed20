"""Shared fixtures: one tiny-s model built per test session (real transformers model, real tokenizer)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from axpo_core.models.tiny import build_tiny

    return build_tiny("tiny-s", tmp_path_factory.mktemp("models") / "tiny-s", seed=0)


@pytest.fixture(scope="session")
def config():
    from axpo_core.config import load_config

    return load_config(None, ["tools.python_timeout_s=5"])


@pytest.fixture(scope="session")
def policy(tiny_model_dir, config):
    from axpo_core.models.loader import load_policy

    # AXPO_TEST_DEVICE=cuda runs the same tests on a GPU (a device check; CI and `make test` use the CPU).
    return load_policy(
        tiny_model_dir,
        device=os.environ.get("AXPO_TEST_DEVICE", "cpu"),
        max_image_pixels=config.model.max_image_pixels,
        min_image_pixels=config.model.min_image_pixels,
    )


@pytest.fixture(scope="session")
def chat(policy):
    from axpo_core.rollout.chat import ChatFormat

    return ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
