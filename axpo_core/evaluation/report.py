"""The report of a run folder: the results table (evaluation/tables.py), tool-call and diagnostics tables,
plots and the rollout viewer, as Markdown and HTML."""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from axpo_core.evaluation.passk import mean_and_ci, pass_at_k
from axpo_core.evaluation.run_dir import RunData, read_run, report_ks, run_folder
from axpo_core.evaluation.runner import tool_metrics
from axpo_core.evaluation.tables import EvalRow, Table, results_table, to_csv
from axpo_core.evaluation.toolcheck import tools_necessary_table
from axpo_core.evaluation.viewer import write_viewer
from axpo_core.runs import is_ablation, stage_key

if TYPE_CHECKING:
    from axpo_core.evaluation.plots import Plot


# --------------------------------------------------------------------------------------------------
# The full report of a run folder: tables from the stored records, diagnostics plots, the rollout viewer.
# Everything is recomputed from what the pipeline wrote, so a report can be rebuilt for any (partial) run.


def record_metrics(records: Sequence[dict], ks: Sequence[int]) -> dict[str, float]:
    """`runner.score_samples`'s metrics from stored eval records (pass@k as a fraction; NaN when k > n)."""
    by_question: dict[str, list[bool]] = {}
    for r in records:
        by_question.setdefault(r["question_id"], []).append(float(r.get("reward", 0.0)) > 0.5)
    metrics: dict[str, float] = {"questions": float(len(by_question))}
    for k in ks:
        if any(len(hits) < k for hits in by_question.values()):
            metrics[f"pass@{k}"] = float("nan")
            continue
        per_question = [pass_at_k(len(hits), sum(hits), k) for hits in by_question.values()]
        metrics[f"pass@{k}"] = mean_and_ci(per_question)[0]
    metrics.update(tool_metrics(records))
    errors = sum(int(r.get("tool_errors", 0)) for r in records)
    metrics.update(samples=float(len(records)), tool_errors=float(errors))
    return metrics


def default_ks(run: RunData) -> list[int]:
    """Pass@1 and Pass@n, n the fewest samples any evaluated question has (the pipeline's [1, 4] default)."""
    counts = [
        n
        for scale in run.scales
        for benches in scale.evals.values()
        for rows in benches.values()
        for n in Counter(r["question_id"] for r in rows).values()
    ]
    return sorted({1, min(counts)}) if counts else [1]


def eval_rows(run: RunData, ks: Sequence[int]) -> list[EvalRow]:
    return [
        EvalRow(scale.name, stage, bench, record_metrics(records, ks))
        for scale in run.scales
        for stage, benches in scale.evals.items()
        for bench, records in benches.items()
    ]


def tool_call_table(rows: Sequence[EvalRow]) -> Table:
    """Per (scale, stage): tool-call rate (%) per benchmark and overall, tool error rate, mean turns."""
    benchmarks = sorted({r.benchmark for r in rows})
    table = []
    for scale, stage in sorted({(r.scale, r.stage) for r in rows}, key=lambda s: (s[0], stage_key(s[1]))):
        mine = {r.benchmark: r.metrics for r in rows if (r.scale, r.stage) == (scale, stage)}
        row: dict[str, str | float] = {"scale": scale, "stage": stage}
        for bench in benchmarks:
            row[f"{bench} tool-call %"] = 100.0 * mine[bench]["tool_call_rate"] if bench in mine else math.nan
        samples = sum(m["samples"] for m in mine.values()) or 1.0
        calls = sum(m["tool_calls"] for m in mine.values())
        row["all tool-call %"] = (
            100.0 * sum(m["tool_call_rate"] * m["samples"] for m in mine.values()) / samples
        )
        row["tool error %"] = 100.0 * sum(m["tool_errors"] for m in mine.values()) / calls if calls else 0.0
        row["mean turns"] = sum(m["mean_turns"] * m["samples"] for m in mine.values()) / samples
        table.append(row)
    return table


