"""Shared fixtures: one tiny-s model built per test session (real transformers model, real tokenizer)."""

from __future__ import annotations

import importlib.util
import os

import pytest

# The vLLM lane's tests run where vLLM is installed (.venv-vllm: `make test-vllm`); elsewhere they are not
# collected at all.
if importlib.util.find_spec("vllm") is None:
    collect_ignore = ["vllm_lane"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (make test: two workers on two cores) each worker, and the subprocesses its tests start,
# computes on one thread, so that the workers do not oversubscribe the cores.
# AXPO_TORCH_THREADS too: the CLI and pipeline entries set OMP_NUM_THREADS themselves (axpo_core/threads.py).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("AXPO_TORCH_THREADS", "1")


def pytest_terminal_summary(terminalreporter):
    """Figures that tests record as a "summary" property (the fuzz tests' counts), printed after the run."""
    lines = [
        value
        for report in terminalreporter.stats.get("passed", [])
        for name, value in report.user_properties
        if name == "summary" and report.when == "call"
    ]
    if lines:
        terminalreporter.section("test figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from axpo_core.models.tiny import build_tiny

    # Untrained (no recall pretraining): unit tests need a real model, not a competent one.
    return build_tiny("tiny-s", tmp_path_factory.mktemp("models") / "tiny-s", seed=0, pretrain_steps=0)


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


@pytest.fixture
def one_round(policy, config):
    """`one_round(algorithm overrides, questions, **training fields)`: one in-process RL round (RLTrainer)
    of a fresh copy of the tiny policy, small sizes, no reference model; returns the RoundResult and the
    updated parameters.
    Same overrides and questions, same result: the rollouts and the update are seeded."""
    import copy

    from axpo_core.rollout.chat import ChatFormat
    from axpo_core.rollout.engine import RolloutEngine
    from axpo_core.rollout.transformers_backend import TransformersGenerator
    from axpo_core.training.loop import RLTrainer

    def run(algorithm: dict, questions: list, **training_fields):
        trainee = copy.deepcopy(policy)
        rollout = config.rollout.model_copy(
            update={"group_size": 2, "max_new_tokens_per_turn": 16, "max_turns": 2, "batch_size": 8}
        )
        sizes = {"ppo_epochs": 1, "mini_batch_size": 4, **training_fields}
        training = config.training.model_copy(update=sizes)
        algo = config.algorithm.model_copy(update={"kl_beta": 0.0, **algorithm})
        run_config = config.model_copy(update={"rollout": rollout, "training": training, "algorithm": algo})
        chat = ChatFormat(trainee.tokenizer, trainee.image_processor, trainee.special)
        engine = RolloutEngine(TransformersGenerator(trainee, batch_size=8), chat, rollout, run_config.tools)
        trainer = RLTrainer(run_config, trainee, engine, pool_ids=[q.question_id for q in questions])
        result = trainer.run_round(1, questions)
        return result, [p.detach().clone() for p in trainee.model.parameters()]

    return run


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def headless_chromium(window_size: str):
    """A headless Debian Chromium driver with a throwaway profile (a generator: yield it from a fixture);
    skips the test when chromium or chromedriver is missing."""
    import shutil
    import tempfile

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    if missing:
        pytest.skip(
            f"headless browser test needs {' and '.join(missing)} (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="axpo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", f"--window-size={window_size}",
    ):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
