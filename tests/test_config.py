"""Configs are checked at load: every bad input is one short ConfigError naming the file or the `--set`
override and the field (the issue's 46 hostile inputs, and more, as parametrized cases)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from axpo_core.config import (
    DEFAULT_CONFIG,
    MAX_ERROR_CHARS,
    TINY_SCALE_NAMES,
    Config,
    ConfigError,
    load_config,
)

ROOT = Path(__file__).resolve().parent.parent
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]" for p, c in zip("abcdefgh", "bcdefghi")]
    + ["model: {scale: *i}"]
)
HAS_CUDA = importlib.util.find_spec("torch") is not None and __import__("torch").cuda.is_available()
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def test_default_config_loads():
    config = load_config()
    assert config.model.scale == "tiny-s"
    assert config.algorithm.eps_low == 0.2 and config.algorithm.eps_high == 0.4
    assert config.rollout.max_turns == 3 and config.evaluation.max_turns == 5
    assert config.storage.read_timeout_s <= 30 and config.storage.connect_timeout_s <= 30


def test_tiny_scale_names_match_the_model_builder():
    from axpo_core.models.tiny import TINY_SCALES

    assert tuple(TINY_SCALES) == TINY_SCALE_NAMES


def test_overrides_are_validated():
    assert load_config(None, ["rollout.group_size=4"]).rollout.group_size == 4
    with pytest.raises(ConfigError, match="rollout.group_size"):
        load_config(None, ["rollout.group_size=0"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["rollout.group_size"])


@pytest.mark.parametrize("name", ["tiny", "qwen3vl-2b", "qwen3vl-4b", "qwen3vl-8b", "qwen3vl-32b"])
def test_shipped_configs_validate(name, tmp_path):
    """The real scales' configs name model, teacher and benchmark folders that this machine lacks: given
    them, they load."""
    from axpo_core.evaluation.benchmarks import BENCHMARKS

    (tmp_path / "config.json").write_text("{}")
    for bench in BENCHMARKS:
        (tmp_path / "data" / bench).mkdir(parents=True)
    folders = [
        f"model.path={tmp_path}",
        f"training.teacher_path={tmp_path}",
        f"evaluation.data_root={tmp_path}/data",
    ]
    overrides = [] if name == "tiny" else folders
    config = load_config(DEFAULT_CONFIG.parent / f"{name}.yaml", overrides)
    assert config.experiment == name
    if name != "tiny":
        with pytest.raises(ConfigError, match=rf"{name}\.yaml: model\.path: no such folder"):
            load_config(DEFAULT_CONFIG.parent / f"{name}.yaml")


def test_embedded_default_equals_the_model_defaults():
    """configs/tiny.yaml and Config() agree, so a deployment's `config: {}` is the embedded default."""
    assert load_config() == Config()


def test_good_names_and_paths_pass(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "data" / "mmsearch").mkdir(parents=True)
    (tmp_path / "index.jsonl").write_text("")
    config = load_config(
        None,
        [
            "model.scale=qwen3vl-2b",
            f"model.path={model}",
            f"evaluation.data_root={tmp_path / 'data'}",
            "evaluation.benchmarks=[mmsearch, zoom_detail]",
            f"tools.search_index={tmp_path / 'index.jsonl'}",
            "storage.root=s3://bucket/runs",
            "storage.s3_endpoint_url=http://127.0.0.1:9000",
            "pipeline.ablations={no_credit: {prefix_credit: false}}",
            "model.device=cuda:0" if HAS_CUDA else "model.device=cpu",
        ],
    )
    assert config.model.path == str(model) and config.pipeline.ablations["no_credit"] == {
        "prefix_credit": False
    }


# ------------------------------------------------------------------------------------ the bad inputs