def tool_outcome_table(rows: Sequence[EvalRow]) -> Table:
    """Per (scale, stage, benchmark): tool use and each tool-call outcome (%), and the accuracy of the
    tool-using vs the no-tool samples: where a tool is necessary, only the first can beat chance."""
    table = []
    for r in sorted(rows, key=lambda r: (r.scale, stage_key(r.stage), r.benchmark)):
        m = r.metrics
        table.append(
            {
                "scale": r.scale,
                "stage": r.stage,
                "benchmark": r.benchmark,
                "tool-call %": 100.0 * m["tool_call_rate"],
                "calls": int(m["tool_calls"]),
                "format error %": 100.0 * m["tool_format_error_rate"],
                "execution error %": 100.0 * m["tool_execution_error_rate"],
                "acc. tool-using %": 100.0 * m["accuracy_tool"] if m["tool_samples"] else math.nan,
                "acc. no-tool %": 100.0 * m["accuracy_no_tool"] if m["no_tool_samples"] else math.nan,
            }
        )
    return table


def _mean_measured(metrics: dict[int, dict[str, float]], key: str, denominator: str | None) -> float:
    """Mean of a per-round rate over the rounds that had something to measure (NaN if none had)."""
    values = [
        m[key] for m in metrics.values() if key in m and (denominator is None or m.get(denominator, 1.0) > 0)
    ]
    return sum(values) / len(values) if values else math.nan


_SUMMARY = [  # column, metric key, denominator, as a percentage
    ("tool-use %", "tool_use_rate", None, True),
    ("all-wrong T %", "all_wrong_rate_tool", "groups_with_tool", True),
    ("all-wrong no-T %", "all_wrong_rate_no_tool", "groups_with_no_tool", True),
    ("flip %", "flip_rate", "triggered_groups", True),
    ("all-wrong after resample %", "all_wrong_rate_after_resample", "groups_with_tool", True),
    ("format error %", "tool_format_error_rate", "tool_calls", True),
    ("zero-adv groups %", "zero_advantage_group_share", "advantage_groups", True),
    ("reward mean", "reward_mean", None, False),
]


def diagnostics_summary(run: RunData) -> Table:
    """Per RL arm: each diagnostic averaged over rounds (rounds with an empty denominator left out)."""
    table = []
    for scale in run.scales:
        for stage in sorted(scale.arms, key=stage_key):
            metrics = scale.arms[stage].metrics
            if not metrics:
                continue
            row: dict[str, str | float] = {"scale": scale.name, "arm": stage, "rounds": len(metrics)}
            for column, key, denominator, percent in _SUMMARY:
                value = _mean_measured(metrics, key, denominator)
                row[column] = 100.0 * value if percent else value
            row["resampled prefixes"] = int(sum(m.get("resampled_prefixes", 0.0) for m in metrics.values()))
            last = metrics[max(metrics)]
            row["last KL"] = last.get("update/kl", math.nan)
            row["last clip %"] = 100.0 * last.get("update/clip_fraction", math.nan)
            row["orig. token weight"] = _mean_measured(metrics, "update/original_token_weight", None)
            table.append(row)
    return table


def diagnostics_rows(run: RunData) -> Table:
    """Every round's stored metrics, one row per (scale, arm, round), for the CSV."""
    rows: Table = []
    for scale in run.scales:
        for stage in sorted(scale.arms, key=stage_key):
            for round_index, metrics in scale.arms[stage].metrics.items():
                rows.append({"scale": scale.name, "arm": stage, "round": round_index, **metrics})
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [{k: row.get(k, math.nan) for k in keys} for row in rows]


def ablation_table(rows: Sequence[EvalRow], run: RunData, ks: Sequence[int]) -> Table:
    """SFT+AXPO against each of its ablation arms (SFT+GRPO for reference), per scale; empty without any."""
    table = []
    for scale in run.scales:
        stages = {r.stage for r in rows if r.scale == scale.name} | set(scale.arms)
        ablations = sorted(s for s in stages if is_ablation(s))
        if not ablations:
            continue
        averages = {
            (r["stage"], k): r[f"average pass@{k}"]
            for r in results_table([r for r in rows if r.scale == scale.name], ks)
            for k in ks
        }
        for stage in [s for s in ("SFT+GRPO", "SFT+AXPO") if s in stages] + ablations:
            row: dict[str, str | float] = {"scale": scale.name, "variant": stage}
            for k in ks:
                row[f"average pass@{k}"] = averages.get((stage, k), math.nan)
            delta = averages.get((stage, ks[0]), math.nan) - averages.get(("SFT+AXPO", ks[0]), math.nan)
            row[f"Δ pass@{ks[0]} vs SFT+AXPO"] = delta
            metrics = scale.arms[stage].metrics if stage in scale.arms else {}
            row["tool-use %"] = 100.0 * _mean_measured(metrics, "tool_use_rate", None)
            row["flip %"] = 100.0 * _mean_measured(metrics, "flip_rate", "triggered_groups")
            table.append(row)
    return table


