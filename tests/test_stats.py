"""The sweep's intervals and paired differences on crafted numbers, against direct computations."""

from __future__ import annotations

import itertools
import math

import pytest

from axpo_core.evaluation.stats import (
    bootstrap_interval,
    paired_scores,
    question_scores,
    seed_interval,
    seed_means,
    t_interval,
)


def test_t_interval_matches_the_textbook_formula():
    # mean 0.2, sample sd 0.1, t_{0.975, 2} = 4.302652729...
    got = t_interval([0.1, 0.2, 0.3])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert got.mean == pytest.approx(0.2)
    assert (got.low, got.high) == pytest.approx((0.2 - half, 0.2 + half), abs=1e-9)
    assert got.n == 3 and got.method == "t over seeds"


def test_t_interval_of_one_seed_has_no_bounds_and_of_equal_seeds_has_zero_width():
    one = t_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)
    assert one.as_text() == "40.0"
    same = t_interval([0.25, 0.25, 0.25, 0.25])
    assert (same.low, same.high) == pytest.approx((0.25, 0.25))
    with pytest.raises(ValueError):
        t_interval([])


def test_question_scores_are_pass_at_k_per_question():
    records = [
        {"question_id": "q1", "reward": 1.0},
        {"question_id": "q1", "reward": 0.0},
        {"question_id": "q1", "reward": 0.0},
        {"question_id": "q1", "reward": 0.0},
        {"question_id": "q2", "reward": 0.0},
        {"question_id": "q2", "reward": 0.0},
    ]
    assert question_scores(records, 1) == {"q1": 0.25, "q2": 0.0}
    assert question_scores(records, 2) == {"q1": pytest.approx(1 - 3 / 6), "q2": 0.0}


def test_seed_interval_averages_questions_within_a_seed_first():
    scores = {0: {"a": 1.0, "b": 0.0}, 1: {"a": 1.0, "b": 1.0, "c": 1.0}, 2: {"a": 0.0}}
    assert seed_means(scores) == [0.5, 1.0, 0.0]
    assert seed_interval(scores).mean == pytest.approx(0.5)
    assert seed_interval(scores) == t_interval([0.5, 1.0, 0.0])


def _exact_two_stage_quantiles(scores, confidence):
    """Enumerate every two-stage resample of a tiny case (seeds, then each drawn seed's questions)."""
    seeds = sorted(scores)
    outcomes = []
    for drawn in itertools.product(seeds, repeat=len(seeds)):
        per_seed = []
        for s in drawn:
            values = list(scores[s].values())
            per_seed.append([sum(c) / len(c) for c in itertools.product(values, repeat=len(values))])
        for combo in itertools.product(*per_seed):
            outcomes.append(sum(combo) / len(combo))
    outcomes.sort()
    alpha = (1 - confidence) / 2
    return outcomes[int(alpha * len(outcomes))], outcomes[int((1 - alpha) * len(outcomes)) - 1]


def test_bootstrap_interval_approaches_the_exact_resampling_distribution():
    scores = {0: {"a": 0.0, "b": 1.0}, 1: {"a": 0.5, "b": 0.5}}
    exact = _exact_two_stage_quantiles(scores, 0.8)
    got = bootstrap_interval(scores, confidence=0.8, resamples=20000, seed=1)
    assert got.mean == pytest.approx(0.5)
    assert (got.low, got.high) == pytest.approx(exact, abs=0.03)
    assert got.method.startswith("bootstrap")


def test_bootstrap_interval_is_a_point_when_nothing_varies_and_is_reproducible():
    flat = {0: {"a": 0.5, "b": 0.5}, 1: {"a": 0.5, "b": 0.5}, 2: {"a": 0.5, "b": 0.5}}
    got = bootstrap_interval(flat)
    assert (got.low, got.mean, got.high) == (0.5, 0.5, 0.5)
    varied = {0: {"a": 0.0, "b": 1.0}, 1: {"a": 1.0, "b": 1.0}, 2: {"a": 0.0, "b": 0.0}}
    assert bootstrap_interval(varied, seed=3) == bootstrap_interval(varied, seed=3)
    assert bootstrap_interval(varied).low < bootstrap_interval(varied).high


def test_paired_scores_subtract_on_the_same_seed_and_question():
    a = {0: {"q1": 1.0, "q2": 0.5}, 1: {"q1": 0.0, "q2": 1.0}}
    b = {0: {"q1": 0.5, "q2": 0.5}, 1: {"q1": 0.25, "q2": 0.0}}
    diff = paired_scores(a, b)
    assert diff == {0: {"q1": 0.5, "q2": 0.0}, 1: {"q1": -0.25, "q2": 1.0}}
    # The paired interval is the t interval of the per-seed mean differences.
    assert seed_interval(diff) == t_interval([0.25, 0.375])


def test_paired_scores_refuse_unpaired_seeds_or_questions():
    with pytest.raises(ValueError, match="seeds differ"):
        paired_scores({0: {"q": 1.0}}, {1: {"q": 1.0}})
    with pytest.raises(ValueError, match="seed 0 scores different questions"):
        paired_scores({0: {"q1": 1.0}}, {0: {"q2": 1.0}})


