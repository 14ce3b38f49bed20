"""Synthetic suites: determinism, oracle correctness and format, and the resolution argument of
docs/design.md §3.

"The model's view" below mimics the Qwen2-VL processor (smart_resize to multiples of 32 with at most
128×128 pixels, bicubic), and the tool's crop maps 0–1000 coordinates to pixels by rounding.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import random
import re
import statistics
import time

import pytest
from PIL import Image, ImageChops, ImageFont

from axpo_core.envs.python_helpers import PRELOAD
from axpo_core.envs.suites import (
    BENCHMARK_SUITES,
    COLOURS,
    MIRRORS,
    SUITES,
    ControlShapes,
    DynaChart,
    MathDiagram,
    PythonCount,
    Question,
    RenderedSuite,
    SearchEntity,
    Suite,
    UnknownSuiteError,
    ZoomDetail,
    get_suite,
    question_by_id,
)
from axpo_core.envs.tools import TOOL_NAMES, ToolSession
from axpo_core.rewards import extract_answer

FROZEN = {
    "zoom_detail": (["blue", "blue", "green", "purple"], "2fa334890e7fc476"),
    "python_count": (["-8", "7", "17", "1"], "16ef65de9e553a6f"),
    "control_shapes": (["purple", "yellow", "green", "circle"], "d1436bfaee291e0b"),
}
MAX_PIXELS = 128 * 128
TOL = 45  # RGB distance within which a pixel "shows" a colour
TOOL_TURN = re.compile(r"^<think>([^<>]+)</think>\n<tool_call>\n(.+)\n</tool_call>$", re.DOTALL)
ANSWER_TURN = re.compile(r"^<think>([^<>]+)</think>\n<answer>\\boxed\{([^{}]+)\}</answer>$")


def smart_size(w: int, h: int, f: int = 32, min_pixels: int = 32 * 32) -> tuple[int, int]:
    """Qwen2-VL's smart_resize: sides multiples of ``f``, area within [min_pixels, MAX_PIXELS]."""
    hb, wb = max(f, round(h / f) * f), max(f, round(w / f) * f)
    if hb * wb > MAX_PIXELS:
        beta = math.sqrt(h * w / MAX_PIXELS)
        hb, wb = max(f, math.floor(h / beta / f) * f), max(f, math.floor(w / beta / f) * f)
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / f) * f, math.ceil(w * beta / f) * f
    return wb, hb


def model_views(img: Image.Image) -> list[Image.Image]:
    """What the policy could see: the processor's resize, and plain fits into 128×128 with other filters."""
    views = [img.resize(smart_size(*img.size), Image.Resampling.BICUBIC)]
    scale = min(1.0, math.sqrt(MAX_PIXELS / (img.width * img.height)))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    for resample in (Image.Resampling.BILINEAR, Image.Resampling.BOX, Image.Resampling.LANCZOS):
        views.append(img.resize(size, resample))
    return views


def zoom(img: Image.Image, bbox: list[int]) -> Image.Image:
    """The tool's crop of a 0–1000 bbox."""
    w, h = img.size
    x0, y0, x1, y1 = bbox
    return img.crop((round(x0 * w / 1000), round(y0 * h / 1000), round(x1 * w / 1000), round(y1 * h / 1000)))


def closest(img: Image.Image, colour: tuple[int, ...]) -> float:
    return min(math.dist(p, colour) for p in img.get_flattened_data())


def parse_call_text(turn: str) -> str:
    m = TOOL_TURN.match(turn)
    assert m, turn
    return m.group(2)


def parse_call(turn: str) -> dict:
    m = TOOL_TURN.match(turn)
    assert m, turn
    call = json.loads(m.group(2))
    assert json.dumps(call) == m.group(2), "the call must be exactly json.dumps of the object"
    assert list(call) == ["name", "arguments"] and isinstance(call["arguments"], dict)
    return call


@pytest.fixture(scope="module")
def questions() -> dict[str, list[Question]]:
    return {name: suite.generate(50, 11) for name, suite in SUITES.items()}


# --------------------------------------------------------------------------- generic