@dataclass
class Bad:
    """A bad input: a config file's text (None: the embedded default) and overrides. `field` must be named;
    `blame` is where: "file" (the config file) or "set" (the last override)."""

    id: str
    text: str | bytes | None = None
    overrides: list[str] = field(default_factory=list)
    field: str = ""
    blame: str = "file"
    needs: str = ""  # why a case cannot fail on this machine (e.g. vllm installed): it is skipped


def _cases() -> list[Bad]:
    return [
        # --- the file itself
        Bad("not-utf8", b"model:\n  scale: tiny-\xff\xfe\n", field="not UTF-8"),
        Bad("bad-yaml", "model: [unclosed\n", field="not valid YAML"),
        Bad("tab-indent", "model:\n\tscale: tiny-s\n", field="not valid YAML"),
        Bad("nul-byte", "model:\n  scale: tiny\x00s\n", field="not valid YAML"),
        Bad("top-level-list", "- model\n- rollout\n", field="top level must be a mapping"),
        Bad("top-level-scalar", "42\n", field="top level must be a mapping"),
        Bad("alias-bomb", ALIAS_BOMB, field="aliases"),
        Bad("deep-nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n", field="YAML"),
        Bad("huge-file", "experiment: " + "x" * (1 << 20) + "\n", field="larger than"),
        # --- fields and types
        Bad("unknown-top-key", "modle: {scale: tiny-s}\n", field="modle: unknown key"),
        Bad("unknown-nested-key", "model:\n  scal: tiny-s\n", field="model.scal: unknown key"),
        Bad("wrong-type", "rollout:\n  group_size: many\n", field="rollout.group_size"),
        Bad("out-of-bounds", "algorithm:\n  budget_ratio: 2.5\n", field="algorithm.budget_ratio"),
        Bad("bad-literal", "algorithm:\n  name: ppo\n", field="algorithm.name"),
        Bad("section-not-mapping", "model: 3\n", field="model"),
        Bad("huge-bad-value", "rollout:\n  group_size: " + "9" * 50_000 + "x\n", field="rollout.group_size"),
        Bad("huge-unknown-key", "model:\n  " + "k" * 1000 + ": 1\n", field="unknown key"),
        Bad("bad-tool", "tools:\n  enabled: [image_zoom_in, shell]\n", field="tools.enabled.1"),
        # --- overrides
        Bad("set-no-equals", overrides=["rollout.group_size"], field="expected key=value", blame="set"),
        Bad("set-bad-yaml", overrides=["model.scale=[unclosed"], field="not valid YAML", blame="set"),
        Bad("set-bad-yaml-mapping", overrides=["rollout={a: b"], field="not valid YAML", blame="set"),
        Bad("set-empty-key", overrides=["=3"], field="empty part", blame="set"),
        Bad("set-double-dot", overrides=["model..scale=tiny-s"], field="empty part", blame="set"),
        Bad(
            "set-into-value",
            overrides=["experiment.name=x"],
            field="experiment is not a section",
            blame="set",
        ),
        Bad("set-unknown-key", overrides=["rollout.group_sise=4"], field="rollout.group_sise", blame="set"),
        Bad("set-wrong-type", overrides=["rollout.group_size=[1]"], field="rollout.group_size", blame="set"),
        Bad(
            "set-alias-bomb",
            overrides=["model.scale=" + ALIAS_BOMB.replace("\n", ", ")],
            field="YAML",
            blame="set",
        ),
        # --- names that must exist
        Bad("unknown-scale", "model:\n  scale: tiny-xl\n", field="model.scale"),
        Bad("set-unknown-scale", overrides=["model.scale=tiny-xl"], field="model.scale", blame="set"),
        Bad("real-scale-no-path", "model:\n  scale: qwen3vl-2b\n", field="model.scale"),
        Bad("unknown-sweep-scale", "pipeline:\n  scales: [tiny-s, huge]\n", field="pipeline.scales.1"),
        Bad("unknown-suite", "training:\n  suites: [zoom_detail, zoom_detial]\n", field="training.suites.1"),
        Bad("empty-suites", "training:\n  suites: []\n", field="training.suites"),
        Bad("unknown-benchmark", "evaluation:\n  benchmarks: [mathvista]\n", field="evaluation.benchmarks.0"),
        Bad(
            "benchmark-no-data-root",
            overrides=["evaluation.benchmarks=[vstar]"],
            field="evaluation.data_root",
            blame="set",
        ),
        Bad("empty-benchmarks", "evaluation:\n  benchmarks: []\n", field="evaluation.benchmarks"),
        Bad("missing-model-path", overrides=["model.path=/no/such/model"], field="model.path", blame="set"),
        Bad(
            "model-path-is-file",
            overrides=[f"model.path={ROOT / 'pyproject.toml'}"],
            field="model.path",
            blame="set",
        ),
        Bad(
            "model-path-no-config",
            overrides=[f"model.path={ROOT / 'configs'}"],
            field="model.path",
            blame="set",
        ),
        Bad("missing-search-index", "tools:\n  search_index: /no/such/index\n", field="tools.search_index"),
        Bad(
            "missing-data-root",
            overrides=["evaluation.data_root=/no/such/data"],
            field="evaluation.data_root",
            blame="set",
        ),
        Bad(
            "data-root-lacks-benchmark",
            overrides=[f"evaluation.data_root={ROOT}", "evaluation.benchmarks=[mmsearch]"],
            field="evaluation.benchmarks.0",
            blame="set",
        ),
        Bad("judge-llm-no-path", "evaluation:\n  judge: llm\n", field="evaluation.judge_model_path"),
        Bad("storage-scheme", "storage:\n  root: gs://bucket/runs\n", field="storage.root"),
        Bad(
            "set-storage-scheme",
            overrides=["storage.root=http://host/runs"],
            field="storage.root",
            blame="set",
        ),
        Bad("s3-no-bucket", "storage:\n  root: s3:///runs\n", field="storage.root"),
        Bad("s3-empty", overrides=["storage.root=s3://"], field="storage.root", blame="set"),
        Bad(
            "s3-endpoint",
            overrides=["storage.s3_endpoint_url=localhost:9000"],
            field="storage.s3_endpoint_url",
            blame="set",
        ),
        Bad(
            "storage-timeout",
            overrides=["storage.read_timeout_s=0"],
            field="storage.read_timeout_s",
            blame="set",
        ),
        Bad(
            "ablation-key",
            "pipeline:\n  ablations:\n    no_credit: {prefix_credt: false}\n",
            field="pipeline.ablations.no_credit.prefix_credt",
        ),
        Bad(
            "ablation-value",
            overrides=["pipeline.ablations={wide: {eps_high: -1}}"],
            field="pipeline.ablations.wide.eps_high",
            blame="set",
        ),
        Bad("ablation-not-mapping", "pipeline:\n  ablations:\n    x: 3\n", field="pipeline.ablations.x"),
        Bad("bad-device", "model:\n  device: gpu\n", field="model.device"),
        Bad(
            "cuda-without-gpu",
            overrides=["model.device=cuda"],
            field="model.device",
            blame="set",
            needs="a CUDA GPU is present" if HAS_CUDA else "",
        ),
        Bad(
            "vllm-unavailable",
            "rollout:\n  backend: vllm\n",
            field="rollout.backend",
            needs="vllm and a CUDA GPU are present" if HAS_VLLM and HAS_CUDA else "",
        ),
        Bad(
            "ray-runner",
            overrides=["pipeline.task_runner=ray"],
            field="pipeline.task_runner",
            blame="set",
            needs="prefect-ray is installed" if importlib.util.find_spec("prefect_ray") else "",
        ),
        # --- budgets and bounds
        Bad(
            "turn-above-total",
            "rollout:\n  max_new_tokens_per_turn: 4096\n  max_total_tokens: 2048\n",
            field="rollout.max_new_tokens_per_turn",
        ),
        Bad(
            "set-total-below-turn",
            overrides=["rollout.max_total_tokens=100"],
            field="rollout.max_new_tokens_per_turn",
            blame="set",
        ),
        Bad(
            "min-pixels-above-max",
            "model:\n  min_image_pixels: 20000\n  max_image_pixels: 10000\n",
            field="model.min_image_pixels",
        ),
        Bad("empty-stages", "pipeline:\n  stages: []\n", field="pipeline.stages"),
        Bad("set-empty-stages", overrides=["pipeline.stages=[]"], field="pipeline.stages", blame="set"),
        Bad("pass-at-k-above-samples", overrides=["evaluation.samples=2"], field="evaluation.k", blame="set"),
        Bad("empty-k", "evaluation:\n  k: []\n", field="evaluation.k"),
    ]