# --------------------------------------------------------------------------- a crafted sweep folder


def _write_sweep(root, rewards, metrics):
    """rewards: (seed, stage slug, bench) -> {question: [rewards]}; metrics: (seed, slug) -> [round dicts]."""
    import json

    for (seed, slug, bench), questions in rewards.items():
        folder = root / f"tiny-s-seed{seed}" / "tiny-s" / slug / "eval"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps({"question_id": q, "sample_id": i, "reward": r, "benchmark": bench})
            for q, rs in questions.items()
            for i, r in enumerate(rs)
        ]
        (folder / f"{bench}.jsonl").write_text("\n".join(lines) + "\n")
    for (seed, slug), rounds in metrics.items():
        folder = root / f"tiny-s-seed{seed}" / "tiny-s" / slug / "metrics"
        folder.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(rounds, start=1):
            (folder / f"round-{i}.json").write_text(json.dumps(m))


def test_sweep_tables_against_a_direct_computation(tmp_path):
    from axpo_core.evaluation.run_dir import read_run
    from axpo_core.evaluation.seeds import cost_table, diagnostic_bands, paired_table, seed_table

    axpo = {0: [1, 1, 0, 0], 1: [1, 0, 0, 0], 2: [1, 1, 1, 0]}  # seed -> q1's rewards; q2 always 0
    grpo = {0: [1, 0, 0, 0], 1: [0, 0, 0, 0], 2: [1, 1, 0, 0]}
    rewards = {}
    for seed in range(3):
        rewards[(seed, "sft_axpo", "zoom")] = {"q1": axpo[seed], "q2": [0, 0, 0, 0]}
        rewards[(seed, "sft_grpo", "zoom")] = {"q1": grpo[seed], "q2": [0, 0, 0, 0]}
    metrics = {
        (seed, slug): [
            {"tool_use_rate": 0.1 * (seed + 1), "tokens_original": 100.0, "seconds_rollout": 2.0},
            {"tool_use_rate": 0.2, "tokens_original": 50.0, "seconds_update": 1.0},
        ]
        for seed in range(3)
        for slug in ("sft_axpo", "sft_grpo")
    }
    _write_sweep(tmp_path, rewards, metrics)
    run = read_run(tmp_path)

    # pass@1 per seed = mean over {q1, q2} of the sample means: AXPO 0.25, 0.125, 0.375 -> mean 0.25
    rows = {r["stage"]: r for r in seed_table(run, [1, 4])}
    expected = t_interval([0.25, 0.125, 0.375])
    assert rows["SFT+AXPO"]["average pass@1"] == expected.as_text()
    assert rows["SFT+AXPO"]["zoom pass@1"] == expected.as_text()
    assert rows["SFT+AXPO"]["average pass@4"] == t_interval([0.5, 0.5, 0.5]).as_text()
    assert rows["SFT+AXPO"]["seeds"] == 3

    # AXPO - GRPO per seed: (0.5 - 0.25) / 2, (0.25 - 0) / 2, (0.75 - 0.5) / 2 = 0.125 each
    diff = [
        r
        for r in paired_table(run, [1])
        if r["difference"] == "SFT+AXPO − SFT+GRPO" and r["benchmark"] == "average"
    ]
    assert len(diff) == 1 and diff[0]["mean (pp)"] == 12.5 and diff[0]["95% t over seeds"] == "[12.5, 12.5]"

    cost = {r["stage"]: r for r in cost_table(run)}
    assert (
        cost["SFT+AXPO"]["rollout tokens (originals)"] == 150.0 and cost["SFT+AXPO"]["wall time (s)"] == 3.0
    )

    band = diagnostic_bands(run)[("tiny-s", "SFT+AXPO")]["tool_use_rate"]
    low, high = t_interval([0.1, 0.2, 0.3]).low, t_interval([0.1, 0.2, 0.3]).high
    assert band[1] == pytest.approx((0.2, low, high)) and band[2] == pytest.approx((0.2, 0.2, 0.2))


def test_each_axpo_ablation_is_paired_against_axpo(tmp_path):
    from axpo_core.evaluation.run_dir import read_run
    from axpo_core.evaluation.seeds import paired_table

    q1 = {"sft_axpo": [1, 1, 0, 0], "sft_axpo_random_ranking": [1, 0, 0, 0], "sft_grpo": [0, 0, 0, 0]}
    rewards = {(s, slug, "zoom"): {"q1": r} for s in range(2) for slug, r in q1.items()}
    _write_sweep(tmp_path, rewards, {})
    rows = {r["difference"]: r for r in paired_table(read_run(tmp_path), [1]) if r["benchmark"] == "average"}
    assert rows["SFT+AXPO − SFT+AXPO[random_ranking]"]["mean (pp)"] == 25.0  # 0.5 - 0.25 on both seeds
    assert rows["SFT+AXPO − SFT+GRPO"]["mean (pp)"] == 50.0
    assert not any(d.startswith("SFT+AXPO[") for d in rows)  # an ablation is only ever the baseline


