"""The power analysis (evaluation/power.py) against simulations with known variance components, and
`axpo power` on small sweep folders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from test_stats import _write_sweep

from axpo_core.evaluation import power
from flows.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _seed_means(rng, designs, seeds, sd_seed, sd_question, questions, effect=0.0):
    """The seeds' paired means m_s of `designs` simulated designs: δ + a_s + the mean of the seed's own
    question differences (a_s ~ N(0, sd_seed²), each question's ~ N(0, sd_question²))."""
    a = rng.normal(0.0, sd_seed, (designs, seeds))
    e = rng.normal(0.0, sd_question, (designs, seeds, questions)).mean(axis=-1)
    return effect + a + e


def _rejections(m):
    from scipy import stats

    s = m.shape[1]
    t = m.mean(axis=1) / (m.std(axis=1, ddof=1) / math.sqrt(s))
    return float(np.mean(np.abs(t) > stats.t.ppf(0.975, s - 1)))


@pytest.mark.parametrize("seeds", [3, 6])
def test_an_effect_of_the_mde_is_detected_with_power_0_8(seeds):
    rng = np.random.default_rng(seeds)
    sd_seed, sd_question, questions = 0.012, 0.15, 36  # Var(m_s) = 1.44 + 6.25 pp²
    var_m = sd_seed**2 + sd_question**2 / questions
    effect = power.mde(var_m, seeds)
    hits = _rejections(_seed_means(rng, 20000, seeds, sd_seed, sd_question, questions, effect))
    assert hits == pytest.approx(0.80, abs=0.015)
    assert power.power_of(effect, math.sqrt(var_m), seeds) == pytest.approx(0.80, abs=1e-6)
    # and no effect is found 5% of the time
    assert _rejections(_seed_means(rng, 20000, seeds, sd_seed, sd_question, questions)) == pytest.approx(
        0.05, abs=0.008
    )


def test_the_textbook_multiplier_underpowers_with_three_seeds():
    assert power.power_multiplier(3) == pytest.approx(5.653, abs=1e-3)
    assert power.approximate_multiplier(3) == pytest.approx(4.303 + 1.061, abs=1e-3)
    assert power.power_of(power.approximate_multiplier(3) / math.sqrt(3), 1.0, 3) < 0.775
    # with many seeds both tend to z_0.975 + z_0.8 = 2.80
    assert power.power_multiplier(200) == pytest.approx(power.approximate_multiplier(200), abs=0.005)


def test_expected_half_width_is_the_mean_half_width_of_simulated_t_intervals():
    from scipy import stats

    rng = np.random.default_rng(1)
    m = _seed_means(rng, 20000, 4, 0.01, 0.1, 50)
    half = stats.t.ppf(0.975, 3) * m.std(axis=1, ddof=1) / 2
    expected = power.expected_half_width(0.01**2 + 0.1**2 / 50, 4)
    assert float(half.mean()) == pytest.approx(expected, rel=0.01)


def _paired_samples(
    rng, seeds, benchmarks, questions, samples, sd_seed, sd_question, sd_reward, sd_shared=0.0, effect=0.0
):
    """seed -> benchmark -> question -> (A's sample rewards, B's): A − B on the question is
    δ + a_s + u_sbq; each sample adds N(0, sd_reward²) noise of its own and N(0, sd_shared²) that sample i
    shares across the arms (common random numbers); B's level (which cancels) varies freely."""
    out = {}
    for s in range(seeds):
        a_s = rng.normal(0.0, sd_seed)
        out[s] = {}
        for b in range(benchmarks):
            level = rng.uniform(0.1, 0.6, questions)
            diff = effect + a_s + rng.normal(0.0, sd_question, questions)
            shared = rng.normal(0.0, sd_shared, (questions, samples))
            out[s][f"bench{b}"] = {
                f"q{q}": (
                    list(level[q] + diff[q] + shared[q] + rng.normal(0.0, sd_reward, samples)),
                    list(level[q] + shared[q] + rng.normal(0.0, sd_reward, samples)),
                )
                for q in range(questions)
            }
    return out


def test_the_variance_components_are_unbiased():
    rng = np.random.default_rng(7)
    seeds, benchmarks, questions, samples = 6, 3, 6, 4
    sd_seed, sd_question, sd_reward, sd_shared = 0.05, 0.08, 0.25, 0.3
    var_sample = 2 * sd_reward**2 / samples  # both arms' sample means; the shared noise cancels
    var_q = sd_question**2 + var_sample
    var_eval = var_q / (benchmarks * questions)
    estimates = np.array(
        [
            (c.var_seed, c.var_eval, c.var_question, c.var_sample, c.var_seed_means)
            for c in (
                power.components_from_samples(
                    _paired_samples(
                        rng, seeds, benchmarks, questions, samples, sd_seed, sd_question, sd_reward, sd_shared
                    )
                )
                for _ in range(1000)
            )
        ]
    )
    truth = np.array([sd_seed**2, var_eval, var_q, var_sample, sd_seed**2 + var_eval])
    se = estimates.std(axis=0, ddof=1) / math.sqrt(len(estimates))
    assert np.all(np.abs(estimates.mean(axis=0) - truth) < 4 * se), (estimates.mean(axis=0), truth, se)
    assert np.all(4 * se < 0.2 * truth)  # tight enough to mean something
    c = power.components_from_samples(_paired_samples(rng, 3, 2, 5, 4, sd_seed, sd_question, sd_reward))
    assert (c.seeds, c.benchmarks, c.questions, c.samples, c.shared_questions) == (3, 2, 5, 4, True)


def test_the_bootstrap_interval_gives_the_evaluation_part_approximately():
    from axpo_core.evaluation.stats import bootstrap_interval, seed_interval

    rng = np.random.default_rng(3)
    seeds, benchmarks, questions = 3, 4, 9
    inferred, direct = [], []
    for i in range(30):
        paired = _paired_samples(rng, seeds, benchmarks, questions, 1, 0.01, 0.15, 0.0)
        diff = {
            s: {f"{b}/{q}": x[0] - y[0] for b, qs in p.items() for q, (x, y) in qs.items()}
            for s, p in paired.items()
        }
        t, boot = seed_interval(diff), bootstrap_interval(diff, resamples=1000, seed=i)
        c = power.components_from_intervals(
            t.mean, (t.low, t.high), seeds, benchmarks, (boot.low, boot.high), questions
        )
        assert c.var_seed_means == pytest.approx(power.components_from_samples(paired).var_seed_means)
        inferred.append(c.var_eval)
        direct.append(power.components_from_samples(paired).var_eval)
    assert np.mean(inferred) == pytest.approx(0.15**2 / (benchmarks * questions), rel=0.2)
    assert np.mean(inferred) == pytest.approx(np.mean(direct), rel=0.2)


def _components(var_seed, var_q, seeds=3, benchmarks=9, questions=12, samples=4, var_sample=None):
    var_eval = var_q / (benchmarks * questions)
    return power.Components(
        seeds, benchmarks, questions, samples, 0.0, var_seed + var_eval, var_eval, var_sample, "test"
    )


def test_designs_project_seeds_questions_and_samples():
    c = _components(1e-4, 0.02, var_sample=0.012)
    assert c.var_at() == c.var_seed_means
    assert c.var_at(questions=24) == pytest.approx(1e-4 + 0.02 / (9 * 24))
    assert c.var_question_at(samples=8) == pytest.approx(0.02 - 0.006)  # the sampling part halves
    for criterion, figure in (("mde", "mde"), ("half_width", "half_width")):
        q = power.questions_needed(c, 10, 0.02, criterion)
        assert getattr(power.design(c, 10, q), figure) <= 0.02 < getattr(power.design(c, 10, q - 1), figure)
    # σ²_seed alone keeps 3 seeds above 2 pp: no number of questions helps
    assert power.questions_needed(c, 3, 0.02) is None
    options = power.design_options(c, 0.02)
    assert [d.seeds for d in options] == [s for s in power.SEEDS_GRID if s >= options[0].seeds]
    best = power.cheapest(options)
    assert best is not None and best.cost == min(d.cost for d in options)
    assert best.cost == best.seeds * 9 * best.questions
    # a negative σ²_seed (chance, with few seeds) is planned as 0
    negative = power.Components(3, 9, 12, 4, 0.0, 1e-4, 2e-4, None, "test")
    assert negative.var_seed == pytest.approx(-1e-4) and negative.var_at(questions=12) == pytest.approx(2e-4)
    assert any("negative" in n for n in negative.notes())


def test_pooled_components_weight_by_degrees_of_freedom():
    a, b = _components(1e-4, 0.02, seeds=3), _components(4e-4, 0.01, seeds=5)
    pool = power.pooled([a, b])
    assert pool is not None and pool.degrees_of_freedom == 6
    assert pool.var_seed == pytest.approx((2 * 1e-4 + 4 * 4e-4) / 6)
    assert pool.var_question == pytest.approx((3 * 0.02 + 5 * 0.01) / 8)
    assert power.pooled([a]) is None


# --------------------------------------------------------------------------- axpo power on folders


def _sweep(root: Path, seeds: int = 3) -> None:
    """A sweep folder with two arms, two benchmarks, four questions × 4 samples per seed."""
    rng = np.random.default_rng(0)
    rewards = {}
    for seed in range(seeds):
        for slug, p in (("sft_axpo", 0.45), ("sft_grpo", 0.35)):
            for bench in ("zoom_detail", "python_count"):
                rewards[(seed, slug, bench)] = {
                    f"{bench}-{2000 + seed}-{q}": [float(x) for x in rng.random(4) < p] for q in range(4)
                }
    _write_sweep(root, rewards, {})


def test_axpo_power_prints_the_mde_of_a_sweep_folder(tmp_path, capsys):
    from axpo_core.evaluation.run_dir import read_run
    from axpo_core.evaluation.seeds import paired_power

    _sweep(tmp_path)
    assert main(["power", str(tmp_path), "--target-mde", "5"]) == 0
    out = capsys.readouterr().out
    c, t, _ = paired_power(read_run(tmp_path), "tiny-s", "SFT+AXPO", "SFT+GRPO")
    expected = power.mde(c.var_seed_means, 3) * 100
    assert f"t over 3 seeds): {expected:.1f} pp" in out
    assert "design that ran: 3 seeds × 2 benchmarks × 4 questions × 4 samples" in out
    assert "missing" not in out and "questions/benchmark for MDE ≤ 5" in out
    assert f"[{t.low * 100:+.1f}, {t.high * 100:+.1f}]" in out  # the headline t interval
    assert "95% bootstrap over seeds × questions" in out


def test_axpo_power_on_a_results_folder_without_records_says_what_is_missing(tmp_path, capsys):
    header = (
        "scale,difference,benchmark,metric,seeds,mean (pp),95% t over seeds,95% bootstrap seeds × questions"
    )
    rows = [
        'tiny-s,SFT+AXPO − SFT+GRPO,zoom_detail,pass@1,3,1.0,"[-5.0, 7.0]","[-3.0, 5.0]"',
        'tiny-s,SFT+AXPO − SFT+GRPO,python_count,pass@1,3,0.0,"[-4.0, 4.0]","[-2.0, 2.0]"',
        'tiny-s,SFT+AXPO − SFT+GRPO,average,pass@1,3,0.5,"[-3.8, 4.8]","[-2.0, 3.0]"',
        'tiny-s,SFT+AXPO − SFT+GRPO,average,pass@4,3,0.5,"[-9.0, 10.0]","[-5.0, 6.0]"',
    ]
    (tmp_path / "paired_differences.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    assert main(["power", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    s_m = 4.3 * math.sqrt(3) / 4.302652729911275  # from the t half-width, in pp
    assert f"s_m = {s_m:.2f} pp" in out
    assert f"t over 3 seeds): {power.power_multiplier(3) * s_m / math.sqrt(3):.1f} pp" in out
    assert "missing: per-question evaluation records" in out and "pass --questions" in out
    assert "more questions cannot be priced" in out  # the question count is unknown
    assert main(["power", str(tmp_path), "--questions", "12"]) == 0
    assert "questions/benchmark for MDE ≤ 2" in capsys.readouterr().out
    assert main(["power", str(tmp_path), "--arms", "SFT+AXPO,SFT"]) == 2
    assert "no average pass@1 row of SFT+AXPO − SFT" in capsys.readouterr().err


def test_axpo_power_prints_the_mde_of_the_published_reproduction(capsys):
    assert main(["power", str(ROOT / "docs" / "results" / "repro")]) == 0
    out = capsys.readouterr().out
    assert "design that ran: 3 seeds × 9 benchmarks" in out
    assert "MDE (two-sided α = 0.05, power 0.8, t over 3 seeds): 5.9 pp" in out


def test_sweep_report_has_a_power_section(tmp_path):
    from axpo_core.evaluation.report import build_report

    _sweep(tmp_path)
    out = build_report(tmp_path, viewer=False)
    text = (out / "report.md").read_text()
    assert "## Power: average Pass@1's paired difference" in text and "MDE (pp)" in text
    assert "## Power: per seed count" in text
    assert (out / "power.csv").is_file() and (out / "power_designs.csv").is_file()
