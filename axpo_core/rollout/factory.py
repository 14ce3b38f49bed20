"""Wiring: a config (and optionally a model folder) to a policy and a rollout engine."""

from __future__ import annotations

import os
from pathlib import Path

from axpo_core.config import Config
from axpo_core.models.loader import Policy, ensure_model, load_policy
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.generator import Generator

MODEL_CACHE = Path(os.environ.get("AXPO_MODEL_CACHE", Path.home() / ".cache" / "axpo" / "models"))


def configured_model(config: Config, scale: str | None = None) -> Path:
    """The config's base model folder: `model.path`, or its tiny scale (or `scale`) built once into
    MODEL_CACHE for the config's seed and `model.recall_pretrain_steps`."""
    m = config.model
    return ensure_model(scale or m.scale, m.path, MODEL_CACHE, config.seed, m.recall_pretrain_steps)


def load_configured_policy(config: Config, model_path: str | Path | None = None) -> Policy:
    folder = Path(model_path) if model_path else configured_model(config)
    return load_policy(
        folder,
        device=config.model.device,
        dtype=config.model.dtype,
        max_image_pixels=config.model.max_image_pixels,
        min_image_pixels=config.model.min_image_pixels,
    )


def make_generator(config: Config, policy: Policy, seed: int | None = None) -> Generator:
    if config.rollout.backend == "vllm":
        from axpo_core.rollout.vllm_backend import VLLMGenerator

        return VLLMGenerator(policy, seed=seed)  # on this process's shared engine
    from axpo_core.rollout.transformers_backend import TransformersGenerator

    return TransformersGenerator(policy, batch_size=config.rollout.batch_size, seed=seed)


def build_engine(
    config: Config,
    model_path: str | Path | None = None,
    policy: Policy | None = None,
    seed: int | None = None,
) -> tuple[RolloutEngine, Policy]:
    """`seed` fixes sampling per batch (see TransformersGenerator); None uses the global torch RNG."""
    policy = policy or load_configured_policy(config, model_path)
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    engine = RolloutEngine(make_generator(config, policy, seed), chat, config.rollout, config.tools)
    return engine, policy
