"""The rollout viewer: one self-contained HTML page to read a run's rollouts turn by turn.

Per RL arm and round, each question's group: the question (image, text, gold answer), then every rollout
as its turns (thinking, tool call, tool response with its returned image, answer) with reward and tool
errors. AXPO's resampled continuations sit under the rollout whose prefix they share: the prefix once,
then its K continuations (only what follows the prefix) with their rewards. A few evaluation samples per
stage and benchmark follow. Images are inlined as downscaled base64 thumbnails (no other files to carry).

Model text is untrusted: every string from a record is HTML-escaped before it reaches the page, and the
page's only script is the static one below (it opens the folds an anchor link points into).

Over 600 lines: one page, and the escaping rule above holds only if everything that writes its HTML is read
together; its CSS and script are part of the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from axpo_core.evaluation.run_dir import ArmFolder, RoundRollouts, RunData
from axpo_core.rollout.trajectory import Trajectory
from axpo_core.runs import stage_key

QUESTION_PX = 360  # longest side of the question image thumbnails
TOOL_PX = 240  # ... and of tool-response images

# ------------------------------------------------------------------------------------------ parsing

_TAG = re.compile(
    r"<think>|</think>|<tool_call>|</tool_call>|<answer>|</answer>|<tool_response>|</tool_response>"
    r"|<\|im_start\|>(?:assistant|user|system)?|<\|im_end\|>|<\|endoftext\|>"
)
_VISION = re.compile(r"<\|vision_start\|>.*?(?:<\|vision_end\|>|$)", re.S)
_REPEATED_SPECIAL = re.compile(r"(<\|[a-z_]+\|>)(?:\1)+")
_OPEN = {
    "<think>": "think",
    "<tool_call>": "tool_call",
    "<answer>": "answer",
    "<tool_response>": "tool_response",
}
_CLOSE = {"</think>", "</tool_call>", "</answer>"}


@dataclass
class Step:
    """One displayed block of a rollout: its kind, its raw text and where that text sits in the completion."""

    kind: str  # think | tool_call | answer | tool_response | text
    turn: int
    start: int  # character span of the content in the completion text
    end: int
    closed: bool = False  # the block's closing tag was reached (an unclosed one was cut by a bound)
    images: int = 0  # images a tool response returned
    call_index: int | None = None  # which tool call of the rollout (for its error)

    def text(self, completion: str, after: int = 0) -> str:
        """The block's text, from `after` on (a continuation shows only what follows the shared prefix)."""
        raw = completion[max(self.start, after) : self.end]
        if self.kind == "tool_response":
            raw = _VISION.sub("", raw)
        return _REPEATED_SPECIAL.sub(
            lambda m: f"{m.group(1)}×{len(m.group(0)) // len(m.group(1))}", raw
        ).strip()


def parse_steps(completion: str) -> list[Step]:
    """Split a completion (special tokens kept, as `Trajectory.text`) into steps, tolerant of any garbage.

    Text outside the known tags is kept as `text` steps: nothing the model wrote is hidden.
    """
    steps: list[Step] = []
    state, turn, pos, calls = "text", 1, 0, 0
    current = Step("text", turn, 0, 0)

    def flush(end: int) -> None:
        current.end = end
        if current.kind != "skip" and (current.kind != "text" or completion[current.start : end].strip()):
            steps.append(current)

    for match in _TAG.finditer(completion):
        tag = match.group(0)
        if state == "tool_response" and tag != "</tool_response>":
            continue  # a tool response is environment text: tags inside it are part of it
        flush(match.start())
        pos = match.end()
        if tag in _OPEN:
            state = _OPEN[tag]
            if tag == "<tool_response>":
                current = Step(state, turn, pos, pos)
                continue
        elif tag in _CLOSE or tag == "</tool_response>":
            current.closed = True
            if tag == "</tool_call>" and current.kind == "text":  # no opening tag: the engine counts the
                current.kind = "tool_call"  # turn's text as one malformed call (error "unopened")
            if current.kind == "tool_call":
                current.call_index = calls
                calls += 1
            if current.kind == "tool_response":
                current.images = completion[current.start : match.start()].count("<|vision_start|>")
            state = "text"
        elif tag == "<|im_start|>assistant":
            turn += 1
            state = "text"
        elif tag.startswith("<|im_start|>"):
            state = "skip"  # the user header around a tool response
        else:  # <|im_end|>, <|endoftext|>: the turn is over; anything after it is still shown
            state = "text"
        current = Step(state, turn, pos, pos)
    flush(len(completion))
    return steps