def _fmt(value: str | float) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "–"
    if value != 0 and abs(value) < 0.05:
        return f"{value:.2g}"
    return f"{value:.1f}"


def _md_table(table: Table) -> str:
    if not table:
        return "(nothing recorded)\n"
    columns = list(table[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in columns) + " |" for row in table]
    return "\n".join(lines) + "\n"


def _html_table(table: Table, css: str, grouped: bool = False) -> str:
    """An HTML table; `grouped` splits `<benchmark> pass@k` headers into a Pass@k row over benchmark names."""
    if not table:
        return '<p class="empty">(nothing recorded)</p>'
    columns = list(table[0])
    esc = html.escape
    if grouped:
        keys = [c for c in columns if " pass@" not in c]
        groups: dict[str, list[str]] = {}
        for c in columns:
            if " pass@" in c:
                name, k = c.rsplit(" ", 1)
                groups.setdefault(k, []).append(name)
        head = "<tr>" + "".join(f'<th rowspan="2">{esc(c)}</th>' for c in keys)
        head += "".join(f'<th colspan="{len(v)}">{esc(k.capitalize())}</th>' for k, v in groups.items())
        head += "</tr><tr>" + "".join(f"<th>{esc(n)}</th>" for v in groups.values() for n in v) + "</tr>"
        columns = keys + [f"{n} {k}" for k, v in groups.items() for n in v]
    else:
        head = "<tr>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"key" if isinstance(row[c], str) else "num"}">{esc(_fmt(row[c]))}</td>'
            for c in columns
        )
        + "</tr>"
        for row in table
    )
    return f'<table class="{esc(css)}"><thead>{head}</thead><tbody>{body}</tbody></table>'