def test_registry() -> None:
    assert {"zoom_detail", "python_count", "control_shapes"} <= set(SUITES)
    assert set(SUITES) == {*BENCHMARK_SUITES, "control_shapes"}
    assert list(MIRRORS) == list(BENCHMARK_SUITES) and len(set(MIRRORS.values())) == 9
    assert list(MIRRORS.values()) == [  # the paper's table: reasoning, perception, search
        "MathVision",
        "DynaMath",
        "Math-VR",
        "V*",
        "VisualProbe",
        "HR-Bench-4K",
        "HR-Bench-8K",
        "HR-MMSearch",
        "MMSearch",
    ]
    tools = {name: SUITES[name].tool for name in BENCHMARK_SUITES}
    assert list(tools.values()) == ["python"] * 3 + ["image_zoom_in"] * 4 + ["search"] * 2
    for name, suite in SUITES.items():
        assert get_suite(name) is suite and suite.name == name and suite.description
    with pytest.raises(ValueError, match="zoom_detail") as err:
        get_suite("nope")
    assert isinstance(err.value, KeyError) and isinstance(err.value, UnknownSuiteError)
    assert "nope" in str(err.value)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_deterministic_and_prefix_stable(name: str) -> None:
    suite = SUITES[name]
    a, b, short = suite.generate(6, 3), suite.generate(6, 3), suite.generate(2, 3)
    for qa, qb in zip(a, b, strict=True):
        assert qa == qb and qa.meta == qb.meta
        assert [i.tobytes() for i in qa.images] == [i.tobytes() for i in qb.images]
    for qa, qs in zip(a[:2], short, strict=True):
        assert qa == qs and qa.images[0].tobytes() == qs.images[0].tobytes()
    other = suite.generate(6, 4)
    assert [q.images[0].tobytes() for q in a] != [q.images[0].tobytes() for q in other]
    assert suite.generate(0, 3) == []
    with pytest.raises(ValueError):
        suite.generate(-1, 3)


def test_question_ids_unique() -> None:
    ids = [q.question_id for suite in SUITES.values() for seed in (0, 1) for q in suite.generate(40, seed)]
    assert len(ids) == len(set(ids))
    assert SUITES["zoom_detail"].generate(3, 5)[2].question_id == "zoom_detail-5-2"


@pytest.mark.parametrize("name", sorted(SUITES))
def test_question_fields(name: str, questions: dict[str, list[Question]]) -> None:
    suite = SUITES[name]
    for q in questions[name]:
        assert q.suite == name and q.tool == suite.tool
        assert q.images and all(i.mode == "RGB" and i.width <= 1024 and i.height <= 1024 for i in q.images)
        json.dumps(q.meta)  # JSON-serialisable
        hash(q)
        if q.answer_type == "choice":
            assert q.choices and q.answer in q.choices and len(set(q.choices)) == len(q.choices)
            assert all(f"({chr(65 + i)}) {c}" in q.text for i, c in enumerate(q.choices))
        assert "Answer with" in q.text


@pytest.mark.parametrize("name", sorted(SUITES))
def test_generation_is_fast(name: str) -> None:
    start = time.perf_counter()
    SUITES[name].generate(20, 99)
    assert (time.perf_counter() - start) / 20 < 0.020


# --------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("name", sorted(SUITES))
def test_oracle_is_correct_and_well_formed(name: str, questions: dict[str, list[Question]]) -> None:
    suite = SUITES[name]
    for i, q in enumerate(questions[name]):
        turns = suite.oracle(q, random.Random(i))
        *calls, final = turns
        assert ANSWER_TURN.match(final), final
        assert "<|im_end|>" not in "".join(turns)
        assert suite.verify(q, final) == 1.0
        assert suite.verify(q, "".join(turns)) == 1.0
        if suite.tool is None:
            assert calls == []
        else:
            assert len(calls) >= 1
            assert all(parse_call(c)["name"] == suite.tool for c in calls)
        assert suite.oracle(q) == suite.oracle(q), "the default rng is per question, so reproducible"


@pytest.mark.parametrize("name", sorted(SUITES))
def test_oracle_thinking_is_short_and_regular(name: str, questions: dict[str, list[Question]]) -> None:
    """One template per turn (a tiny policy learns a regular format); what varies between questions is the
    content (where, which colour, the values), and each thinking is a sentence or two."""
    suite = SUITES[name]
    for q in questions[name][:3]:
        thoughts = {suite.oracle(q, random.Random(s))[0].split("</think>")[0] for s in range(20)}
        assert len(thoughts) == 1
        assert all(len(turn.split("</think>")[0]) <= 140 for turn in suite.oracle(q))
    firsts = {suite.oracle(q)[0].split("</think>")[0] for q in questions[name]}
    assert len(firsts) >= 2 or name in ("python_count", "dyna_chart", "search_entity")  # content varies


