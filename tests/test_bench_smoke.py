"""bench/round_vs_trl.py, scale_out.py, threads.py, prefill.py and vs_before.py end to end at their
smallest settings: they run and print their figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMALLEST = [
    "--rounds=1",
    "--questions=2",
    "--group=2",
    "--max-new-tokens=8",
    "--axpo-rounds=1",
    "--axpo-questions=2",
    "--axpo-group=8",  # budget 0.25 * 2 * 8 = 4 continuations = one prefix of K = 4
    "--axpo-max-new-tokens=16",
    "--sft-examples=8",
    "--sft-batch=4",
]


def run_bench(script: str, *args: str) -> tuple[dict[str, str], str]:
    """The bench's `name = value` figures and its whole stdout."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(line.split(" = ", 1) for line in done.stdout.splitlines() if " = " in line), done.stdout


@pytest.mark.slow
def test_round_vs_trl_bench_prints_its_figures():
    figures, _ = run_bench("round_vs_trl.py", *SMALLEST)
    for name in ("round_vs_trl", "ours_tokens_per_s", "trl_tokens_per_s", "axpo_round_time_ratio"):
        assert float(figures[name]) > 0, name
    assert 0 <= float(figures["axpo_extra_share"])
    assert figures["same_original_rollouts"] == "True"
    assert int(figures["continuations"]) <= int(figures["axpo_budget_continuations"]) == 4
    # ARPO spends its whole budget, ⌊0.25 · 8⌋ = 2 per question: branches, or fresh rollouts for the rest
    assert int(figures["arpo_continuations"]) == int(figures["arpo_budget_rollouts"]) == 4
    assert int(figures["arpo_branches"]) + int(figures["arpo_fill_rollouts"]) == 4
    assert 0 <= float(figures["arpo_extra_share"]) and float(figures["arpo_round_time_ratio"]) > 0


@pytest.mark.slow
def test_scale_out_bench_prints_its_figures():
    small = ["training.questions_per_round=2", "rollout.group_size=2", "rollout.max_new_tokens_per_turn=8"]
    figures, stdout = run_bench("scale_out.py", "--repeats=1", *(f"--set={s}" for s in small))
    assert float(figures["rollout_1worker_s"]) > 0 and float(figures["rollout_2worker_s"]) > 0
    assert float(figures["rollout_2worker_speedup"]) > 0
    assert figures["same_trajectories"] == "True"
    assert (float(figures["rollout_2worker_speedup"]) < 1) == ("below 1: " in stdout)


@pytest.mark.slow
def test_threads_bench_prints_its_figures():
    figures, _ = run_bench("threads.py", "--steps=1", "--repeats=1", "--batch=2", "--length=16")
    assert float(figures["oversubscribed_vs_shared"]) > 0 and float(figures["solo_s"]) > 0
    assert int(figures["shared_threads"]) == max(1, int(figures["cores"]) // 2)


@pytest.mark.slow
def test_prefill_bench_prints_its_figures():
    small = ["training.questions_per_round=2", "rollout.group_size=4", "rollout.max_new_tokens_per_turn=8"]
    figures, _ = run_bench("prefill.py", "--repeats=1", *(f"--set={s}" for s in small))
    assert float(figures["prefill_shared_vs_flat"]) > 0 and float(figures["continuation_shared_vs_flat"]) > 0
    assert figures["same_tokens"] == "True" and figures["same_continuations"] == "True"


def test_vs_before_bench_prints_its_figures():
    from axpo_core.models.loader import PREBUILT

    (checkpoint,) = [p for p in PREBUILT.iterdir() if p.name.startswith("tiny-s-seed0-")]
    args = ["--before", str(ROOT), "--checkpoint", str(checkpoint), "--repeats=1", "--rounds=1"]
    figures, _ = run_bench("vs_before.py", *args, "--figures", "grpo_round_s")
    assert float(figures["grpo_round_s_before"]) > 0 and float(figures["grpo_round_s_after"]) > 0
    assert float(figures["grpo_round_s_speedup"]) > 0