def test_sweep_report_has_the_across_seed_sections(tmp_path):
    from axpo_core.evaluation.report import build_report

    rewards = {(s, slug, "zoom"): {"q1": [1, 0, 0, 0]} for s in range(2) for slug in ("sft_axpo", "sft_grpo")}
    metrics = {(s, slug): [{"tool_use_rate": 0.5}] for s in range(2) for slug in ("sft_axpo", "sft_grpo")}
    _write_sweep(tmp_path, rewards, metrics)
    out = build_report(tmp_path, viewer=False)
    text = (out / "report.md").read_text()
    assert "Across seeds: mean and 95% interval" in text and "paired differences" in text
    assert (out / "seed_means.csv").is_file() and (out / "paired_differences.csv").is_file()
    assert list((out / "plots").glob("*__seeds__tool_use_rate.png"))


def test_comparison_table_has_the_papers_rows_columns_and_intervals(tmp_path):
    from axpo_core.evaluation.report import build_report
    from axpo_core.evaluation.run_dir import read_run
    from axpo_core.evaluation.seeds import comparison_table

    q1 = {  # slug -> seed -> q1's rewards on both table benchmarks (q2 always 0); dyna_chart is not a column
        "sft_grpo": {0: [1, 0, 0, 0], 1: [0, 0, 0, 0]},
        "sft_arpo": {0: [1, 1, 0, 0], 1: [1, 0, 0, 0]},
        "sft_grpo_cispo": {0: [0, 0, 0, 0], 1: [0, 0, 0, 0]},
        "sft_axpo": {0: [1, 1, 1, 1], 1: [1, 1, 0, 0]},
    }
    rewards = {
        (seed, slug, bench): {"q1": per_seed[seed] if bench != "dyna_chart" else [1, 1, 1, 1], "q2": [0] * 4}
        for slug, per_seed in q1.items()
        for seed in (0, 1)
        for bench in ("zoom_detail", "python_count", "dyna_chart")
    }
    _write_sweep(tmp_path, rewards, {})
    run = read_run(tmp_path)
    table = comparison_table(run, [1, 4])
    assert [(r["method"], r["stage"]) for r in table] == [
        ("GRPO (baseline)", "SFT+GRPO"),
        ("CISPO", "SFT+GRPO[cispo]"),
        ("ARPO", "SFT+ARPO"),
        ("AXPO", "SFT+AXPO"),
    ]
    arpo = table[2]
    assert [k for k in arpo if "pass@" in k][:4] == [
        "python_count pass@1",
        "python_count pass@4",
        "zoom_detail pass@1",
        "zoom_detail pass@4",
    ]
    # per seed, pass@1 over the two columns' 4 questions: ARPO (0.5 + 0.5) / 4, (0.25 + 0.25) / 4
    assert arpo["average pass@1"] == t_interval([0.25, 0.125]).as_text()
    assert arpo["zoom_detail pass@1"] == t_interval([0.25, 0.125]).as_text()
    # ARPO − GRPO per seed: 0.25 − 0.125, 0.125 − 0 -> 0.125 both
    assert arpo["Δ average pass@1 vs GRPO (pp)"] == "12.5 [12.5, 12.5]"
    assert table[0]["Δ average pass@1 vs GRPO (pp)"] == "–" and arpo["seeds"] == 2
    report = (build_report(tmp_path, viewer=False) / "report.md").read_text()
    assert "Comparison to alternative RL recipes" in report and "GRPO (baseline)" in report

    plain = tmp_path / "plain"
    _write_sweep(plain, {k: v for k, v in rewards.items() if k[1] in ("sft_grpo", "sft_axpo")}, {})
    assert comparison_table(read_run(plain), [1]) == []  # a sweep without the comparison's own arms


def test_linear_trend_against_a_direct_least_squares_fit():
    import numpy as np
    from scipy import stats as scipy_stats

    from axpo_core.evaluation.stats import linear_trend

    rewards = [0.09, 0.11, 0.03, 0.11, 0.19, 0.05]
    fit = scipy_stats.linregress(np.arange(1, 7), rewards)
    half = scipy_stats.t.ppf(0.975, 4) * fit.stderr
    trend = linear_trend(rewards)
    assert trend.n == 6 and math.isclose(trend.mean, fit.slope, abs_tol=1e-12)
    assert math.isclose(trend.low, fit.slope - half, abs_tol=1e-12)
    assert math.isclose(trend.high, fit.slope + half, abs_tol=1e-12)
    exact = linear_trend([0.1, 0.2, 0.3])  # a straight line: slope 0.1, no residual
    assert math.isclose(exact.mean, 0.1) and math.isclose(exact.low, exact.high, abs_tol=1e-12)
    assert math.isnan(linear_trend([0.0, 1.0]).low)
    with pytest.raises(ValueError, match="at least two"):
        linear_trend([0.5])
