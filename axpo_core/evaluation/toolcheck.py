"""Are tools necessary in the toy world? Three accuracies per tool suite (docs/design.md §6b).

* oracle with its tool: the suite's oracle trajectory played through the rollout engine with real tool
  execution; it counts as correct when the engine's reward is 1, every tool call succeeded, and, for tools
  that answer in text (python, search), the answer is in the tool's output, so the tool, not the script,
  produced it (for image_zoom_in the crop's content is pinned by tests/test_suites.py). ≈ 100%.
* the no-tool oracle: the suite's tool-free answer (a guess, or mental arithmetic where the tool is optional)
  over `draws` draws per question: the chance level without the tool.
* the agent's tool-using vs no-tool samples: from evaluation records (`runner.tool_metrics`), shown beside
  these two in the report.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from axpo_core.config import Config
from axpo_core.envs.suites import get_suite
from axpo_core.evaluation.runner import benchmark_questions, evaluation_config
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.engine import RolloutEngine
from axpo_core.rollout.oracle import ScriptedGenerator
from axpo_core.rollout.trajectory import Trajectory

TEXT_TOOLS = ("python", "search")


def _tool_output(chat: ChatFormat, trajectory: Trajectory) -> str:
    """What the environment appended after the prompt: the tool responses, decoded."""
    ids = [t for t, m in zip(trajectory.token_ids, trajectory.loss_mask, strict=True) if not m]
    return chat.decode(ids[trajectory.prompt_len :])


def tools_necessary(config: Config, chat: ChatFormat, draws: int = 4) -> list[dict[str, float | str]]:
    """One row per evaluated synthetic suite that has a tool: oracle-with-tool and no-tool accuracy (0–1)."""
    config = evaluation_config(config)
    rows: list[dict[str, float | str]] = []
    for name in config.evaluation.benchmarks:
        try:
            suite = get_suite(name)
        except KeyError:  # a real benchmark: it has no oracle
            continue
        if suite.tool is None:
            continue
        questions = benchmark_questions(config, name)
        scripts = {(q.question_id, 0): suite.oracle(q) for q in questions}
        engine = RolloutEngine(ScriptedGenerator(chat, scripts), chat, config.rollout, config.tools)
        oracle = [
            t.correct
            and all(o == "ok" for o in t.tool_outcomes)
            and (suite.tool not in TEXT_TOOLS or q.answer in _tool_output(chat, t))
            for q, t in zip(questions, engine.rollout(questions, 1), strict=True)
        ]
        guesses = [
            suite.verify(q, suite.no_tool_oracle(q, random.Random(f"toolcheck:{q.question_id}:{d}"))[-1])
            for q in questions
            for d in range(draws)
        ]
        rows.append(
            {
                "suite": name,
                "tool": suite.tool,
                "questions": float(len(questions)),
                "oracle_with_tool": sum(oracle) / len(oracle),
                "no_tool_oracle": sum(guesses) / len(guesses),
            }
        )
    return rows


def tools_necessary_table(
    oracle_rows: Sequence[dict], agent_rows: Sequence[dict], stage: str = "SFT"
) -> list[dict[str, float | str]]:
    """Oracle rows joined with the agent's tool-using / no-tool accuracy at `stage` (percentages)."""
    agent = {r["benchmark"]: r for r in agent_rows if r.get("stage") == stage}
    table = []
    for row in oracle_rows:
        mine = agent.get(row["suite"], {})
        table.append(
            {
                "suite": row["suite"],
                "tool": row["tool"],
                "oracle with tool %": 100.0 * float(row["oracle_with_tool"]),
                "no-tool oracle %": 100.0 * float(row["no_tool_oracle"]),
                f"{stage} tool-using %": float(mine.get("acc. tool-using %", float("nan"))),
                f"{stage} no-tool %": float(mine.get("acc. no-tool %", float("nan"))),
                f"{stage} tool-call %": float(mine.get("tool-call %", float("nan"))),
            }
        )
    return table