CASES = _cases()


def _write(tmp_path: Path, case: Bad) -> Path | None:
    if case.text is None:
        return None
    path = tmp_path / f"{case.id}.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text, encoding="utf-8")
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_short_error_naming_where_and_what(case: Bad, tmp_path: Path) -> None:
    if case.needs:
        pytest.skip(f"cannot fail here: {case.needs}")
    path = _write(tmp_path, case)
    with pytest.raises(ConfigError) as err:
        load_config(path, case.overrides)
    message = str(err.value)
    assert case.field in message
    where = f"--set {case.overrides[-1][:40]}" if case.blame == "set" else str(path or DEFAULT_CONFIG)
    assert message.startswith(where), message[:300]
    if case.blame == "set" and path is None:
        assert "tiny.yaml" not in message  # the override is to blame, not the default file
    assert "\n" not in message and len(message) <= min(MAX_ERROR_CHARS, 1000), len(message)


def test_cases_cover_the_issue():
    assert len(CASES) >= 46


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not a usable path"):
        load_config(f"{tmp_path}/bad\x00name.yaml")


def test_several_problems_are_one_message_each_blamed(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text("model:\n  scale: tiny-xl\npipeline:\n  stages: []\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["rollout.max_total_tokens=100"])  # below the default per-turn 128
    message = str(err.value)
    assert message.startswith(f"{path}: model.scale: unknown scale tiny-xl")
    assert "pipeline.stages: is empty" in message
    assert "--set rollout.max_total_tokens=100: rollout.max_new_tokens_per_turn: 128 is above" in message


def test_environment_checks_can_be_left_to_the_machine_that_runs():
    """A deployment's config may name paths of the worker machine: load it without checking them."""
    config = load_config(None, ["model.path=/models/elsewhere"], check_environment=False)
    assert config.model.path == "/models/elsewhere"


# ------------------------------------------------------------------------------ through the real CLI

CLI_CASES = ["not-utf8", "alias-bomb", "set-bad-yaml", "set-unknown-scale", "missing-model-path"]


def _axpo(args: list[str], debug: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AXPO_DEBUG", None)
    if debug:
        env["AXPO_DEBUG"] = "1"
    axpo = Path(sys.executable).parent / "axpo"
    command = [str(axpo)] if axpo.is_file() else [sys.executable, "-m", "flows.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
    )


@pytest.mark.parametrize("case", [c for c in CASES if c.id in CLI_CASES], ids=CLI_CASES)
def test_cli_bad_config_exits_2_with_one_line(case: Bad, tmp_path: Path) -> None:
    path = _write(tmp_path, case)
    args = ["ui"] + (["--config", str(path)] if path else [])
    for override in case.overrides:
        args += ["--set", override]
    done = _axpo(args)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("axpo: config error: "), done.stderr[-2000:]
    assert case.field in lines[0] and len(lines[0]) < 1100
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_cli_folder_as_config_and_debug_traceback(tmp_path):
    done = _axpo(["ui", "--config", str(tmp_path)])
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"axpo: config error: {tmp_path}: is a folder, not a config file"
    ]
    debug = _axpo(["ui", "--config", str(tmp_path)], debug=True)
    assert debug.returncode == 2 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == done.stderr.strip()


REAL_CONFIGS = ["qwen3vl-2b", "qwen3vl-4b", "qwen3vl-8b", "qwen3vl-32b"]


@pytest.mark.parametrize("name", REAL_CONFIGS)
def test_real_scale_configs_load_and_follow_the_paper(name: str) -> None:
    """Every real-scale config loads (the machine check aside: no checkpoints here) and has the numbers
    App. A of the paper gives; the dry-run recipe flags none of them as different."""
    from axpo_core.recipe import recipe_rows

    config = load_config(ROOT / "configs" / f"{name}.yaml", check_environment=False)
    assert config.rollout.group_size == 8 and config.rollout.max_turns == 3
    assert config.rollout.sampling.temperature == 1.0
    assert (config.algorithm.eps_low, config.algorithm.eps_high, config.algorithm.kl_beta) == (0.2, 0.4, 1e-3)
    assert (config.algorithm.budget_ratio, config.algorithm.continuations_per_prefix) == (0.25, 4)
    assert config.training.filter_samples == 4
    assert config.training.questions_per_round <= config.training.pool_size
    assert (config.sft.examples, config.sft.tool_share) == (64274, 0.25)
    ev = config.evaluation
    assert (ev.samples, ev.k, ev.max_turns) == (4, [1, 4], 5)
    assert ev.max_new_tokens_per_turn == 32768 and ev.max_total_tokens >= 32768
    assert ev.sampling.model_dump() == {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "presence_penalty": 1.5,
    }
    assert len(ev.benchmarks) == 9 and ev.data_root
    differing = [r.field for r in recipe_rows(config) if r.differs]
    assert differing == [], differing
    if name == "qwen3vl-32b":  # the paper: 32B is the teacher, evaluated as Base only
        assert config.pipeline.stages == ["Base"] and config.training.teacher_path is None
    else:
        assert config.training.teacher_path.endswith("Qwen3-VL-32B-Thinking")
        assert "SFT+AXPO" in config.pipeline.stages and "GRPO" in config.pipeline.stages


def test_real_scale_configs_mark_every_number_the_paper_does_not_give() -> None:
    """Each numeric line of a real-scale YAML is either a number App. A gives (its comment says "the
    paper") or is marked "this project's choice" (on the line, or in the comment lines right above it)."""
    import re

    for name in REAL_CONFIGS:
        lines = (ROOT / "configs" / f"{name}.yaml").read_text().splitlines()
        block: list[str] = []
        for line in lines:
            if line.lstrip().startswith("#"):
                block.append(line)
                continue
            if re.search(r":\s*[-\d.]+(e-?\d+)?\s*(#|$)", line) or re.search(r":\s*\[\d", line):
                context = line + " ".join(block)
                assert "the paper" in context or "this project's choice" in context, f"{name}: {line}"
            block = []  # only the comment lines right above a line count for it


def test_questions_per_round_above_the_pool_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"training.questions_per_round: 64 questions per round from a pool of 16"
    ):
        load_config(overrides=["training.questions_per_round=64", "training.pool_size=16"])
    with pytest.raises(ConfigError, match=r"evaluation.max_new_tokens_per_turn: 4096 tokens per turn"):
        load_config(overrides=["evaluation.max_new_tokens_per_turn=4096"])  # above the rollout's 1024
    with pytest.raises(ConfigError, match=r"training.teacher_path: no such folder"):
        load_config(overrides=["training.teacher_path=/nonexistent/teacher"])


@pytest.mark.parametrize(
    ("override", "says"),
    [("training.seed=3", "top-level `seed`"), ("algorithm.resample=false", "algorithm.name: grpo")],
)
def test_a_removed_key_fails_by_name_with_what_to_write_instead(override, says):
    from axpo_core.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(None, [override])
