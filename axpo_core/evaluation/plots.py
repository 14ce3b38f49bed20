"""Per-round diagnostics plots, GRPO and AXPO arms on the same axes (paper Fig. 3 style), as PNG files.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so building a
report never touches the caller's matplotlib state and works without a display.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# metric key, title, y label, denominator key (a round whose denominator is 0 has nothing to measure:
# `diagnostics.py` writes 0.0 there, and the plot leaves a gap instead of a misleading 0)
DIAGNOSTIC_PLOTS: list[tuple[str, str, str, str | None]] = [
    ("tool_use_rate", "Tool-use rate", "rollouts with ≥ 1 tool call", None),
    (
        "all_wrong_rate_tool",
        "All-wrong rate, tool subgroup",
        "groups whose T has no correct",
        "groups_with_tool",
    ),
    (
        "all_wrong_rate_no_tool",
        "All-wrong rate, no-tool subgroup",
        "groups whose no-tool part has no correct",
        "groups_with_no_tool",
    ),
    ("flip_rate", "Recovery (flip) rate", "triggered groups with a correct continuation", "triggered_groups"),
    (
        "all_wrong_rate_after_resample",
        "All-wrong rate after resampling",
        "groups whose T, continuations included, has no correct",
        "groups_with_tool",
    ),
    ("reward_mean", "Reward mean", "mean reward of the round's rollouts", None),
    (
        "reward_gain_vs_start",
        "Reward gain over the start",
        "reward mean − the starting policy's, same questions",
        None,
    ),
    ("zero_advantage_group_share", "Zero-advantage groups", "share of advantage groups", "advantage_groups"),
    ("tool_error_rate", "Tool error rate", "tool calls that returned an error", "tool_calls"),
    ("tool_format_error_rate", "Tool format error rate", "malformed tool calls", "tool_calls"),
    ("update/clip_fraction", "Clip fraction", "tokens whose ratio was clipped", None),
    ("update/kl", "KL to the reference", "KL", None),
]
RATE_KEYS = {key for key, *_ in DIAGNOSTIC_PLOTS if key not in ("update/kl", "reward_gain_vs_start")}

_COLOURS = {"GRPO": "#7f7f7f", "SFT+GRPO": "#1f77b4", "SFT+AXPO": "#d62728"}
_EXTRA = ["#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


@dataclass(frozen=True)
class Plot:
    scale: str
    key: str
    title: str
    path: Path  # the PNG


def arm_style(stage: str, index: int) -> dict[str, object]:
    """One colour per arm across every plot; GRPO arms dashed, AXPO arms solid."""
    colour = _COLOURS.get(stage, _EXTRA[index % len(_EXTRA)])
    if "AXPO" in stage:
        return {"color": colour, "linestyle": "-", "marker": "o", "linewidth": 1.8, "zorder": 3}
    # hollow squares under the AXPO dots, so equal values stay visible as two markers
    return {
        "color": colour,
        "linestyle": "--",
        "marker": "s",
        "markersize": 9,
        "markerfacecolor": "none",
        "linewidth": 1.8,
        "zorder": 2,
    }


def file_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _series(
    metrics: Mapping[int, Mapping[str, float]], key: str, denominator: str | None
) -> tuple[list[int], list[float]]:
    rounds, values = [], []
    for round_index, m in sorted(metrics.items()):
        if key not in m:
            continue
        empty = denominator is not None and m.get(denominator, 1.0) == 0.0
        rounds.append(round_index)
        values.append(float("nan") if empty else m[key])
    return rounds, values


def plot_metric(
    arms: Mapping[str, Mapping[int, Mapping[str, float]]],
    key: str,
    title: str,
    ylabel: str,
    denominator: str | None,
    path: Path,
) -> bool:
    """One PNG: `key` per round, one line per arm. False (nothing written) when no arm has the metric."""
    lines = {stage: _series(metrics, key, denominator) for stage, metrics in arms.items()}
    if not any(rounds for rounds, _ in lines.values()):
        return False
    figure = Figure(figsize=(5.4, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    has_data = False
    for index, (stage, (rounds, values)) in enumerate(lines.items()):
        measured = [v for v in values if not math.isnan(v)]
        label = stage if measured else f"{stage} (nothing to measure)"
        if not rounds:
            continue
        ax.plot(rounds, values, label=label, **arm_style(stage, index))
        has_data = has_data or bool(measured)
    all_rounds = sorted({r for rounds, _ in lines.values() for r in rounds})
    ax.set_xticks(all_rounds if len(all_rounds) <= 12 else all_rounds[:: math.ceil(len(all_rounds) / 12)])
    if key in RATE_KEYS or "pass@" in key:
        ax.set_ylim(-0.04, 1.04)
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if not has_data:
        ax.text(0.5, 0.5, "nothing to measure in any round", ha="center", va="center", transform=ax.transAxes)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return True


def plot_diagnostics(
    scale: str, arms: Mapping[str, Mapping[int, Mapping[str, float]]], out_dir: Path
) -> list[Plot]:
    """The diagnostics plots of one scale (GRPO and AXPO arms together), plus any per-round Pass@k."""
    plots = []
    arms = {stage: metrics for stage, metrics in arms.items() if metrics}
    if not arms:
        return plots
    present = {k for metrics in arms.values() for m in metrics.values() for k in m}
    specs = [spec for spec in DIAGNOSTIC_PLOTS if spec[0] in present]
    specs += [(k, k, "Pass@k", None) for k in sorted(present) if "pass@" in k]
    for key, title, ylabel, denominator in specs:
        path = out_dir / f"{file_slug(scale)}__{file_slug(key)}.png"
        if plot_metric(arms, key, f"{title} ({scale})", ylabel, denominator, path):
            plots.append(Plot(scale, key, title, path))
    return plots


def plot_bands(
    scale: str, arms: Mapping[str, Mapping[str, Mapping[int, tuple]]], out_dir: Path
) -> list[Plot]:
    """Per diagnostic, one PNG: each arm's mean over seeds per round, with its 95% band (sweeps)."""
    titles = {key: (title, ylabel) for key, title, ylabel, _ in DIAGNOSTIC_PLOTS}
    keys = [key for key, *_ in DIAGNOSTIC_PLOTS if any(key in per_key for per_key in arms.values())]
    plots = []
    for key in keys:
        title, ylabel = titles[key]
        figure = Figure(figsize=(5.4, 3.4), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)
        ax = figure.add_subplot()
        for index, (stage, per_key) in enumerate(arms.items()):
            if key not in per_key:
                continue
            rounds = sorted(per_key[key])
            mean, low, high = zip(*(per_key[key][r] for r in rounds), strict=True)
            style = arm_style(stage, index)
            ax.plot(rounds, mean, label=stage, **style)
            if not any(math.isnan(v) for v in low):
                ax.fill_between(rounds, low, high, color=style["color"], alpha=0.15, linewidth=0)
        if key in RATE_KEYS:
            ax.set_ylim(-0.04, 1.04)
        ax.set_title(f"{title} ({scale}, mean and 95% band over seeds)", fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / f"{file_slug(scale)}__seeds__{file_slug(key)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
        plots.append(Plot(scale, key, f"{title} over seeds", path))
    return plots
