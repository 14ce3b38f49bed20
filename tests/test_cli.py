"""The CLI commands of the foundation and algorithm issues, run in-process on the tiny default."""

import json

from flows.cli import main

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