@pytest.mark.parametrize("name", sorted(SUITES))
def test_no_tool_oracle(name: str, questions: dict[str, list[Question]]) -> None:
    suite = SUITES[name]
    scores = []
    for i, q in enumerate(questions[name]):
        turns = suite.no_tool_oracle(q, random.Random(i))
        assert len(turns) == 1 and ANSWER_TURN.match(turns[0]) and "<tool_call>" not in turns[0]
        assert extract_answer(turns[0]) is not None
        scores.append(suite.verify(q, turns[0]))
    if suite.tool is None or suite.tool_optional:
        assert all(s == 1.0 for s in scores)
    else:
        assert 0 < statistics.mean(scores) < 0.6  # a guess: sometimes right, mostly not


def test_existing_questions_are_unchanged() -> None:
    """New suites must not shift the old ones: the first questions of seed 0 are frozen (answers, images)."""
    for name, (answers, digest) in FROZEN.items():
        qs = SUITES[name].generate(4, 0)
        assert [q.answer for q in qs] == answers and [q.question_id for q in qs][-1] == f"{name}-0-3"
        assert hashlib.sha256(b"".join(q.images[0].tobytes() for q in qs)).hexdigest()[:16] == digest
    for name in SUITES:
        q = SUITES[name].generate(3, 7)[2]
        again = question_by_id(q.question_id)
        assert again == q and again.images[0].tobytes() == q.images[0].tobytes()


@pytest.mark.parametrize("name", sorted(SUITES))
def test_oracle_tool_calls_run_without_errors(name: str) -> None:
    """The oracle's calls go through a real ToolSession (every tool enabled, the built-in search index)
    without a tool error, and the answer the oracle then gives is right."""
    suite = SUITES[name]
    for i, q in enumerate(suite.generate(2, 71)):
        *calls, final = suite.oracle(q, random.Random(i))
        with ToolSession(list(q.images), tools=TOOL_NAMES, python_timeout_s=10) as session:
            for turn in calls:
                result = session.execute(parse_call_text(turn))
                assert result.error is None, (q.question_id, result.text)
                if suite.tool == "python":
                    assert result.text.strip() == q.answer
                if suite.tool == "search":
                    assert q.answer in result.text
        assert suite.verify(q, final) == 1.0


def test_base_no_tool_oracle_refuses_tool_questions() -> None:
    class Bare(Suite):
        name = "bare"
        description = "test"

        def _make(self, seed: int, index: int) -> Question:
            raise AssertionError("not used")

        def oracle(self, question: Question, rng: random.Random | None = None) -> list[str]:
            return ["<think>x</think>\n<answer>\\boxed{1}</answer>"]

    needs_tool = Question("bare-0-0", "bare", "?", (Image.new("RGB", (8, 8)),), "1", "numeric", tool="python")
    with pytest.raises(NotImplementedError):
        Bare().no_tool_oracle(needs_tool)
    control = Question("bare-0-1", "bare", "?", (Image.new("RGB", (8, 8)),), "1", "numeric")
    assert Bare().no_tool_oracle(control) == Bare().oracle(control)


# --------------------------------------------------------------------------- zoom_detail


def test_zoom_detail_needs_the_zoom() -> None:
    """The mark's colour shows nowhere in the model's view of the image, but clearly in the oracle's crop."""
    suite = SUITES["zoom_detail"]
    for q in suite.generate(30, 21):
        img, colour = q.images[0], tuple(q.meta["mark_rgb"])
        for view in model_views(img):
            assert closest(view, colour) > TOL, (q.question_id, view.size)
        # the frame itself is visible at low resolution: dark pixels where its border is
        view = model_views(img)[0]
        sx, sy = view.width / img.width, view.height / img.height
        fx0, fy0, fx1, fy1 = q.meta["frame_px"]
        frame = (math.floor(fx0 * sx), math.floor(fy0 * sy), math.ceil(fx1 * sx), math.ceil(fy1 * sy))
        border = view.crop(frame)
        assert min(sum(p) / 3 for p in border.get_flattened_data()) < 80
        # every oracle crop shows the mark's colour and no other candidate colour
        for seed in range(3):
            bbox = parse_call(suite.oracle(q, random.Random(seed))[0])["arguments"]["bbox_2d"]
            crop_view = model_views(zoom(img, bbox))[0]
            assert closest(crop_view, colour) < TOL, (q.question_id, bbox)
            for name, other in COLOURS.items():
                if name != q.answer:
                    assert closest(crop_view, other) > TOL, (q.question_id, name)