# ------------------------------------------------------------------------------------------ images


@dataclass
class _Question:
    text: str | None
    answer: str | None
    image: Image.Image | None


class _Assets:
    """Per page: base64 thumbnails, each image encoded once: PNG (crisp for synthetic images), or JPEG when
    that is much smaller (photographs of the real benchmarks), so a page of many rounds stays loadable;
    and the questions regenerated from their ids."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], str] = {}
        self._questions: dict[str, _Question] = {}

    def question(self, question_id: str) -> _Question:
        """Text, gold answer and image, regenerated from the id (synthetic suites); None where it can't be."""
        if question_id not in self._questions:
            try:
                from axpo_core.envs.suites import question_by_id

                q = question_by_id(question_id)
                found = _Question(q.text, q.answer, q.images[0] if q.images else None)
            except Exception:  # a real benchmark's id, or a suite this version does not know
                found = _Question(None, None, None)
            self._questions[question_id] = found
        return self._questions[question_id]

    def src(self, image: Image.Image, max_side: int) -> str:
        key = (id(image), max_side)
        if key not in self._cache:
            thumb = image.convert("RGB")
            thumb.thumbnail((max_side, max_side))
            png, jpeg = io.BytesIO(), io.BytesIO()
            thumb.save(png, format="PNG", optimize=True)
            kind, data = "png", png.getvalue()
            if len(data) > 16_000:
                thumb.save(jpeg, format="JPEG", quality=82)
                if len(jpeg.getvalue()) < len(data) // 2:
                    kind, data = "jpeg", jpeg.getvalue()
            self._cache[key] = f"data:image/{kind};base64," + base64.b64encode(data).decode()
        return self._cache[key]

    def img(self, image: Image.Image | None, max_side: int, css: str, alt: str) -> str:
        if image is None:
            return f'<div class="{css} missing">[{html.escape(alt)}: image not stored]</div>'
        return (
            f'<img class="{css}" src="{self.src(image, max_side)}" alt="{html.escape(alt)}" '
            f'title="{image.width}×{image.height}">'
        )


# ------------------------------------------------------------------------------------------ rendering


def _algo_badge(arm: ArmFolder) -> str:
    """The arm's algorithm beside its label (none for a folder whose label names no algorithm)."""
    return f' <span class="algo">{_esc(arm.algo.upper())}</span>' if arm.algo else ""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(*parts: Any) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "_", str(p)) for p in parts)


def _reward_badge(reward: float) -> str:
    ok = reward > 0.5
    return f'<span class="reward {"ok" if ok else "bad"}">reward {reward:g} {"✓" if ok else "✗"}</span>'


def _record_badges(record: dict[str, Any]) -> str:
    badges = [_reward_badge(float(record.get("reward", 0.0)))]
    calls = int(record.get("num_tool_calls", len(record.get("tool_calls", []))))
    badges.append(f'<span class="badge">{calls} tool call{"s" if calls != 1 else ""}</span>')
    errors = int(record.get("tool_errors", 0))
    if errors:
        badges.append(f'<span class="badge err">{errors} tool error{"s" if errors != 1 else ""}</span>')
    for outcome in ("format", "execution"):
        count = list(record.get("tool_outcomes") or []).count(outcome)
        if count:
            badges.append(f'<span class="badge err">{count} {outcome}</span>')
    turns = int(record.get("turns", 0))
    badges.append(f'<span class="badge">{turns} turn{"s" if turns != 1 else ""}</span>')
    if record.get("truncated"):
        badges.append('<span class="badge warn">truncated</span>')
    return " ".join(badges)


_LABELS = {
    "think": "thinking",
    "tool_call": "tool call",
    "tool_response": "tool response",
    "answer": "answer",
    "text": "text",
}