_DEFINITIONS = [
    ("Pass@1", "mean accuracy over a question's samples, averaged over questions (percent)."),
    ("Pass@k", "unbiased estimator 1 − C(n−c, k)/C(n, k) per question, averaged (for n = k: any correct)."),
    ("tool-call %", "evaluation samples that open at least one <tool_call> (a lone </tool_call> does not)."),
    ("tool-use rate", "RL rollouts of the round that open at least one <tool_call> block."),
    (
        "all-wrong T",
        "groups whose tool-using subgroup T is non-empty and has no correct rollout / groups with T.",
    ),
    ("flip", "triggered groups that got a correct resampled continuation / triggered groups (AXPO only)."),
    (
        "all-wrong after resample",
        "all-wrong T on the post-resampling composition (T plus its tool-using continuations), over the "
        "groups with T; equals all-wrong T under GRPO.",
    ),
    (
        "format / execution error",
        "tool-call attempts that were malformed (unparseable, unknown tool, schema-breaking arguments, an "
        "unopened or unclosed tag) / well-formed but failed or missed (empty crop, exception, timeout).",
    ),
    (
        "orig. token weight",
        "loss weight of an original rollout's token relative to GRPO's 1/T (1.0 under GRPO; below 1 when "
        "AXPO's continuations share one token mean, algorithm.loss_normalization=batch_token_mean).",
    ),
    ("empty denominators", "rounds with nothing to measure are gaps in the plots and left out of the means."),
    (
        "σ²_seed, σ²_eval, σ²_q",
        "a seed's paired mean (average Pass@1, arm − baseline) varies by σ²_seed + σ²_eval: σ²_seed from "
        "training (between seeds), σ²_eval = σ²_q / (benchmarks × questions) from its evaluation, σ²_q "
        "being a question's difference's variance (question and samples); method of moments, "
        "evaluation/power.py.",
    ),
    (
        "MDE",
        "minimum detectable effect: the true difference the two-sided t test over seeds (α = 0.05) finds "
        "with probability 0.8, from the noncentral t; the expected half-width is the 95% t interval's mean.",
    ),
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;padding:0 1rem;
color:#222;line-height:1.4}
h1{font-size:1.6rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem}th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.key{white-space:nowrap}
tbody tr:nth-child(even){background:#fafafa}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:1rem}
figure{margin:0;border:1px solid #e3e3e3;padding:.4rem;background:#fff}figure img{width:100%;height:auto}
figcaption{font-size:.85rem;color:#555}.links a{margin-right:1rem}dt{font-weight:600}.empty{color:#777}
"""


def _html_page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def build_report(
    run_dir: str | Path,
    out_dir: Path | None = None,
    ks: Sequence[int] | None = None,
    viewer: bool = True,
) -> Path:
    """Write report.md, report.html, CSVs, plots/ and rollouts.html for a run folder; returns the folder.

    `run_dir` is a path or `file://` URI of `<root>/<experiment>/<run>` (or that run's `report/`, as the
    pipeline prints it); an S3 run must be downloaded first. `ks` defaults to the k values of the
    pipeline's own results.csv, else Pass@1 and Pass@n.
    """
    from axpo_core.evaluation import seeds
    from axpo_core.evaluation.plots import plot_bands, plot_diagnostics  # matplotlib only for a report

    run_dir = run_folder(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    run = read_run(run_dir)
    ks = list(ks or report_ks(run_dir) or default_ks(run))
    rows = eval_rows(run, ks)
    outcomes = tool_outcome_table(rows)
    oracle_file = out_dir / "tool_check.json"  # written by the pipeline's tool_check task
    oracle_rows = json.loads(oracle_file.read_text()) if oracle_file.is_file() else []
    tables: dict[str, Table] = {  # name -> table, written to <name>.csv when not empty
        "pass_at_k": results_table([r for r in rows if not is_ablation(r.stage)], ks),
        "ablations": ablation_table(rows, run, ks),
        "tool_calls": tool_call_table(rows),
        "tool_outcomes": outcomes,
        "tools_necessary": tools_necessary_table(oracle_rows, outcomes),
        "diagnostics_summary": diagnostics_summary(run),
        "diagnostics": diagnostics_rows(run),
    }
    bands = {}
    if seeds.seeds_of(run):  # a sweep: the same tables across seeds, with intervals
        bands = seeds.diagnostic_bands(run)
        power, power_designs = seeds.power_tables(run)
        tables |= {
            "seed_means": seeds.seed_table(run, ks),
            "comparison": seeds.comparison_table(run, ks),
            "paired_differences": seeds.paired_table(run, ks),
            "cost": seeds.cost_table(run),
            "diagnostic_bands": seeds.band_rows(bands),
            "power": power,
            "power_designs": power_designs,
        }
    csvs = []
    for name, table in tables.items():
        if table:
            (out_dir / f"{name}.csv").write_text(to_csv(table))
            csvs.append(f"{name}.csv")
    plots = [
        plot
        for scale in run.scales
        for plot in plot_diagnostics(
            scale.name,
            {stage: scale.arms[stage].metrics for stage in sorted(scale.arms, key=stage_key)},
            out_dir / "plots",
        )
    ]
    for scale in sorted({scale for scale, _ in bands}):
        arms = {
            stage: bands[(s, stage)]
            for s, stage in sorted(bands, key=lambda x: stage_key(x[1]))
            if s == scale
        }
        plots += plot_bands(scale, arms, out_dir / "plots")
    if viewer:
        write_viewer(run, out_dir / "rollouts.html")
    page = _Page(run, out_dir, tables, plots, ks, viewer, csvs)
    (out_dir / "report.md").write_text(page.markdown())
    (out_dir / "report.html").write_text(page.html())
    return out_dir


_SECTIONS = {  # table name -> heading (the per-round diagnostics CSV has no section: the plots show it)
    "pass_at_k": "Results: Pass@{ks} per benchmark and average (%)",
    "ablations": "Ablations: SFT+AXPO and its variants (average over benchmarks, %)",
    "tool_calls": "Tool-call rate per benchmark in evaluation (%)",
    "tool_outcomes": "Tool-call outcomes and accuracy with / without a tool, per benchmark (evaluation, %)",
    "tools_necessary": "Are tools necessary? The oracle with its tool, the no-tool oracle, the SFT agent (%)",
    "diagnostics_summary": "Training diagnostics, mean over rounds",
    "seed_means": "Across seeds: mean and 95% interval (t over seeds), Pass@{ks} (%)",
    "comparison": "Comparison to alternative RL recipes (the paper's table): mean, 95% t interval (%)",
    "paired_differences": "Across seeds: paired differences (same seed, same questions), percentage points",
    "cost": "Across seeds: RL cost per arm, summed over rounds (mean over seeds)",
    "power": "Power: average Pass@1's paired difference, its variance split into seeds (training) and "
    "evaluation (questions × samples), and the minimum detectable effect (two-sided α = 0.05, power 0.8) "
    "of this design; the headline t interval's half-width beside the bootstrap's",
    "power_designs": "Power: per seed count, the MDE and expected 95% t half-width with this evaluation, and "
    "the questions per benchmark that reach MDE ≤ 2 pp and a half-width ≤ 1 pp (`axpo power` for others)",
}
_OPTIONAL = {
    "ablations",
    "tools_necessary",
    "seed_means",
    "comparison",
    "paired_differences",
    "cost",
    "power",
    "power_designs",
}
_PLOTS_HEADING = "Diagnostics per round (GRPO dashed, AXPO solid)"


@dataclass
class _Page:
    """What report.md and report.html show, in the same order."""

    run: RunData
    out_dir: Path
    tables: dict[str, Table]
    plots: list[Plot]
    ks: Sequence[int]
    viewer: bool
    csvs: list[str]

    def href(self, plot: Plot) -> str:
        return plot.path.relative_to(self.out_dir).as_posix()

    def sections(self) -> list[tuple[str, str]]:
        """(table name, heading) of each table shown; the ablation table only when there are ablations."""
        ks = "/".join(str(k) for k in self.ks)
        return [
            (name, heading.format(ks=ks))
            for name, heading in _SECTIONS.items()
            if name in self.tables and (name not in _OPTIONAL or self.tables[name])
        ]

    def markdown(self) -> str:
        lines = [f"# Report: {self.run.name}", "", f"Run folder: `{self.run.path}`", ""]
        if self.viewer:
            lines += ["Rollout viewer: [rollouts.html](rollouts.html)", ""]
        for name, heading in self.sections():
            lines += [f"## {heading}", "", _md_table(self.tables[name])]
        lines += [f"## {_PLOTS_HEADING}", ""]
        figures = [f"![{p.title} ({p.scale})]({self.href(p)})" for p in self.plots]
        lines += figures or ["(no RL rounds recorded)"]
        lines += ["", "## Definitions", ""] + [f"- **{term}**: {text}" for term, text in _DEFINITIONS]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        esc = html.escape
        parts = [
            f"<h1>Report: {esc(self.run.name)}</h1>",
            f"<p>Run folder: <code>{esc(str(self.run.path))}</code></p>",
        ]
        links = [f'<a href="{esc(name)}">{esc(name)}</a>' for name in self.csvs]
        if self.viewer:
            links.insert(0, '<a href="rollouts.html"><strong>Rollout viewer</strong></a>')
        parts.append(f'<p class="links">{" ".join(links)}</p>')
        for name, heading in self.sections():
            parts.append(f'<h2 id="{name}">{esc(heading)}</h2>')
            parts.append(_html_table(self.tables[name], name, grouped=name == "pass_at_k"))
        parts.append(f'<h2 id="plots">{esc(_PLOTS_HEADING)}</h2>')
        figures = [
            f'<figure><img src="{esc(self.href(p))}" alt="{esc(p.title)}">'
            f"<figcaption>{esc(p.title)} · {esc(p.scale)}</figcaption></figure>"
            for p in self.plots
        ]
        parts.append(
            f'<div class="plots">{"".join(figures)}</div>'
            if figures
            else '<p class="empty">(no RL rounds)</p>'
        )
        parts.append("<h2>Definitions</h2><dl>")
        parts += [f"<dt>{esc(term)}</dt><dd>{esc(text)}</dd>" for term, text in _DEFINITIONS]
        parts.append("</dl>")
        return _html_page(f"Report: {self.run.name}", "\n".join(parts))