def test_zoom_detail_low_resolution_tint_does_not_give_the_answer_away() -> None:
    """An attack on the low-resolution view: read the most off-colour pixel inside the frame.

    The mottled inside of the frame hides the mark's tint, so this does little better than chance (1/4).
    """
    suite, hits, n = SUITES["zoom_detail"], 0, 100
    for q in suite.generate(n, 31):
        img = q.images[0]
        view = model_views(img)[0]
        sx, sy = view.width / img.width, view.height / img.height
        fx0, fy0, fx1, fy1 = q.meta["frame_px"]
        b = 13  # the thickest border
        inner = view.crop(
            (math.ceil((fx0 + b) * sx), math.ceil((fy0 + b) * sy), int((fx1 - b) * sx), int((fy1 - b) * sy))
        )
        pixels = list(inner.get_flattened_data())
        median = [statistics.median(p[k] for p in pixels) for k in range(3)]
        outlier = max(pixels, key=lambda p: math.dist(p, median))
        deviation = [outlier[k] - median[k] for k in range(3)]

        def cosine(c: tuple[int, int, int], dev: list[float] = deviation, med: list[float] = median) -> float:
            d = [c[k] - med[k] for k in range(3)]
            return sum(a * b for a, b in zip(d, dev, strict=True)) / (
                math.hypot(*d) * math.hypot(*dev) + 1e-9
            )

        hits += max(q.choices or (), key=lambda c: cosine(COLOURS[c])) == q.answer
    assert hits / n < 0.4


def test_zoom_oracle_bbox_contains_frame() -> None:
    q = SUITES["zoom_detail"].generate(1, 0)[0]
    w, h = q.meta["image_size"]
    x0, y0, x1, y1 = parse_call(ZoomDetail().oracle(q)[0])["arguments"]["bbox_2d"]
    args = parse_call(ZoomDetail().oracle(q)[0])["arguments"]
    assert list(args) == ["bbox_2d", "label"] and args["label"] == "frame"  # img_idx defaults to 0
    fx0, fy0, fx1, fy1 = q.meta["frame_px"]
    assert 0 <= x0 < x1 <= 1000 and 0 <= y0 < y1 <= 1000
    assert x0 * w / 1000 <= fx0 and x1 * w / 1000 >= fx1 and y0 * h / 1000 <= fy0 and y1 * h / 1000 >= fy1


# --------------------------------------------------------------------------- python_count


def test_colours_are_separable_per_channel() -> None:
    """The oracle code's per-channel tolerance (40) plus the dots' jitter (8) never mixes two colours."""
    for a, ca in COLOURS.items():
        for b, cb in COLOURS.items():
            if a != b:
                assert max(abs(x - y) for x, y in zip(ca, cb, strict=True)) >= 40 + 8 + 1, (a, b)


def test_python_oracle_code_prints_the_answer() -> None:
    """Run the oracle's code as the sandbox would: ``_pil_images`` preloaded, stdout is the response."""
    suite = SUITES["python_count"]
    qs = suite.generate(20, 41)
    assert {q.meta["kind"] for q in qs} == {"count", "sum", "diff"}
    for i, q in enumerate(qs):
        code = parse_call(suite.oracle(q, random.Random(i))[0])["arguments"]["code"]
        assert list(parse_call(suite.oracle(q)[0])["arguments"]) == ["code"]
        assert "numpy" not in code and "\n" not in code and len(code) < 60  # one short line
        assert run_code(code, q.images) == q.answer, q.question_id


def test_python_count_answers_follow_the_counts() -> None:
    for q in PythonCount().generate(40, 42):
        counts, targets, kind = q.meta["counts"], q.meta["targets"], q.meta["kind"]
        assert 15 <= q.meta["n_dots"] <= 40 and sum(counts.values()) == q.meta["n_dots"]
        first = counts[targets[0]]
        second = counts[targets[-1]]
        expected = {"count": first, "sum": first + second, "diff": first - second}[kind]
        assert q.answer == str(expected) and all(t in q.text for t in targets)


# --------------------------------------------------------------------------- control_shapes


def test_control_shapes_visible_at_low_resolution() -> None:
    """The shape is hundreds of pixels of its colour in the model's view: no tool is needed."""
    for q in ControlShapes().generate(30, 51):
        img = q.images[0]
        colour = COLOURS[q.meta["colour"]]
        view = model_views(img)[0]
        count = sum(math.dist(p, colour) < TOL for p in view.get_flattened_data())
        assert count >= 0.05 * view.width * view.height, q.question_id  # hundreds of pixels
    asked = {q.meta["asked"] for q in ControlShapes().generate(30, 51)}
    assert asked == {"colour", "shape"}