def _render_steps(
    record: dict[str, Any],
    trajectory: Trajectory | None,
    assets: _Assets,
    after: int = 0,
    limit: int | None = None,
    branch_point: bool = False,
) -> str:
    """The rollout's steps, or only its text after character `after`, or only up to character `limit`."""
    completion: str = record.get("text", "")
    steps = parse_steps(completion)
    all_images = trajectory.images if trajectory is not None else []
    tool_images = completion.count("<|vision_start|>")
    first_tool_image = max(len(all_images) - tool_images, 0) if all_images else 0
    errors = trajectory.tool_errors if trajectory is not None else None
    out, image_index, turn = [], 0, None
    for step in steps:
        shown_from = image_index
        image_index += step.images
        if step.end <= after or (limit is not None and step.start > limit):
            continue
        if step.turn != turn:
            turn = step.turn
            out.append(f'<div class="turn-mark">turn {turn}</div>')
        # the branch point falls inside this step (or the prefix ends in it, before its closing tag)
        cut = limit is not None and (step.end > limit or (step.end == limit and not step.closed))
        label = _LABELS[step.kind]
        if after and step.start <= after:
            label += " (continues the shared prefix)"
        elif cut:
            label += " (cut at the branch point)"
        text = step.text(completion, after) if limit is None else step.text(completion[:limit], after)
        if text:
            body = f'<pre class="body">{_esc(text)}</pre>'
        else:
            empty = "(the call itself is what the continuations resample)" if cut else "(empty)"
            body = f'<div class="body empty">{empty}</div>'
        extra = ""
        if step.kind == "tool_response" and step.images:
            imgs = [
                assets.img(
                    all_images[first_tool_image + i] if first_tool_image + i < len(all_images) else None,
                    TOOL_PX,
                    "tool-image",
                    "tool response image",
                )
                for i in range(shown_from, shown_from + step.images)
            ]
            extra = f'<div class="images">{"".join(imgs)}</div>'
        if step.kind == "tool_call" and errors is not None and step.call_index is not None and not cut:
            if step.call_index < len(errors) and errors[step.call_index] is not None:
                body += f'<div class="tool-error">tool error: {_esc(errors[step.call_index])}</div>'
        out.append(f'<div class="step {step.kind}"><span class="label">{label}</span>{extra}{body}</div>')
    if branch_point:
        out.append('<div class="branch-mark">⤷ the continuations below branch here</div>')
    messages = record.get("tool_error_messages") or []
    if errors is None and messages:  # no token file: list the errors without their call
        out.append('<div class="tool-error">tool errors: ' + "; ".join(_esc(m) for m in messages) + "</div>")
    return "".join(out) or '<div class="empty">(no text)</div>'


def _common_prefix_length(texts: Sequence[str]) -> int:
    length = 0
    while all(length < len(t) for t in texts) and len({t[length] for t in texts}) == 1:
        length += 1
    return length


def _boundary(text: str, prefix: str) -> int:
    """Where `prefix` ends in `text` (decoding a token prefix may differ slightly from the full decode)."""
    return len(prefix) if text.startswith(prefix) else _common_prefix_length([text, prefix])


def _shared_prefix(source: dict[str, Any], continuations: Sequence[dict[str, Any]]) -> str:
    """The completion text the continuations share with their source (stored, else their common prefix)."""
    stored = continuations[0].get("prefix_text")
    if stored is not None:
        return stored
    texts = [source.get("text", "")] + [c.get("text", "") for c in continuations]
    common = texts[0][: _common_prefix_length(texts)]
    # AXPO cuts right after `<tool_call>`: continuations that agree on the call's first characters would
    # otherwise pull the branch point into the JSON.
    opening = common.rfind("<tool_call>")
    return common[: opening + len("<tool_call>")] if opening >= 0 else common


def _call_arguments(call: str) -> str:
    """A tool call's arguments as compact JSON (what a resample can change: where to zoom, which colour,
    what to search), or the raw text when the call does not parse."""
    try:
        parsed = json.loads(call)
        arguments = parsed.get("arguments", parsed) if isinstance(parsed, dict) else parsed
        return json.dumps(arguments, ensure_ascii=False, separators=(", ", ": "))
    except (ValueError, TypeError, RecursionError):
        return call.strip() or "(no call)"


