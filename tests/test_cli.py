"""The CLI commands of the foundation and algorithm issues, run in-process on the tiny default."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main

ROOT = Path(__file__).resolve().parent.parent

SMALL = ["--set", "rollout.max_new_tokens_per_turn=12", "--set", "rollout.group_size=2"]


def test_rollout_writes_records_and_prints_rates(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    code = main(
        [
            "rollout",
            "--model",
            str(tiny_model_dir),
            "--suite",
            "zoom_detail",
            "--questions",
            "2",
            "--group",
            "2",
            "--out",
            str(out),
            *SMALL,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "tool_call_rate = " in printed and "mean_reward = " in printed and str(out) in printed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4
    required = {
        "question_id",
        "sample_id",
        "reward",
        "used_tool",
        "num_tool_calls",
        "tool_errors",
        "truncated",
        "text",
        "num_policy_tokens",
        "parent",
    }
    assert all(required <= r.keys() and r["parent"] is None for r in records)


def test_train_prints_diagnostics_per_round(tiny_model_dir, tmp_path, capsys):
    code = main(
        [
            "train",
            "--algo",
            "axpo",
            "--rounds",
            "2",
            "--out",
            str(tmp_path),
            *SMALL,
            "--set",
            f"model.path={tiny_model_dir}",
            "--set",
            "training.questions_per_round=2",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "[axpo] round 1:" in printed and "[axpo] round 2:" in printed and "tool_use_rate=" in printed
    assert (tmp_path / "axpo" / "rollouts" / "round-2.jsonl").is_file()


def test_bad_config_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  group_sise: 4\n")
    assert main(["train", "--algo", "grpo", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "rollout.group_sise" in err


def _error_line(err: str, only: bool = True) -> str:
    """The error line stderr ends with (`only`: and nothing before it, e.g. no progress bars)."""
    lines = err.strip().splitlines()
    assert lines and "Traceback" not in err and (len(lines) == 1 or not only), err[-3000:]
    return lines[-1]


def test_errors_from_deeper_code_are_one_line(tiny_model_dir, tmp_path, capsys):
    """A ValueError deep in SFT (its examples do not fit the rollout bounds) ends like a config error."""
    code = main(
        [
            "sft",
            "--model",
            str(tiny_model_dir),
            "--out",
            str(tmp_path / "sft"),
            "--set",
            "rollout.max_new_tokens_per_turn=2",
            "--set",
            "sft.examples=2",
        ]
    )
    assert code == 2
    line = _error_line(capsys.readouterr().err, only=False)  # after the weights' progress bars
    assert (
        line.startswith("axpo: error: ValueError: SFT data:") and "rollout.max_new_tokens_per_turn=2" in line
    )

    assert main(["report", str(tmp_path / "no-run")]) == 2
    assert "no-run" in _error_line(capsys.readouterr().err)


def _axpo_subprocess(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """The installed `axpo` command (this checkout's code), without AXPO_DEBUG."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    env.pop("AXPO_DEBUG", None)
    axpo = Path(sys.executable).parent / "axpo"
    command = [str(axpo)] if axpo.is_file() else [sys.executable, "-m", "flows.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600, check=False
    )


def test_ui_with_the_s3_endpoint_down_is_one_line(tmp_path):
    """The real `axpo` command against a closed port: exit 2, one stderr line naming the URI, no traceback."""
    from moto_fixtures import FAKE_AWS_ENV

    done = _axpo_subprocess(
        [
            "ui",
            "--set",
            "storage.root=s3://bucket/runs",
            "--set",
            "storage.s3_endpoint_url=http://127.0.0.1:1",
        ],
        cwd=tmp_path,
        env=FAKE_AWS_ENV,
    )
    assert done.returncode == 2
    line = _error_line(done.stderr)
    assert (
        line.startswith("axpo: storage error: ")
        and "s3://bucket/runs" in line
        and "Could not connect" in line
    )


@pytest.mark.slow
def test_run_failing_inside_a_prefect_task_is_one_line(tmp_path):
    """`axpo run` (the real command, Prefect's ephemeral server) whose SFT task raises: Prefect's own
    log lines stay, its tracebacks do not; the last line is the error, exit 2."""
    done = _axpo_subprocess(
        [
            "run",
            "--set",
            f"storage.root=file://{tmp_path}/store",
            "--set",
            "rollout.max_new_tokens_per_turn=2",
            "--set",
            "sft.examples=2",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    line = _error_line(done.stderr, only=False)
    assert line.startswith("axpo: error: ValueError: SFT data: only 0 of ")


def test_eval_validate_only_counts_each_benchmark(tmp_path, capsys):
    """`axpo eval --validate-only`: per-benchmark counts of a data folder, no model; bad data is one error
    naming the file, the entry and the field."""
    from test_benchmarks import CASES, DYNAMATH_PUBLISHED, make_dynamath

    root = tmp_path / "data"
    for name, (build, _ids, _checks) in CASES.items():
        build(root / name)
    make_dynamath(root / "dynamath", DYNAMATH_PUBLISHED)  # the published answer types and option forms
    assert main(["eval", "--validate-only", "--set", f"evaluation.data_root={root}"]) == 0
    out = capsys.readouterr().out
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines() if " questions  " in line}
    expected = {name: str(len(ids)) for name, (_b, ids, _c) in CASES.items()}
    assert counts == {**expected, "dynamath": str(3 + len(DYNAMATH_PUBLISHED))}
    assert f"ok: {sum(map(int, counts.values()))} questions in 9 benchmarks" in out

    data = json.loads((root / "dynamath" / "dataset.json").read_text())
    del data["465"]["answer"]
    (root / "dynamath" / "dataset.json").write_text(json.dumps(data))
    assert main(["eval", "--validate-only", "--set", f"evaluation.data_root={root}"]) == 2
    captured = capsys.readouterr()
    bad = next(line for line in captured.out.splitlines() if line.startswith("dynamath"))
    assert "BAD DATA" in bad and "dataset.json: entry '465': missing field 'answer'" in bad
    assert "mathvision" in captured.out and "did not validate: dynamath" in captured.err


def test_eval_validate_only_as_the_real_command(tmp_path):
    """The installed command: a benchmark named in evaluation.benchmarks without a folder fails (exit 2);
    the default (synthetic) benchmark list checks the nine real ones and skips absent folders."""
    from test_benchmarks import make_mathvision

    make_mathvision(tmp_path / "data" / "mathvision")
    done = _axpo_subprocess(["eval", "--validate-only", "--set", "evaluation.data_root=data"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "mathvision" in done.stdout and "3 questions" in done.stdout and "vstar" in done.stdout
    named = _axpo_subprocess(
        [
            "eval",
            "--validate-only",
            "--set",
            "evaluation.data_root=data",
            "--set",
            "evaluation.benchmarks=[mathvision,vstar]",
        ],
        cwd=tmp_path,
    )
    assert named.returncode == 2
    assert "no folder" in named.stdout and "did not validate: vstar" in _error_line(named.stderr)


def test_run_dry_run_prints_the_recipe_beside_the_paper(tmp_path):
    """`axpo run --config configs/qwen3vl-2b.yaml --dry-run`, the real command: the effective recipe with
    the paper's value beside each number, no weights loaded (the checkpoint folder does not even exist)."""
    done = _axpo_subprocess(
        ["run", "--config", str(ROOT / "configs" / "qwen3vl-2b.yaml"), "--dry-run"], cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line and line[0].isalpha()}
    assert "8" in rows["rollout.group_size"].split() and "App. A" in rows["rollout.group_size"]
    assert rows["training.questions_per_round"].split()[1] == "64"
    assert "this project's choice" in rows["training.questions_per_round"]
    assert "64274" in rows["sft.examples"] and "Qwen3-VL-32B-Thinking" in rows["training.teacher_path"]
    assert "not ready on this machine: model.path: no such folder" in done.stdout
    assert not (tmp_path / "runs").exists()  # nothing ran
    tiny = _axpo_subprocess(["run", "--dry-run", "--set", "evaluation.samples=8"], cwd=tmp_path)
    assert tiny.returncode == 0, tiny.stderr
    flagged = [line.split()[0] for line in tiny.stdout.splitlines() if line[:1].isalpha() and " ! " in line]
    assert (
        "evaluation.samples" in flagged and "sft.examples" in flagged and "rollout.group_size" not in flagged
    )


def test_run_prints_the_training_reward_trends_and_the_gain_after_round_one(capsys):
    """`axpo run`'s closing lines on crafted per-round metrics: the two least-squares trends, and the level
    of the paired gain over rounds 2..R (round 1 rolls out the starting policy), checked directly."""
    import math
    import statistics
    from types import SimpleNamespace

    from scipy import stats

    from flows.cli import _print_result

    gains = [-0.05, 0.10, 0.03, 0.04, 0.00, 0.15]
    rounds = [{"reward_mean": 0.1 + g, "reward_gain_vs_start": g} for g in gains]
    result = SimpleNamespace(
        scale="tiny-s", seed=0, table_markdown="", outcomes_markdown="", tools_markdown="",
        round_metrics={"SFT+GRPO": rounds}, final_metrics={},
    )
    _print_result(result)
    printed = capsys.readouterr().out
    after_one = gains[1:]
    mean = statistics.mean(after_one)
    half = stats.t.ppf(0.975, len(after_one) - 1) * statistics.stdev(after_one) / math.sqrt(len(after_one))
    line = next(x for x in printed.splitlines() if "rounds 2-6" in x)
    assert line == (
        f"[SFT+GRPO] reward gain over the start, rounds 2-6: {mean:+.4f}, 95% t interval "
        f"[{mean - half:+.4f}, {mean + half:+.4f}]"
    )
    assert "[SFT+GRPO] training reward trend:" in printed
    assert "[SFT+GRPO] reward gain over the start trend:" in printed