# --------------------------------------------------------------------------- hr_text_4k/8k, visual_probe

PROBES = ["hr_text_4k", "hr_text_8k", "visual_probe"]
CROP_DETAIL_PX = {"hr_text_4k": 9, "hr_text_8k": 4.5, "visual_probe": 7}  # 8k: digits half the 4k's height


def changed(a: Image.Image, b: Image.Image, threshold: int) -> int:
    """How many pixels differ by more than ``threshold`` in some channel."""
    r, g, b_ = ImageChops.difference(a, b).split()
    most = ImageChops.lighter(ImageChops.lighter(r, g), b_)
    return most.point(lambda v: 255 if v > threshold else 0).histogram()[255]


@pytest.mark.parametrize("name", PROBES)
def test_probe_detail_is_invisible_at_low_resolution_and_clear_in_the_oracle_crop(name: str) -> None:
    """The same scene drawn with each option, and without the detail. The detail is at most 2.6 pixels
    tall in the 128×128 views, where the options' renders differ in a handful of pixels: nothing to read.
    In the oracle's crop, seen within the same ≤ 128×128 budget, the detail is several pixels tall
    (``CROP_DETAIL_PX``) and the options' renders differ in many pixels."""
    suite = SUITES[name]
    assert isinstance(suite, RenderedSuite)
    for q in suite.generate(8, 21):
        image = q.images[0]
        renders = {c: suite.render(q.meta, c) for c in q.choices or ()}
        assert renders[q.answer].tobytes() == image.tobytes()
        bbox = parse_call(suite.oracle(q, random.Random(0))[0])["arguments"]["bbox_2d"]
        crop = zoom(image, bbox)
        crop_view = model_views(crop)[0]
        _, y0, _, y1 = ImageChops.difference(image, suite.render(q.meta, "")).getbbox() or (0, 0, 0, 0)
        assert y1 > y0 and (y1 - y0) * crop_view.height / crop.height >= CROP_DETAIL_PX[name], q.question_id
        for view in model_views(image):
            assert (y1 - y0) * view.height / image.height < 2.6, q.question_id
        for option, render in renders.items():
            if option == q.answer:
                continue
            for mine, other in zip(model_views(image), model_views(render), strict=True):
                assert changed(mine, other, 24) <= 8, (q.question_id, option)
            other_view = model_views(zoom(render, bbox))[0]
            assert changed(crop_view, other_view, 24) >= 12, (q.question_id, option)
            assert changed(crop_view, other_view, 60) >= 5, (q.question_id, option)


@pytest.mark.parametrize("name", PROBES)
def test_probe_marker_is_visible_and_the_oracle_crop_holds_only_the_target(name: str) -> None:
    suite = SUITES[name]
    for q in suite.generate(12, 22):
        img = q.images[0]
        w, h = q.meta["image_size"]
        view = model_views(img)[0]
        sx, sy = view.width / w, view.height / h
        if name == "visual_probe":
            marker, colour = q.meta["ring_px"], suite.RING
        else:
            marker, colour = q.meta["target_px"], COLOURS["red"]
        x0, y0, x1, y1 = marker
        region = view.crop((math.floor(x0 * sx), math.floor(y0 * sy), math.ceil(x1 * sx), math.ceil(y1 * sy)))
        assert closest(region, colour) < 70, q.question_id  # the marker shows at low resolution
        for seed in range(3):
            bx0, by0, bx1, by1 = parse_call(suite.oracle(q, random.Random(seed))[0])["arguments"]["bbox_2d"]
            crop = (bx0 * w / 1000 - 1, by0 * h / 1000 - 1, bx1 * w / 1000 + 1, by1 * h / 1000 + 1)
            assert crop[0] <= x0 and crop[1] <= y0 and crop[2] >= x1 and crop[3] >= y1
            if name == "visual_probe":
                others = [
                    (x - r * 1.6, y - r * 1.6, x + r * 1.6, y + r * 1.6) for _, x, y, r in q.meta["specks"]
                ]
            else:
                others = [tuple(p[:4]) for p in q.meta["panels"][1:]]
            assert not any(
                o[0] < crop[2] and crop[0] < o[2] and o[1] < crop[3] and crop[1] < o[3] for o in others
            )
        if (
            name != "visual_probe"
        ):  # the other options are on distractor signs: reading any sign is not enough
            texts = [p[5] for p in q.meta["panels"]]
            assert texts[0] == q.answer and set(q.choices or ()) <= set(texts)