def _arguments_table(records: Sequence[dict[str, Any]]) -> str:
    """Each continuation's first tool call: its arguments, outcome and the rollout's reward, side by side."""
    rows = []
    for record in records:
        calls = record.get("tool_calls") or []
        outcomes = record.get("tool_outcomes") or []
        outcome = outcomes[0] if outcomes else "none"
        arguments = _call_arguments(calls[0]) if calls else "(no call)"
        reward = _reward_badge(float(record.get("reward", 0.0)))
        rows.append(
            f"<tr><td>#{_esc(record['sample_id'])}</td><td><code>{_esc(arguments)}</code></td>"
            f'<td class="outcome {_esc(outcome)}">{_esc(outcome)}</td><td>{reward}</td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in ("continuation", "tool-call arguments", "outcome", "reward"))
    return f'<table class="arguments"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


@dataclass
class _Branches:
    group_id: str
    records: list[dict[str, Any]] = field(default_factory=list)


def _render_branches(
    anchor: str,
    source: dict[str, Any],
    branches: _Branches,
    source_trajectory: Trajectory | None,
    trajectories: dict[tuple[str, int], Trajectory],
    assets: _Assets,
) -> str:
    records = sorted(branches.records, key=lambda r: r["sample_id"])
    prefix = _shared_prefix(source, records)
    source_cut = _boundary(source.get("text", ""), prefix)
    rewards = [float(r.get("reward", 0.0)) for r in records]
    prefix_tokens = (records[0].get("parent") or {}).get("prefix_tokens")
    head = (
        f'<div class="branches-head">AXPO resampled <b>{len(records)}</b> continuations of this rollout\'s '
        f"prefix ({_esc(prefix_tokens)} tokens incl. prompt; advantage group <code>{_esc(branches.group_id)}"
        f"</code>) · rewards {' '.join(f'{r:g}' for r in rewards)} · "
        f"{'recovered ✓' if any(r > 0.5 for r in rewards) else 'no correct continuation'}</div>"
    )
    prefix_html = (
        _render_steps(source, source_trajectory, assets, limit=source_cut, branch_point=True)
        if prefix
        else '<div class="empty">(empty prefix: whole rollouts resampled from the prompt)</div>'
    )
    items = []
    for record in records:
        t = trajectories.get((record["question_id"], record["sample_id"]))
        sample = _esc(record["sample_id"])
        items.append(
            f'<li class="continuation" id="{anchor}-c{sample}" data-sample="{sample}">'
            f'<div class="rollout-head">continuation #{sample} {_record_badges(record)}</div>'
            f"{_render_steps(record, t, assets, after=_boundary(record.get('text', ''), prefix))}</li>"
        )
    return (
        f'<div class="branches">{head}{_arguments_table(records)}'
        '<div class="shared-prefix"><div class="label">shared prefix '
        f"(shown once)</div>{prefix_html}</div>"
        f'<ol class="continuations">{"".join(items)}</ol></div>'
    )


def _render_rollout(
    anchor: str,
    record: dict[str, Any],
    trajectories: dict[tuple[str, int], Trajectory],
    branches: Sequence[_Branches],
    assets: _Assets,
) -> str:
    t = trajectories.get((record["question_id"], record["sample_id"]))
    ok = float(record.get("reward", 0.0)) > 0.5
    inner = "".join(_render_branches(anchor, record, b, t, trajectories, assets) for b in branches)
    return (
        f'<article class="rollout {"correct" if ok else "wrong"}" id="{anchor}-r{record["sample_id"]}" '
        f'data-sample="{_esc(record["sample_id"])}">'
        f'<div class="rollout-head">rollout #{_esc(record["sample_id"])} {_record_badges(record)}</div>'
        f"{_render_steps(record, t, assets)}{inner}</article>"
    )


def _question_block(question_id: str, image: Image.Image | None, assets: _Assets) -> str:
    q = assets.question(question_id)
    image = image if image is not None else q.image
    text = _esc(q.text) if q.text is not None else '<span class="empty">(question text not stored)</span>'
    answer = f'<div class="gold">gold answer: <b>{_esc(q.answer)}</b></div>' if q.answer is not None else ""
    return (
        f'<div class="question">{assets.img(image, QUESTION_PX, "question-image", "question image")}'
        f'<div class="question-text">{text}{answer}</div></div>'
    )


def _question_image(records: Sequence[dict[str, Any]], trajectories: dict) -> Image.Image | None:
    """The prompt's first image: a trajectory's images minus those its tool responses returned."""
    for record in records:
        t = trajectories.get((record["question_id"], record["sample_id"]))
        if t is not None and t.images and len(t.images) > record.get("text", "").count("<|vision_start|>"):
            return t.images[0]
    return None


def _triggered(records: Sequence[dict[str, Any]]) -> bool:
    """AXPO's trigger: the tool-using subgroup is non-empty and has no correct rollout."""
    tool = [r for r in records if r.get("used_tool")]
    return bool(tool) and not any(float(r.get("reward", 0.0)) > 0.5 for r in tool)


def _group_summary(records: Sequence[dict[str, Any]], branches: int, flips: int) -> str:
    rewards = "".join("●" if float(r.get("reward", 0.0)) > 0.5 else "○" for r in records)
    tool = sum(bool(r.get("used_tool")) for r in records)
    bits = [
        f'<span class="rewards" title="● correct ○ wrong">{rewards}</span>',
        f"tool {tool}/{len(records)}",
    ]
    if _triggered(records):
        bits.append('<span class="badge warn">triggered</span>')
    if branches:
        bits.append(
            f'<span class="badge axpo">{branches} resampled prefix{"es" if branches > 1 else ""}</span>'
        )
        if flips:
            bits.append(f'<span class="badge ok">{flips} recovered</span>')
    return " · ".join(bits)


def _render_round(
    scale: str, arm: ArmFolder, rollouts: RoundRollouts, max_questions: int, assets: _Assets
) -> tuple[str, str]:
    """One round's `<details>` and its link in the index."""
    by_question: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in rollouts.records:
        by_question[record["question_id"]].append(record)
    branches: dict[tuple[str, int], dict[str, _Branches]] = defaultdict(dict)
    for record in rollouts.resampled:
        parent = record.get("parent") or {}
        key = (record["question_id"], int(parent.get("sample_id", -1)))
        branches[key].setdefault(record["group_id"], _Branches(record["group_id"])).records.append(record)

    def priority(qid: str) -> tuple[int, int, str]:
        resampled = sum(1 for (q, _) in branches if q == qid)
        return (-resampled, -int(_triggered(by_question[qid])), qid)

    chosen = sorted(by_question, key=priority)[:max_questions]
    groups = []
    for qid in chosen:
        records = sorted(by_question[qid], key=lambda r: r["sample_id"])
        mine = [b for (q, _), bs in branches.items() if q == qid for b in bs.values()]
        flips = sum(any(float(r.get("reward", 0.0)) > 0.5 for r in b.records) for b in mine)
        anchor = _anchor(scale, arm.stage, rollouts.round, qid)
        cards = "".join(
            _render_rollout(
                anchor,
                r,
                rollouts.trajectories,
                list(branches.get((qid, r["sample_id"]), {}).values()),
                assets,
            )
            for r in records
        )
        groups.append(
            f'<details class="group" id="{anchor}"><summary>'
            f"<code>{_esc(qid)}</code> · {_group_summary(records, len(mine), flips)}</summary>"
            f"{_question_block(qid, _question_image(records, rollouts.trajectories), assets)}"
            f"{cards}</details>"
        )
    m = arm.metrics.get(rollouts.round, {})
    stats = [
        f"{len(rollouts.records)} rollouts",
        f"{len(by_question)} question{'s' * (len(by_question) != 1)}",
    ]
    if m:
        stats += [f"tool-use {100 * m.get('tool_use_rate', 0):.0f}%", f"reward {m.get('reward_mean', 0):.2f}"]
    if rollouts.resampled:
        stats.append(f"{len(rollouts.resampled)} resampled continuations")
    if len(chosen) < len(by_question):
        stats.append(f"showing {len(chosen)} (resampled and triggered first)")
    anchor = _anchor(scale, arm.stage, "round", rollouts.round)
    body = (
        f'<details class="round" id="{anchor}"><summary>Round {rollouts.round} · {_esc(" · ".join(stats))}'
        f"</summary>{''.join(groups)}</details>"
    )
    link = f'<a href="#{anchor}">{rollouts.round}{"*" if rollouts.resampled else ""}</a>'
    return body, link


def _spread(rounds: Sequence[int], limit: int) -> list[int]:
    """At most `limit` rounds, evenly spaced, first and last included."""
    if len(rounds) <= limit:
        return list(rounds)
    step = (len(rounds) - 1) / (limit - 1)
    return sorted({rounds[round(i * step)] for i in range(limit)})


def _render_eval(
    scale: str, stage: str, bench: str, records: Sequence[dict[str, Any]], questions: int, assets: _Assets
) -> str:
    by_question: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_question[record["question_id"]].append(record)
    out = []
    for qid in sorted(by_question)[:questions]:
        group = sorted(by_question[qid], key=lambda r: r["sample_id"])
        anchor = _anchor("eval", scale, stage, bench, qid)
        cards = "".join(_render_rollout(anchor, r, {}, [], assets) for r in group)
        out.append(
            f'<details class="group" id="{anchor}"><summary>'
            f"<code>{_esc(qid)}</code> · {_group_summary(group, 0, 0)}</summary>"
            f"{_question_block(qid, None, assets)}{cards}</details>"
        )
    return "".join(out)


def render_viewer(run: RunData, max_rounds: int = 6, max_questions: int = 8, eval_questions: int = 2) -> str:
    """The viewer page for a run (at most `max_rounds` rounds per arm, `max_questions` groups per round)."""
    assets = _Assets()
    index, sections = [], []
    for scale in run.scales:
        for stage in sorted(scale.arms, key=stage_key):
            arm = scale.arms[stage]
            rounds = _spread(arm.rollout_rounds(), max_rounds)
            if not rounds:
                continue
            anchor = _anchor(scale.name, stage)
            bodies, links = [], []
            for round_index in rounds:
                body, link = _render_round(scale.name, arm, arm.rollouts(round_index), max_questions, assets)
                bodies.append(body)
                links.append(link)
            index.append(
                f'<tr><td><a href="#{anchor}">{_esc(scale.name)} · {_esc(stage)}</a></td>'
                f'<td class="rounds">{" ".join(links)}</td></tr>'
            )
            sections.append(
                f'<section class="arm" id="{anchor}"><h2>{_esc(scale.name)} · {_esc(stage)}'
                f'{_algo_badge(arm)}</h2>{"".join(bodies)}</section>'
            )
    eval_sections = []
    for scale in run.scales:
        for stage in sorted(scale.evals, key=stage_key):
            for bench, records in scale.evals[stage].items():
                anchor = _anchor("eval", scale.name, stage, bench)
                eval_sections.append(
                    f'<details class="round" id="{anchor}"><summary>{_esc(scale.name)} · {_esc(stage)} · '
                    f"{_esc(bench)} · {len(records)} samples</summary>"
                    f"{_render_eval(scale.name, stage, bench, records, eval_questions, assets)}</details>"
                )
    title = f"Rollouts: {run.name}"
    body = [
        f"<h1>{_esc(title)}</h1>",
        '<p class="help">Pick an arm and a round (<b>*</b> = AXPO resampled something), then a question. '
        "Groups with resampled prefixes and triggered groups (tool subgroup all wrong) come first. "
        "Under a rollout AXPO branched from: the shared prefix once, then each continuation from the "
        'branch point on. <button type="button" onclick="fold(true)">expand all</button> '
        '<button type="button" onclick="fold(false)">collapse all</button></p>',
        '<table class="index"><thead><tr><th>arm</th><th>rounds</th></tr></thead><tbody>'
        + ("".join(index) or '<tr><td colspan="2">(no RL rollouts in this run)</td></tr>')
        + "</tbody></table>",
        *sections,
    ]
    if eval_sections:
        body += [
            f'<section class="arm" id="evaluation"><h2>Evaluation samples (first {eval_questions} '
            "questions per benchmark)</h2>",
            *eval_sections,
            "</section>",
        ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{_JS}</script></body></html>\n"
    )


def write_viewer(run: RunData, path: Path, **limits: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_viewer(run, **limits))
    return path


_JS = """
function openTo(el) {
  for (; el; el = el.parentElement) { if (el.tagName === 'DETAILS') { el.open = true; } }
}
function fold(open) { document.querySelectorAll('details').forEach(function (d) { d.open = open; }); }
function follow() {
  if (!location.hash) { return; }
  var el = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (el) { openTo(el); el.scrollIntoView(); }
}
window.addEventListener('hashchange', follow);
window.addEventListener('load', follow);
"""

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 1.5rem auto; max-width: 1150px;
  padding: 0 1rem; color: #222; line-height: 1.35 }
h1 { font-size: 1.5rem } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd }
.help { color: #444; font-size: .9rem }
.algo { font-size: .75rem; background: #eee; border-radius: 3px; padding: 0 .3rem }
table.index { border-collapse: collapse; font-size: .9rem }
table.index td, table.index th { border: 1px solid #ccc; padding: .2rem .5rem }
td.rounds a { margin-right: .5rem }
details { margin: .35rem 0 }
details.round > summary { font-weight: 600; cursor: pointer; padding: .25rem; background: #f4f4f4 }
details.group { margin-left: 1rem; border-left: 3px solid #ddd; padding-left: .6rem }
details.group > summary { cursor: pointer; padding: .2rem 0 }
.question { display: flex; gap: 1rem; align-items: flex-start; margin: .5rem 0; padding: .5rem;
  background: #f8f8ff }
.question-text { white-space: pre-wrap } .gold { margin-top: .4rem; color: #264 }
.rollout { border: 1px solid #ddd; border-left: 5px solid #c33; margin: .6rem 0; padding: .4rem .6rem;
  background: #fff }
.rollout.correct { border-left-color: #2a2 }
.rollout-head { font-weight: 600; margin-bottom: .3rem }
.badge, .reward { font-weight: 400; font-size: .8rem; border-radius: 3px; padding: 0 .35rem; background: #eee;
  margin-left: .2rem }
.reward.ok, .badge.ok { background: #d7f5d7 } .reward.bad { background: #fadada }
.badge.err { background: #ffd8b0 } .badge.warn { background: #fff2b3 } .badge.axpo { background: #e2d9ff }
.turn-mark { font-size: .75rem; color: #888; margin-top: .4rem; border-top: 1px dashed #ddd }
.step { margin: .25rem 0 .25rem .4rem }
.step .label { font-size: .72rem; text-transform: uppercase; letter-spacing: .04em; color: #666 }
pre.body { white-space: pre-wrap; word-break: break-word; margin: .1rem 0; padding: .3rem .45rem;
  font-size: .85rem; font-family: ui-monospace, Menlo, Consolas, monospace; background: #fafafa;
  border-radius: 3px }
.think pre.body { background: #f5f5f5; color: #444 } .tool_call pre.body { background: #eef4ff }
.tool_response pre.body { background: #fff8e6 } .answer pre.body { background: #e9f8e9; font-weight: 600 }
.tool-error { color: #b34700; font-size: .85rem }
.images img { border: 1px solid #ccc; margin: .2rem .3rem 0 0 }
.missing { font-size: .8rem; color: #888 } .empty { color: #888; font-size: .85rem }
.branches { margin: .6rem 0 .2rem 1rem; border: 1px solid #cbbcf6; background: #faf8ff; padding: .4rem .6rem }
.branches-head { font-size: .9rem; margin-bottom: .3rem }
.shared-prefix { border-left: 3px solid #9b87e6; padding-left: .4rem }
.branch-mark { color: #6a4fd0; font-size: .85rem; font-weight: 600 }
ol.continuations { margin: .4rem 0 0 0; padding-left: 1.6rem }
li.continuation { border: 1px solid #ddd; margin: .4rem 0; padding: .3rem .5rem; background: #fff }
"""