def test_hr_text_8k_detail_is_half_of_4k() -> None:
    qs = {n: SUITES[n].generate(20, 23) for n in PROBES[:2]}
    sizes = {n: statistics.mean(q.meta["font_size"] for q in qs[n]) for n in qs}
    assert 1.7 <= sizes["hr_text_4k"] / sizes["hr_text_8k"] <= 2.3
    assert {q.answer.isdigit() for q in qs["hr_text_4k"]} == {True, False}  # words and numbers
    assert all(q.answer.isdigit() for q in qs["hr_text_8k"])


# --------------------------------------------------------------------------- dyna_chart / math_diagram


def run_code(code: str, images: tuple[Image.Image, ...]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace = {"_pil_images": list(images)}
        exec(PRELOAD, namespace)  # noqa: S102 - the sandbox's documented helpers
        exec(code, namespace)  # noqa: S102 - the oracle's own code
    return out.getvalue().strip()


def test_dyna_chart_oracle_code_reads_the_bars() -> None:
    suite = SUITES["dyna_chart"]
    qs = suite.generate(30, 81)
    assert {q.meta["kind"] for q in qs} == {"range", "sum", "pair"}
    for i, q in enumerate(qs):
        code = parse_call(suite.oracle(q, random.Random(i))[0])["arguments"]["code"]
        assert len(code) < 600 and "numpy" not in code  # short enough to write in one turn
        assert run_code(code, q.images) == q.answer, q.question_id
        v = q.meta["values"]
        expected = {"range": max(v) - min(v), "sum": sum(v)}.get(q.meta["kind"])
        assert expected is None or q.answer == str(expected)
        # also the values themselves: one unit is at most a few pixels in the model's view
        view = model_views(q.images[0])[0]
        unit = (q.images[0].height - 110) // q.meta["ymax"]
        assert unit * view.height / q.images[0].height < 5.5


def test_math_diagram_oracle_code_and_readable_labels() -> None:
    suite = SUITES["math_diagram"]
    qs = suite.generate(24, 82)
    assert {(q.meta["shape"], q.meta["asked"]) for q in qs} == {
        (s, a) for s in ("rectangle", "triangle") for a in ("area", "perimeter")
    }
    for i, q in enumerate(qs):
        code = parse_call(suite.oracle(q, random.Random(i))[0])["arguments"]["code"]
        assert run_code(code, q.images) == q.answer
        sides = q.meta["sides"]
        if q.meta["shape"] == "triangle":
            assert sides[0] ** 2 + sides[1] ** 2 == sides[2] ** 2
        w, h = q.meta["image_size"]
        view = model_views(q.images[0])[0]
        _, top, _, bottom = ImageFont.load_default(size=q.meta["font_size"]).getbbox("0123456789")
        assert (bottom - top) * view.height / h >= 9, q.question_id  # digits ≥ 9 px tall at 128×128
        edge = [p for i, p in enumerate(q.images[0].convert("L").getdata()) if i % w < 2 or i % w >= w - 2]
        assert min(edge) > 150, q.question_id  # no label runs off the left or right edge
    assert MathDiagram.tool_optional and not DynaChart.tool_optional


# --------------------------------------------------------------------------- search_entity / search_fact


def test_search_entity_emblem_is_visible_at_low_resolution() -> None:
    """Every colour of the emblem covers many pixels of the model's view: describing it needs no zoom."""
    suite = SUITES["search_entity"]
    assert isinstance(suite, SearchEntity)
    for q in suite.generate(20, 91):
        entity = suite.entity(q)
        view = model_views(q.images[0])[0]
        pixels = list(view.get_flattened_data())
        for colour in (*entity.colours, entity.symbol_colour):
            assert sum(math.dist(p, COLOURS[colour]) < TOL for p in pixels) >= 40, (q.question_id, colour)
        assert q.answer == entity.fact(q.meta["fact"]) and entity.name not in q.text


def test_search_fact_names_the_entity() -> None:
    suite = SUITES["search_fact"]
    for q in suite.generate(20, 92):
        entity = suite.entity(q)
        assert entity.name in q.text and q.answer_type == "exact" and q.answer == entity.fact(q.meta["fact"])
