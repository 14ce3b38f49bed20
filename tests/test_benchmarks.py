"""Benchmark adapters, F1 scoring and judges: every fixture is generated here in the published format."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from axpo_core import rewards
from axpo_core.envs.suites import Question
from axpo_core.evaluation.benchmarks import (
    BENCHMARKS,
    MAX_IMAGE_FILE_BYTES,
    BenchmarkFormatError,
    UnknownBenchmarkError,
    get_benchmark,
)
from axpo_core.evaluation.judge import LLMJudge, RuleJudge, apply_judge, make_judge, parse_verdict
from axpo_core.evaluation.passk import expected_max_at_k, pass_at_k
from axpo_core.evaluation.runner import benchmark_questions
from axpo_core.rewards import f1_score, match_approx, match_f1, score
from axpo_core.rollout.trajectory import Trajectory
from flows.cli import main

# --------------------------------------------------------------------------------------------- fixtures


def image_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def save_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix in (".jpg", ".jpeg") else "PNG"
    path.write_bytes(image_bytes(colour, size, fmt))


def write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)


RED, GREEN, BLUE = (220, 30, 30), (30, 160, 50), (30, 70, 220)
MATHVISION_ROWS = [
    {"id": "4", "question": "How many digits?\n<image1>", "options": [], "answer": "6", "level": 1},
    {"id": "6", "question": "Which picture?\n<image1>", "options": ["A", "B", "C", "D", "E"], "answer": "D"},
    {"id": "39", "question": "Which colour?", "options": ["red", "blue", "green"], "answer": "A"},
]


def make_mathvision(folder: Path) -> None:
    """GitHub mathllm/MATH-V layout: data/testmini.jsonl + images/<id>.jpg."""
    rows = [
        {**r, "solution": None, "subject": "counting", "image": f"images/{r['id']}.jpg"}
        for r in MATHVISION_ROWS
    ]
    write_jsonl(folder / "data" / "testmini.jsonl", rows)
    for row, colour in zip(rows, (RED, GREEN, BLUE), strict=True):
        save_image(folder / row["image"], colour)


def make_mathvision_parquet(folder: Path) -> None:
    """Hugging Face MathLLMs/MathVision layout: data/testmini-*.parquet with a decoded_image struct."""
    rows = [
        {
            **r,
            "level": 2,
            "image": f"images/{r['id']}.jpg",
            "decoded_image": {"bytes": image_bytes(c), "path": None},
        }
        for r, c in zip(MATHVISION_ROWS, (RED, GREEN, BLUE), strict=True)
    ]
    write_parquet(folder / "data" / "testmini-00000-of-00001-f8ff70fcb2f29b1d.parquet", rows)


def make_dynamath(folder: Path, extra: dict | None = None) -> None:
    """GitHub DynaMath/DynaMath: dataset.json (id -> question) + image/imageN.png."""
    data = {
        "1": {
            "question": "What is the period?",
            "answer": "2.0944",
            "image": "image/image1.png",
            "answer_type": "float",
            "subject": "analytic geometry",
            "level": "high school",
        },
        "5": {
            "question": "Is Dark Magenta greater than Rosy Brown? Choices: (A) yes (B) no",
            "answer": "B",
            "image": "image/image5.png",
            "answer_type": "multiple choice",
            "subject": "statistics",
            "level": "elementary school",
        },
        "2": {
            "question": "Which month is the hottest?",
            "answer": "May",
            "image": "image/image2.png",
            "answer_type": "text",
            "subject": "statistics",
            "level": "elementary school",
        },
        **(extra or {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(data, indent=4))
    for key in data:
        save_image(folder / "image" / f"image{key}.png", RED)


def dynamath_entry(question: str, answer: str, answer_type: str, key: str) -> dict:
    return {
        "question": question,
        "answer": answer,
        "image": f"image/image{key}.png",
        "answer_type": answer_type,
        "subject": "algebra",
        "level": "high school",
    }


# Entries as published in DynaMath's dataset.json (2024-11), each a form the first adapter rejected or
# misread: answer types "single answer" and "int", and multiple-choice options without "Choices: (A)".
DYNAMATH_PUBLISHED = {
    "465": dynamath_entry(
        "The results are displayed in the Venn diagram below. How many more customers prefer only "
        "Non-Organic products than only Organic ones?",
        "49",
        "single answer",
        "465",
    ),
    "477": dynamath_entry(
        "Matrix A is given in the image. What is the sum of all elements in the matrix A?",
        "-15.700000000000001",
        "int",
        "477",
    ),
    "245": dynamath_entry(
        "Which data structure is the following graph shown?  (A) heap (B) stack (C) binary tree "
        "(D) planted tree ",
        "C",
        "multiple choice",
        "245",
    ),
    "298": dynamath_entry(
        "Which differential equation generates the slope field? (A) -2x + -2y (B) -2x - 2y (C) -2y - 2x "
        "(D) -2x (E) -2x - 2y ",
        "E",
        "multiple choice",
        "298",
    ),
    "366": dynamath_entry(
        "Which group has the largest Y value?\nA. Group 1\nB. Group 2\nC. Group 3",
        "A",
        "multiple choice",
        "366",
    ),
    "468": dynamath_entry(
        "What is the intersection of sets A and B?\nA: [2, 8, 10]\nB: [1, 2, 8]\nC: [1, 11]\nD: [3, 4, 6]\n",
        "D",
        "multiple choice",
        "468",
    ),
    "127": dynamath_entry(
        "We turn the sheet clockwise through 90°. Which figure can we now see? choice: (A) (B) (C) (D)",
        "A",
        "multiple choice",
        "127",
    ),
    "139": dynamath_entry(
        "For which point will you obtain the smallest quotient?  choice: (A) A (B) B (C) C (D)",
        "B",
        "multiple choice",
        "139",
    ),
}


def make_mathvr(folder: Path) -> None:
    """gogoduan/Math-VR-bench: data/test-*.parquet with <imageN> placeholders and image1..image8 structs."""
    base = {"number_of_answers": 1, "total_score": 4, "scoring_points": "p1", "scores": "4"}
    rows = [
        {
            "id": "0",
            "question": "In <image1> the triangle ABC is right-angled. Find x.",
            "category": "multimodal",
            "answers": ["3"],
            "image1": {"bytes": image_bytes(GREEN), "path": "0.png"},
            "image2": None,
            **base,
        },
        {
            "id": "1",
            "question": "Compute 3 + 4.",
            "category": "text",
            "answers": ["7"],
            "image1": None,
            "image2": None,
            **base,
        },
    ]
    write_parquet(folder / "data" / "test-00000-of-00001.parquet", rows)


def make_vstar(folder: Path, published_order: bool = True, labels: bool = True) -> None:
    """craigwu/vstar_bench: <category>/<stem>.jpg + <stem>.json (options[0] is correct) and
    test_questions.jsonl, the published option order in the LLaVA question format with a label."""
    save_image(folder / "direct_attributes" / "sa_1.jpg", RED, (64, 48))
    (folder / "direct_attributes" / "sa_1.json").write_text(
        json.dumps(
            {
                "target_object": ["glove"],
                "bbox": [[1, 2, 3, 4]],
                "question": "What is the colour of the glove?",
                "options": ["red", "blue", "green", "white"],
            }
        )
    )
    save_image(folder / "relative_position" / "sa_2.png", BLUE)
    (folder / "relative_position" / "sa_2.json").write_text(
        json.dumps(
            {
                "target_object": ["cup", "dog"],
                "bbox": [[0, 0, 1, 1], [2, 2, 3, 3]],
                "question": "Is the cup on the left or right of the dog?",
                "options": ["left", "right"],
            }
        )
    )
    if not published_order:
        return
    trailer = "\nAnswer with the option's letter from the given choices directly."
    rows = [
        {
            "image": "direct_attributes/sa_1.jpg",
            "text": "What is the colour of the glove?\n(A) blue\n(B) white\n(C) red\n(D) green" + trailer,
            "category": "direct_attributes",
            "question_id": 0,
            "label": "C",
        },
        {
            "image": "relative_position/sa_2.png",
            "text": "Is the cup on the left or right of the dog?\n(A) left\n(B) right" + trailer,
            "category": "relative_position",
            "question_id": 1,
            "label": "A",
        },
    ]
    if not labels:
        rows = [{k: v for k, v in r.items() if k != "label"} for r in rows]
    write_jsonl(folder / "test_questions.jsonl", rows)


def make_visualprobe(folder: Path) -> None:
    """Mini-o3/VisualProbe_Hard: val.json (list) with images relative to the folder or its parent."""
    save_image(folder / "data" / "1.png", RED, (80, 60))
    save_image(folder / "data" / "2.png", BLUE)
    rows = [
        {
            "doc_id": 101,
            "images": [f"{folder.name}/data/1.png"],
            "problem": "<image>\nWhat is written on the sign?",
            "solution": "STOP",
        },
        {"images": ["data/2.png"], "problem": "Which animal is there? (A) cat (B) dog", "solution": "B"},
    ]
    (folder / "val.json").write_text(json.dumps(rows))


HR_HEADER = ["index", "question", "answer", "category", "A", "B", "C", "D", "image", "cycle_category"]


def make_hrbench(folder: Path, name: str = "hr_bench_4k.tsv") -> None:
    """DreamMr/HR-Bench (VLMEvalKit TSV): base64 image; a short image cell is another row's index."""
    folder.mkdir(parents=True, exist_ok=True)
    b64 = base64.b64encode(image_bytes(GREEN, (96, 64))).decode()
    rows = [
        ["0", "What colour is the car?", "B", "single", "red", "green", "blue", "white", b64, "0"],
        ["1", "What colour is the car?", "D", "single", "green", "blue", "white", "red", "0", "1"],
        ["2", "How many trees?", "C", "cross", "1", "2", "3", "4", b64, "0"],
    ]
    write_tsv(folder / name, HR_HEADER, rows)


def make_hrmmsearch(folder: Path) -> None:
    """sensenova/HR-MMSearch: data/train-*.parquet with query_image structs."""
    rows = [
        {
            "sample_id": "hr_0",
            "query": "Who designed the building in the picture?",
            "query_image": {"bytes": image_bytes(RED, (120, 90)), "path": "a.jpg"},
            "ground_truth": "Frank Gehry",
            "difficulty": "hard",
            "category": "architecture",
        },
    ]
    write_parquet(folder / "data" / "train-00000-of-00005.parquet", rows)


def make_mmsearch(folder: Path) -> None:
    """CaraJ/MMSearch end2end.parquet: query_image may be null; alternative_gt_answers list."""
    common = {"area": "news", "subfield": "sports", "timestamp": "2024-08", "image_search_result": None}
    rows = [
        {
            "sample_id": "news_0",
            "query": "Which team won the 2024 final shown here?",
            "query_image": {"bytes": image_bytes(BLUE), "path": None},
            "gt_requery": "2024 final winner",
            "gt_answer": "Real Madrid",
            "alternative_gt_answers": ["Real Madrid CF"],
            **common,
        },
        {
            "sample_id": "news_1",
            "query": "When was the film released?",
            "query_image": None,
            "gt_requery": "film release date",
            "gt_answer": "March 1, 2024",
            "alternative_gt_answers": [],
            **common,
        },
    ]
    write_parquet(folder / "end2end.parquet", rows)


def boxed(answer: str) -> str:
    return f"<think>...</think>\n<answer>\\boxed{{{answer}}}</answer>"


# name -> (builder, ids, [(question index, correct answer text, wrong answer text, expected answer_type)])
CASES: dict[str, tuple[Callable[[Path], None], list[str], list[tuple[int, str, str, str]]]] = {
    "mathvision": (
        make_mathvision,
        ["mathvision-4", "mathvision-6", "mathvision-39"],
        [(0, "6", "7", "numeric"), (1, "(D)", "C", "choice"), (2, "red", "B", "choice")],
    ),
    "dynamath": (
        make_dynamath,
        ["dynamath-1", "dynamath-5", "dynamath-2"],
        [(0, "2.094", "2.1", "approx"), (1, "no", "A", "choice"), (2, "May", "June", "contains")],
    ),
    "mathvr": (make_mathvr, ["mathvr-0", "mathvr-1"], [(0, "3", "4", "numeric"), (1, "7.0", "8", "numeric")]),
    "vstar": (
        make_vstar,
        ["vstar-direct_attributes-sa_1", "vstar-relative_position-sa_2"],
        [(0, "C", "blue", "choice"), (0, "red", "A", "choice"), (1, "left", "right", "choice")],
    ),
    "visualprobe": (
        make_visualprobe,
        ["visualprobe-101", "visualprobe-1"],
        [(0, "stop", "go", "exact"), (1, "dog", "A", "choice")],
    ),
    "hrbench4k": (
        make_hrbench,
        ["hrbench4k-0", "hrbench4k-1", "hrbench4k-2"],
        [(0, "B", "A", "choice"), (1, "red", "green", "choice"), (2, "C. 3", "4", "choice")],
    ),
    "hrbench8k": (
        lambda f: make_hrbench(f, "hr_bench_8k.tsv"),
        ["hrbench8k-0", "hrbench8k-1", "hrbench8k-2"],
        [(0, "green", "red", "choice")],
    ),
    "hrmmsearch": (make_hrmmsearch, ["hrmmsearch-hr_0"], [(0, "Frank Gehry", "Zaha Hadid", "f1")]),
    "mmsearch": (
        make_mmsearch,
        ["mmsearch-news_0", "mmsearch-news_1"],
        [(0, "Real Madrid CF", "Barcelona", "f1"), (1, "1 March 2024", "2023", "f1")],
    ),
}


# --------------------------------------------------------------------------------------------- loading


def test_registry_has_the_nine_benchmarks_in_three_groups() -> None:
    assert list(BENCHMARKS) == list(CASES)
    groups = {name: b.group for name, b in BENCHMARKS.items()}
    assert [n for n, g in groups.items() if g == "reasoning"] == ["mathvision", "dynamath", "mathvr"]
    assert [n for n, g in groups.items() if g == "search"] == ["hrmmsearch", "mmsearch"]
    assert get_benchmark("vstar").tool_hint == "image_zoom_in"
    with pytest.raises(UnknownBenchmarkError, match="known benchmarks: mathvision"):
        get_benchmark("mathvista")
    with pytest.raises(KeyError):
        get_benchmark("nope")


@pytest.mark.parametrize("name", list(CASES))
def test_loads_published_format_and_scores(name: str, tmp_path: Path) -> None:
    build, ids, checks = CASES[name]
    folder = tmp_path / name
    build(folder)
    questions = get_benchmark(name).load(folder)
    assert [q.question_id for q in questions] == ids
    assert get_benchmark(name).load(folder) == questions  # stable ids and order
    judge = RuleJudge()
    for index, right, wrong, answer_type in checks:
        q = questions[index]
        assert q.suite == name and q.answer_type == answer_type
        assert q.meta["benchmark"] == name and q.tool == get_benchmark(name).tool_hint
        assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im in q.images)
        # the engine's reward and the default judge agree
        assert score(boxed(right), q.answer, q.answer_type, q.choices) == 1.0, (q.text, q.answer, q.choices)
        assert judge.judge(q, boxed(right)) == 1.0
        assert score(boxed(wrong), q.answer, q.answer_type, q.choices) < 0.5
        assert judge.judge(q, "no answer tags at all") == 0.0


def test_limit_keeps_a_stable_prefix(tmp_path: Path) -> None:
    make_hrbench(tmp_path / "hr")
    first_two = get_benchmark("hrbench4k").load(tmp_path / "hr", limit=2)
    assert [q.question_id for q in first_two] == ["hrbench4k-0", "hrbench4k-1"]
    with pytest.raises(ValueError, match="limit"):
        get_benchmark("hrbench4k").load(tmp_path / "hr", limit=0)


def test_mathvision_questions(tmp_path: Path) -> None:
    make_mathvision(tmp_path / "mv")
    free, letters, texts = get_benchmark("mathvision").load(tmp_path / "mv")
    assert free.answer == "6" and free.choices is None and free.images[0].getpixel((0, 0))[0] > 200
    assert letters.choices == ("A", "B", "C", "D", "E") and letters.answer == "D"
    assert "Options: A, B, C, D, E." in letters.text  # letter-only options are not spelled out twice
    assert texts.choices == ("red", "blue", "green") and "(A) red (B) blue (C) green" in texts.text
    assert free.meta["level"] == 1 and free.meta["group"] == "reasoning"


def test_mathvision_five_letter_options_and_official_equality(tmp_path: Path) -> None:
    """Label-only options ("(A)".."(E)", "A)".."E)": 7 of the 304 published testmini rows) stay as
    published, and the letter or the published option text scores, as MATH-V's `evaluate` does."""
    rows = [
        {"id": "6", "question": "Which one?", "options": ["(A)", "(B)", "(C)", "(D)", "(E)"], "answer": "D"},
        {"id": "7", "question": "Who?", "options": ["A", "C", "C", "D", "it depends"], "answer": "C"},
        {"id": "8", "question": "Length?", "options": [], "answer": "\\frac{7}{3}"},
        {"id": "9", "question": "Point?", "options": [], "answer": "(1,2)"},
        {"id": "10", "question": "Which net?", "options": ["A)", "B)", "C)", "D)", "E)"], "answer": "B"},
    ]
    write_jsonl(
        tmp_path / "mv" / "data" / "testmini.jsonl", [{**r, "image": f"images/{r['id']}.jpg"} for r in rows]
    )
    for r in rows:
        save_image(tmp_path / "mv" / "images" / f"{r['id']}.jpg", RED)
    letters, repeated, fraction, point, labels = get_benchmark("mathvision").load(tmp_path / "mv")
    assert letters.choices == ("(A)", "(B)", "(C)", "(D)", "(E)") and "(A) (A)" not in letters.text
    assert labels.choices == ("A)", "B)", "C)", "D)", "E)") and labels.answer == "B"
    assert "Options: A, B, C, D, E." in letters.text and "Options: A, B, C, D, E." in labels.text
    mv = get_benchmark("mathvision")
    for answer in ("D", "(D)", "D)", "d"):
        assert mv.score(letters, boxed(answer)) == 1.0, answer
    assert mv.score(letters, boxed("E")) == 0.0 and mv.score(letters, boxed("(E)")) == 0.0
    assert mv.score(labels, boxed("B)")) == 1.0 and mv.score(labels, boxed("B")) == 1.0
    assert mv.score(labels, boxed("C)")) == 0.0
    # option B's text is "C": the letter C names option C, the gold
    assert mv.score(repeated, boxed("C")) == 1.0 and mv.score(repeated, boxed("B")) == 0.0
    # is_equal: values compared to 2 decimals, tuples element by element
    assert mv.score(fraction, boxed("2.33")) == 1.0 and mv.score(fraction, boxed("2.3")) == 0.0
    assert mv.score(point, boxed("(1, 2.001)")) == 1.0 and mv.score(point, boxed("(2,1)")) == 0.0


def test_mathvision_parquet_layout_matches_jsonl(tmp_path: Path) -> None:
    make_mathvision(tmp_path / "jsonl")
    make_mathvision_parquet(tmp_path / "parquet")
    from_jsonl = get_benchmark("mathvision").load(tmp_path / "jsonl")
    from_parquet = get_benchmark("mathvision").load(tmp_path / "parquet")
    assert from_parquet == from_jsonl
    assert [q.images[0].size for q in from_parquet] == [(40, 30)] * 3


def test_dynamath_parses_inline_choices_and_hints(tmp_path: Path) -> None:
    make_dynamath(tmp_path / "dm")
    floating, choice, text = get_benchmark("dynamath").load(tmp_path / "dm")
    assert choice.choices == ("yes", "no") and choice.answer == "B"
    assert "three decimal places" in floating.text and choice.text.endswith(
        "Answer with the option's letter."
    )
    assert score(boxed("2.0954"), floating.answer, "approx") == 1.0  # |diff| = 0.001: DynaMath's tolerance
    assert score(boxed("2.0955"), floating.answer, "approx") == 0.0
    assert text.meta["dynamath_type"] == "text" and text.answer_type == "contains"


def test_dynamath_published_answer_types_and_option_forms(tmp_path: Path) -> None:
    make_dynamath(tmp_path / "dm", DYNAMATH_PUBLISHED)
    questions = {
        q.question_id.removeprefix("dynamath-"): q for q in get_benchmark("dynamath").load(tmp_path / "dm")
    }
    assert len(questions) == 3 + len(DYNAMATH_PUBLISHED)  # nothing rejected
    single, integer = questions["465"], questions["477"]
    assert single.answer_type == integer.answer_type == "contains"
    assert single.meta["dynamath_type"] == "single answer" and integer.meta["dynamath_type"] == "int"
    assert questions["245"].choices == ("heap", "stack", "binary tree", "planted tree")
    assert questions["298"].choices[4] == "-2x - 2y" and questions["298"].answer == "E"
    assert questions["366"].choices == ("Group 1", "Group 2", "Group 3")
    assert questions["468"].choices == ("[2, 8, 10]", "[1, 2, 8]", "[1, 11]", "[3, 4, 6]")
    assert questions["127"].choices == ("A", "B", "C", "D")  # options drawn in the picture
    assert questions["139"].choices == ("A", "B", "C", "D")  # "(D)" without text is its letter
    dm = get_benchmark("dynamath")
    # the official rule for every type but float and multiple choice: the gold is a substring of the answer
    assert dm.score(single, boxed("49")) == 1.0 and dm.score(single, boxed("There are 49 more")) == 1.0
    assert dm.score(single, boxed("4")) == 0.0  # the gold "49" is not in "4" (only the reverse)
    assert dm.score(questions["2"], boxed("May")) == 1.0 and dm.score(questions["2"], boxed("may")) == 0.0
    assert dm.score(integer, boxed("-15.7")) == 0.0  # the published float artefact, as the official rule
    assert (
        dm.score(questions["245"], boxed("C")) == 1.0
        and dm.score(questions["245"], boxed("binary tree")) == 1.0
    )
    assert dm.score(questions["468"], boxed("D")) == 1.0 and dm.score(questions["468"], boxed("A")) == 0.0
    # "-2x - 2y" is both B and E: a letter decides; the text names both options (the gold among them)
    assert dm.score(questions["298"], boxed("E")) == 1.0 and dm.score(questions["298"], boxed("B")) == 0.0
    # float answers are read from their first token, pi multiplying, as DynaMath's script reads them
    assert dm.score(questions["1"], boxed("2.094 radians")) == 1.0
    assert dm.score(questions["1"], boxed("\\frac{2}{3}\u03c0")) == 1.0  # (2/3) * pi = 2.0944
    assert dm.score(questions["1"], boxed("0.6667\u03c0")) == 1.0


def test_dynamath_multiple_choice_without_options_names_the_field(tmp_path: Path) -> None:
    broken = {"9": dynamath_entry("Which one is larger?", "A", "multiple choice", "9")}
    make_dynamath(tmp_path / "dm", broken)
    expect_error(
        lambda: get_benchmark("dynamath").load(tmp_path / "dm"), "dataset.json: entry '9'", "'question'"
    )
    make_dynamath(tmp_path / "dm2", {"9": dynamath_entry("Pick: (A) x (B) y", "C", "multiple choice", "9")})
    expect_error(
        lambda: get_benchmark("dynamath").load(tmp_path / "dm2"), "entry '9'", "field 'answer'", "'C'"
    )


def test_mathvr_images_follow_placeholders(tmp_path: Path) -> None:
    make_mathvr(tmp_path / "vr")
    multimodal, text_only = get_benchmark("mathvr").load(tmp_path / "vr")
    assert len(multimodal.images) == 1 and "<image1>" not in multimodal.text
    assert multimodal.text.startswith("In the triangle") or "triangle ABC" in multimodal.text
    assert text_only.images == () and text_only.meta["category"] == "text"
    assert multimodal.meta["needs_judge"] is False


def test_vstar_uses_the_published_option_order(tmp_path: Path) -> None:
    make_vstar(tmp_path / "vs")
    attr, rel = get_benchmark("vstar").load(tmp_path / "vs")
    assert attr.choices == ("blue", "white", "red", "green") and attr.answer == "C"
    assert attr.text.startswith("What is the colour of the glove?\nOptions: (A) blue (B) white (C) red")
    assert "Answer with the option's letter from the given choices directly" not in attr.text
    assert attr.images[0].size == (64, 48) and attr.meta["option_order"] == "published"
    assert (
        rel.choices == ("left", "right") and rel.answer == "A" and rel.meta["category"] == "relative_position"
    )
    vstar = get_benchmark("vstar")
    assert vstar.score(attr, boxed("C")) == 1.0 and vstar.score(attr, boxed("red")) == 1.0
    assert vstar.score(attr, boxed("A")) == 0.0
    # copies of test_questions.jsonl from before the labels: the gold is the annotation's first option
    make_vstar(tmp_path / "old", labels=False)
    assert [q.answer for q in get_benchmark("vstar").load(tmp_path / "old")] == ["C", "A"]


def test_vstar_without_test_questions_shuffles_stably(tmp_path: Path) -> None:
    make_vstar(tmp_path / "vs", published_order=False)
    attr, rel = get_benchmark("vstar").load(tmp_path / "vs")
    assert sorted(attr.choices) == ["blue", "green", "red", "white"]
    assert attr.choices[ord(attr.answer) - ord("A")] == "red"
    assert attr.meta["option_order"].startswith("shuffled") and rel.meta["target_object"] == ["cup", "dog"]
    assert score(boxed(attr.answer), attr.answer, "choice", attr.choices) == 1.0
    assert get_benchmark("vstar").load(tmp_path / "vs") == [attr, rel]


def test_visualprobe_resolves_images_against_parent(tmp_path: Path) -> None:
    folder = tmp_path / "VisualProbe_Hard"
    make_visualprobe(folder)
    sign, animal = get_benchmark("visualprobe").load(folder)
    assert sign.images[0].size == (80, 60) and "<image>" not in sign.text
    assert animal.choices == ("cat", "dog")


def test_hrbench_options_that_differ_by_a_trailing_period(tmp_path: Path) -> None:
    """A published HR-Bench shape: two options differ only by a trailing period. Normalising makes them
    equal, so only the exact text (or the letter) names one of them; the right text scores 1, the wrong 0."""
    folder = tmp_path / "hr"
    folder.mkdir()
    b64 = base64.b64encode(image_bytes(GREEN, (96, 64))).decode()
    write_tsv(
        folder / "hr_bench_4k.tsv",
        HR_HEADER,
        [
            [
                "0",
                "What does the sign say?",
                "A",
                "single",
                "ELEVATE",
                "ELEVATE.",
                "ELEVATOR",
                "LEVEL",
                b64,
                "0",
            ]
        ],
    )
    (q,) = get_benchmark("hrbench4k").load(folder)
    hr = get_benchmark("hrbench4k")
    assert hr.score(q, boxed("ELEVATE")) == 1.0 and hr.score(q, boxed("A")) == 1.0
    assert hr.score(q, boxed("ELEVATE.")) == 0.0 and hr.score(q, boxed("B")) == 0.0
    assert hr.score(q, boxed("elevate")) == 0.0  # names both options after normalising: neither
    assert hr.score(q, boxed("elevator")) == 0.0 and hr.score(q, boxed("level")) == 0.0
    assert score(boxed("ELEVATE"), q.answer, "choice", q.choices) == 1.0  # the engine's reward agrees
    assert score(boxed("ELEVATE."), q.answer, "choice", q.choices) == 0.0


def test_hrbench_references_and_options(tmp_path: Path) -> None:
    make_hrbench(tmp_path / "hr")
    first, second, third = get_benchmark("hrbench4k").load(tmp_path / "hr")
    assert second.images[0] is first.images[0]  # "0" in the image cell = row 0's image, decoded once
    assert first.images[0].size == (96, 64)
    assert first.choices == ("red", "green", "blue", "white") and first.answer == "B"
    assert "(A) red (B) green (C) blue (D) white" in first.text
    assert third.meta == {
        "benchmark": "hrbench4k",
        "group": "perception",
        "category": "cross",
        "cycle_category": "0",
    }


def test_mathvr_plain_string_answers(tmp_path: Path) -> None:
    make_mathvr(tmp_path / "vr")
    file = tmp_path / "vr" / "data" / "test-00000-of-00001.parquet"
    rows = pq.read_table(file).to_pylist()
    rows = [{**r, "answers": json.dumps(r["answers"])} for r in rows]  # a string column
    rows[0]["answers"], rows[1]["answers"] = "68", "x=1, y=2"
    write_parquet(file, rows)
    number, system = get_benchmark("mathvr").load(tmp_path / "vr")
    assert number.answer == "68" and system.answer == "x=1, y=2" and not system.meta["needs_judge"]
    vr = get_benchmark("mathvr")
    assert vr.score(number, boxed("68.0")) == 1.0 and vr.score(system, boxed("x=1, y=2")) == 1.0
    rows[0]["answers"] = '["3", "4"]'  # JSON-encoded lists still read as lists
    write_parquet(file, rows)
    assert get_benchmark("mathvr").load(tmp_path / "vr")[0].answer == "3; 4"


def test_validate_counts_without_keeping_images(tmp_path: Path) -> None:
    for name, (build, ids, _) in CASES.items():
        build(tmp_path / name)
        assert get_benchmark(name).validate(tmp_path / name) == len(ids), name
    path = tmp_path / "hrbench4k" / "hr_bench_4k.tsv"
    rows = list(csv.reader(path.open(newline=""), delimiter="\t"))
    rows[3][8] = base64.b64encode(b"not an image" * 9).decode()
    write_tsv(path, rows[0], rows[1:])
    expect_error(
        lambda: get_benchmark("hrbench4k").validate(tmp_path / "hrbench4k"), "line 4", "cannot decode"
    )


def test_rule_judge_uses_the_benchmark_scorer(tmp_path: Path) -> None:
    make_dynamath(tmp_path / "dm", DYNAMATH_PUBLISHED)
    single = next(
        q for q in get_benchmark("dynamath").load(tmp_path / "dm") if q.question_id == "dynamath-465"
    )
    assert RuleJudge().judge(single, boxed("49 customers")) == 1.0
    assert (
        score(boxed("49 customers"), single.answer, single.answer_type) == 1.0
    )  # "contains" in the engine too
    synthetic = Question("control_shapes-0-0", "control_shapes", "?", (), "red", "choice", ("red", "blue"))
    assert RuleJudge().judge(synthetic, boxed("A")) == 1.0  # not a benchmark: the engine's reward


def test_mmsearch_alternatives_and_text_only_queries(tmp_path: Path) -> None:
    make_mmsearch(tmp_path / "ms")
    with_image, text_only = get_benchmark("mmsearch").load(tmp_path / "ms")
    assert with_image.choices == ("Real Madrid CF",) and len(with_image.images) == 1
    assert text_only.images == () and text_only.choices is None
    assert text_only.meta["gt_requery"] == "film release date"
    rows = pq.read_table(tmp_path / "ms" / "end2end.parquet").to_pylist()
    rows[1]["alternative_gt_answers"] = ["", "1 March 2024"]  # blank alternatives are dropped, not fatal
    write_parquet(tmp_path / "ms" / "end2end.parquet", rows)
    assert get_benchmark("mmsearch").load(tmp_path / "ms")[1].choices == ("1 March 2024",)
    partial = score(boxed("Madrid"), with_image.answer, "f1", with_image.choices)
    assert partial == pytest.approx(
        2 * (1 / 1) * (1 / 2) / (1 + 1 / 2)
    )  # best of the gold and the alternative


# --------------------------------------------------------------------------------------------- malformed


def expect_error(call: Callable[[], object], *fragments: str) -> BenchmarkFormatError:
    with pytest.raises(BenchmarkFormatError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_missing_folder_and_missing_file(tmp_path: Path) -> None:
    for name in BENCHMARKS:
        expect_error(
            lambda n=name: get_benchmark(n).load(tmp_path / "absent"), str(tmp_path / "absent"), "not found"
        )
    (tmp_path / "empty").mkdir()
    expect_error(lambda: get_benchmark("mathvision").load(tmp_path / "empty"), "data/testmini.jsonl")
    expect_error(lambda: get_benchmark("hrbench8k").load(tmp_path / "empty"), "hr_bench_8k.tsv")
    expect_error(lambda: get_benchmark("mmsearch").load(tmp_path / "empty"), "end2end.parquet")
    expect_error(lambda: get_benchmark("vstar").load(tmp_path / "empty"), "direct_attributes")
    make_hrbench(tmp_path / "hr4k")  # a 4K file is never taken for the 8K benchmark
    expect_error(lambda: get_benchmark("hrbench8k").load(tmp_path / "hr4k"), "hr_bench_8k.tsv", "not found")


def test_bad_json_line(tmp_path: Path) -> None:
    make_mathvision(tmp_path / "mv")
    path = tmp_path / "mv" / "data" / "testmini.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], '{"id": "6", "question": ', lines[2]]) + "\n")
    err = expect_error(
        lambda: get_benchmark("mathvision").load(tmp_path / "mv"), "testmini.jsonl: line 2", "JSON"
    )
    assert err.path == path and err.row == "line 2"


def test_missing_field_names_the_row(tmp_path: Path) -> None:
    make_mathvision(tmp_path / "mv")
    path = tmp_path / "mv" / "data" / "testmini.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    del rows[2]["answer"]
    write_jsonl(path, rows)
    expect_error(lambda: get_benchmark("mathvision").load(tmp_path / "mv"), "line 3", "'answer'")
    make_dynamath(tmp_path / "dm")
    data = json.loads((tmp_path / "dm" / "dataset.json").read_text())
    del data["5"]["image"]
    (tmp_path / "dm" / "dataset.json").write_text(json.dumps(data))
    expect_error(
        lambda: get_benchmark("dynamath").load(tmp_path / "dm"), "dataset.json: entry '5'", "'image'"
    )
    make_visualprobe(tmp_path / "vp")
    rows = json.loads((tmp_path / "vp" / "val.json").read_text())
    del rows[1]["solution"]
    (tmp_path / "vp" / "val.json").write_text(json.dumps(rows))
    expect_error(lambda: get_benchmark("visualprobe").load(tmp_path / "vp"), "val.json: item 1", "'solution'")


def test_bad_json_file(tmp_path: Path) -> None:
    make_dynamath(tmp_path / "dm")
    (tmp_path / "dm" / "dataset.json").write_text('{\n  "1": {"question": "x",\n}')
    expect_error(
        lambda: get_benchmark("dynamath").load(tmp_path / "dm"), "dataset.json: line 3", "invalid JSON"
    )


def test_missing_image_file(tmp_path: Path) -> None:
    make_mathvision(tmp_path / "mv")
    (tmp_path / "mv" / "images" / "6.jpg").unlink()
    expect_error(
        lambda: get_benchmark("mathvision").load(tmp_path / "mv"), "line 2", "'images/6.jpg' not found"
    )
    make_vstar(tmp_path / "vs")
    (tmp_path / "vs" / "relative_position" / "sa_2.png").unlink()
    expect_error(
        lambda: get_benchmark("vstar").load(tmp_path / "vs"),
        "test_questions.jsonl: line 2",
        "'relative_position/sa_2.png' not found",
    )
    (tmp_path / "vs" / "test_questions.jsonl").unlink()  # the annotation folders alone
    expect_error(lambda: get_benchmark("vstar").load(tmp_path / "vs"), "sa_2.json", "no image sa_2.*")


def test_missing_column(tmp_path: Path) -> None:
    make_mmsearch(tmp_path / "ms")
    table = pq.read_table(tmp_path / "ms" / "end2end.parquet").drop(["gt_answer"])
    pq.write_table(table, tmp_path / "ms" / "end2end.parquet")
    expect_error(
        lambda: get_benchmark("mmsearch").load(tmp_path / "ms"), "end2end.parquet: header", "'gt_answer'"
    )
    make_hrbench(tmp_path / "hr")
    path = tmp_path / "hr" / "hr_bench_4k.tsv"
    rows = list(csv.reader(path.open(newline=""), delimiter="\t"))
    write_tsv(path, [c for c in rows[0] if c != "answer"], [r[:2] + r[3:] for r in rows[1:]])
    expect_error(
        lambda: get_benchmark("hrbench4k").load(tmp_path / "hr"), "hr_bench_4k.tsv: line 1", "'answer'"
    )


def test_bad_base64_and_bad_image_bytes(tmp_path: Path) -> None:
    make_hrbench(tmp_path / "hr")
    path = tmp_path / "hr" / "hr_bench_4k.tsv"
    rows = list(csv.reader(path.open(newline=""), delimiter="\t"))
    rows[3][8] = "not base64 at all!!" * 10
    write_tsv(path, rows[0], rows[1:])
    expect_error(
        lambda: get_benchmark("hrbench4k").load(tmp_path / "hr"), "hr_bench_4k.tsv: line 4", "base64"
    )
    rows[3][8] = base64.b64encode(b"definitely not an image" * 5).decode()
    write_tsv(path, rows[0], rows[1:])
    expect_error(lambda: get_benchmark("hrbench4k").load(tmp_path / "hr"), "line 4", "cannot decode image")
    make_hrmmsearch(tmp_path / "hm")
    file = tmp_path / "hm" / "data" / "train-00000-of-00005.parquet"
    rows_pq = pq.read_table(file).to_pylist()
    rows_pq[0]["query_image"] = {"bytes": b"garbage", "path": "a.jpg"}
    write_parquet(file, rows_pq)
    expect_error(
        lambda: get_benchmark("hrmmsearch").load(tmp_path / "hm"), "parquet: row 0", "cannot decode image"
    )


def test_decompression_bomb_is_refused_with_the_row(tmp_path: Path) -> None:
    make_hrmmsearch(tmp_path / "hm")
    expect_error(
        lambda: get_benchmark("hrmmsearch").load(tmp_path / "hm", max_image_pixels=1000), "row 0", "refusing"
    )


def test_inconsistent_rows(tmp_path: Path) -> None:
    make_hrbench(tmp_path / "hr")
    path = tmp_path / "hr" / "hr_bench_4k.tsv"
    rows = list(csv.reader(path.open(newline=""), delimiter="\t"))
    rows[2][2] = "E"  # only four options
    write_tsv(path, rows[0], rows[1:])
    expect_error(lambda: get_benchmark("hrbench4k").load(tmp_path / "hr"), "line 3", "'E' is not one of")
    rows[2][2], rows[2][0] = "A", "0"  # duplicate index
    write_tsv(path, rows[0], rows[1:])
    expect_error(lambda: get_benchmark("hrbench4k").load(tmp_path / "hr"), "line 3", "duplicate id '0'")
    rows[2][0] = "1"
    rows[1][8] = "7"  # refers to a row that does not exist
    write_tsv(path, rows[0], rows[1:])
    expect_error(lambda: get_benchmark("hrbench4k").load(tmp_path / "hr"), "line 2", "row index '7'")
    make_mathvr(tmp_path / "vr")
    file = tmp_path / "vr" / "data" / "test-00000-of-00001.parquet"
    rows_pq = pq.read_table(file).to_pylist()
    rows_pq[1]["question"] = "See <image2>."
    write_parquet(file, rows_pq)
    expect_error(lambda: get_benchmark("mathvr").load(tmp_path / "vr"), "row 1", "<image2>")


# --------------------------------------------------------------------------------------------- hostile files
# Issue 27: paths out of the folder, a sparse gigabyte image, and malformed text and parquet.

_RECORDING: list[list[str]] = []  # `opens()`: the list of the block that records


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _RECORDING and isinstance(args[0], (str, bytes, os.PathLike)):
        _RECORDING[-1].append(os.path.realpath(os.fsdecode(args[0])))


@contextmanager
def opens() -> Iterator[list[str]]:
    """The real paths of the files opened inside the block: a real audit hook ("open" events, which
    PIL's and pathlib's opens raise), installed once per process and recording only inside a block."""
    if not getattr(_audit, "installed", False):
        sys.addaudithook(_audit)
        _audit.installed = True  # type: ignore[attr-defined]
    _RECORDING.append([])
    try:
        yield _RECORDING[-1]
    finally:
        _RECORDING.pop()


def _rewrite_json(path: Path, edit: Callable[[Any], None], lines: bool = False) -> None:
    rows = (
        [json.loads(line) for line in path.read_text().splitlines()]
        if lines
        else json.loads(path.read_text())
    )
    edit(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if lines else json.dumps(rows))


def _rewrite_parquet(path: Path, edit: Callable[[list[dict]], None]) -> None:
    rows = pq.read_table(path).to_pylist()
    edit(rows)
    write_parquet(path, rows)


def point_first_image(name: str, folder: Path, rel: str) -> str:
    """Make the first row of benchmark `name` (built in `folder`) name its image `rel`; where the error
    must point: "<file>: <row>"."""

    def cell(rows: list[dict], key: str) -> None:
        rows[0][key] = {"bytes": None, "path": rel}

    if name == "mathvision":
        _rewrite_json(folder / "data" / "testmini.jsonl", lambda rows: rows[0].update(image=rel), lines=True)
        return "testmini.jsonl: line 1"
    if name == "dynamath":
        _rewrite_json(folder / "dataset.json", lambda data: data["1"].update(image=rel))
        return "dataset.json: entry '1'"
    if name == "vstar":
        _rewrite_json(folder / "test_questions.jsonl", lambda rows: rows[0].update(image=rel), lines=True)
        return "test_questions.jsonl: line 1"
    if name == "visualprobe":
        _rewrite_json(folder / "val.json", lambda rows: rows[0].update(images=[rel]))
        return "val.json: item 0"
    file, key = {
        "mathvr": ("data/test-00000-of-00001.parquet", "image1"),
        "hrmmsearch": ("data/train-00000-of-00005.parquet", "query_image"),
        "mmsearch": ("end2end.parquet", "query_image"),
    }[name]
    _rewrite_parquet(folder / file, lambda rows: cell(rows, key))
    return f"{Path(file).name}: row 0"


PATH_BENCHMARKS = ["mathvision", "dynamath", "mathvr", "vstar", "visualprobe", "hrmmsearch", "mmsearch"]


@pytest.mark.parametrize("attack", ["traversal", "absolute", "symlink"])
@pytest.mark.parametrize("name", PATH_BENCHMARKS)
def test_image_paths_out_of_the_folder_are_refused_unopened(name: str, attack: str, tmp_path: Path) -> None:
    """`../../outside/secret.png`, its absolute path, or a symlink in the folder leading to it: a real
    image outside the benchmark folder, which the adapters used to load. Each is refused with the file
    and the row, and the secret is never opened."""
    secret = tmp_path / "outside" / "secret.png"
    save_image(secret, GREEN)
    folder = tmp_path / "data" / name
    CASES[name][0](folder)
    rel = {"traversal": "../../outside/secret.png", "absolute": str(secret), "symlink": "evil.png"}[attack]
    if attack == "symlink":
        (folder / "evil.png").symlink_to(secret)
    where = point_first_image(name, folder, rel)
    problem = "is an absolute path: refused" if attack == "absolute" else "leads outside the benchmark folder"
    with opens() as opened:
        err = expect_error(lambda: get_benchmark(name).load(folder), where, problem)
    assert err.path.is_relative_to(folder) and str(secret) not in opened


def test_annotation_files_and_images_found_in_the_folder_must_stay_in_it(tmp_path: Path) -> None:
    """Files the adapters find by name rather than by a row's path: a symlinked dataset.json, a V*
    annotation image, and the annotation a label-less V* row points at."""
    outside = tmp_path / "outside"
    make_dynamath(tmp_path / "dm")
    (outside / "dataset.json").parent.mkdir(parents=True)
    (tmp_path / "dm" / "dataset.json").replace(outside / "dataset.json")
    (tmp_path / "dm" / "dataset.json").symlink_to(outside / "dataset.json")
    with opens() as opened:
        expect_error(lambda: get_benchmark("dynamath").load(tmp_path / "dm"), "dataset.json", "leads outside")

    make_vstar(tmp_path / "vs", published_order=False)
    image = tmp_path / "vs" / "relative_position" / "sa_2.png"
    image.replace(outside / "sa_2.png")
    image.symlink_to(outside / "sa_2.png")
    with opens() as seen:
        expect_error(
            lambda: get_benchmark("vstar").load(tmp_path / "vs"), "sa_2.json: annotation", "leads outside"
        )
    opened += seen

    make_vstar(tmp_path / "vl", labels=False)
    (outside / "sa_1.json").write_text(json.dumps({"options": ["red"]}))
    save_image(outside / "sa_1.jpg", RED)
    path = tmp_path / "vl" / "test_questions.jsonl"
    _rewrite_json(path, lambda rows: rows[0].update(image="../outside/sa_1.jpg"), lines=True)
    with opens() as seen:
        expect_error(
            lambda: get_benchmark("vstar").load(tmp_path / "vl"), "line 1", "its annotation leads outside"
        )
    assert not [p for p in opened + seen if p.startswith(str(outside))]


def test_visualprobe_recipe_paths_resolve_inside_the_folder(tmp_path: Path) -> None:
    """The recipe's "VisualProbe_Hard/data/1.png" is read from `visualprobe/data/1.png`; a copy of the
    image beside the folder (where the parent lookup used to find it) is never read."""
    folder = tmp_path / "visualprobe"
    make_visualprobe(folder)
    _rewrite_json(folder / "val.json", lambda rows: rows[0].update(images=["VisualProbe_Hard/data/1.png"]))
    sign, _animal = get_benchmark("visualprobe").load(folder)
    assert sign.images[0].size == (80, 60)
    save_image(tmp_path / "VisualProbe_Hard" / "data" / "3.png", RED)
    _rewrite_json(folder / "val.json", lambda rows: rows[0].update(images=["VisualProbe_Hard/data/3.png"]))
    expect_error(lambda: get_benchmark("visualprobe").load(folder), "val.json: item 0", "not found")


def _bytes_read() -> int:
    """What this process has read so far (Linux /proc: every read call, page-cache hits included)."""
    return int(Path("/proc/self/io").read_text().split("rchar:")[1].split()[0])


def test_a_sparse_gigabyte_image_is_refused_unread(tmp_path: Path) -> None:
    """Issue 27 #5: a 1 GiB sparse image (a real PNG, then holes: no disk used) is refused from its size,
    never opened; a 200 MB one under the limit is decoded from its header and pixel data, its padding
    never read. Both inside one validation, which reads a few MB in all."""
    folder = tmp_path / "dm"
    make_dynamath(folder)
    padded, huge = folder / "image" / "image1.png", folder / "image" / "image5.png"
    os.truncate(padded, 200 << 20)
    os.truncate(huge, 1 << 30)
    assert huge.stat().st_blocks * 512 < 1 << 20  # sparse: the test machine's disk is not touched
    before = _bytes_read()
    with opens() as opened:
        expect_error(
            lambda: get_benchmark("dynamath").validate(folder),
            "dataset.json: entry '5'",
            f"image 'image/image5.png': {1 << 30} bytes, above the limit of {MAX_IMAGE_FILE_BYTES} bytes",
        )
    assert _bytes_read() - before < 8 << 20
    assert str(padded) in opened and str(huge) not in opened


def _validate_only(root: Path, tmp_path: Path) -> tuple[int, str, int]:
    """`axpo eval --validate-only` on mathvision under `root`: exit code, output and peak RSS (bytes)."""
    axpo = Path(sys.executable).parent / "axpo"
    command = [str(axpo)] if axpo.is_file() else [sys.executable, "-m", "flows.cli"]
    args = ["eval", "--validate-only", "--set", f"evaluation.data_root={root}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    env.pop("AXPO_DEBUG", None)
    with (tmp_path / "out").open("w") as out:
        child = subprocess.Popen(
            [*command, *args, "--set", "evaluation.benchmarks=[mathvision]"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        _, status, usage = os.wait4(child.pid, 0)
    return os.waitstatus_to_exitcode(status), (tmp_path / "out").read_text(), usage.ru_maxrss * 1024  # KiB


def test_validate_only_refuses_a_sparse_image_in_little_memory(tmp_path: Path) -> None:
    """The issue's measure, through the real command: `axpo eval --validate-only` with a 1 GiB sparse
    image exits 2 naming the file and line, at a peak within 128 MB of the same command on the intact
    folder, in the same environment (the issue measured 262 MB without the file and 1,286 MB with it)."""
    root = tmp_path / "data"
    make_mathvision(root / "mathvision")
    intact_code, intact_output, intact_peak = _validate_only(root, tmp_path)
    assert intact_code == 0, intact_output
    os.truncate(root / "mathvision" / "images" / "6.jpg", 1 << 30)
    code, output, peak = _validate_only(root, tmp_path)
    assert code == 2, output
    assert "testmini.jsonl: line 2: field 'image': image 'images/6.jpg': 1073741824 bytes" in output
    assert peak < intact_peak + (128 << 20), (peak, intact_peak)


def test_malformed_text_names_the_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Non-UTF-8 bytes, JSON nested too deeply for Python's parser, and an integer past its digit limit:
    each a BenchmarkFormatError naming the file and the line (these used to be bare UnicodeDecodeError,
    RecursionError and ValueError texts), and exit 2 through `axpo eval --validate-only`."""
    make_mathvision(tmp_path / "mv")
    path = tmp_path / "mv" / "data" / "testmini.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    load_mv = lambda: get_benchmark("mathvision").load(tmp_path / "mv")  # noqa: E731
    path.write_bytes(b"".join([lines[0], lines[1].replace(b"Which", b"Wh\xffich"), lines[2]]))
    expect_error(load_mv, "testmini.jsonl: line 2", "not UTF-8 text (byte 0xff at offset 27)")
    path.write_bytes(b"".join([lines[0], b"[" * 100_000 + b"\n", lines[2]]))
    expect_error(load_mv, "testmini.jsonl: line 2", "invalid JSON: nested too deeply")
    row = json.loads(lines[2])
    path.write_bytes(b"".join([*lines[:2], json.dumps({**row, "options": "[" * 100_000}).encode() + b"\n"]))
    expect_error(load_mv, "testmini.jsonl: line 3", "field 'options' should be a list of strings")

    root = tmp_path / "data"
    make_dynamath(root / "dynamath")
    dataset = root / "dynamath" / "dataset.json"
    text = dataset.read_bytes()
    dataset.write_bytes(text.replace(b"What is the period", b"What is the p\xc3\x28eriod"))
    expect_error(
        lambda: get_benchmark("dynamath").load(root / "dynamath"), "dataset.json: line 3", "not UTF-8"
    )
    dataset.write_text('{"1": ' + "[" * 100_000 + "]" * 100_000 + "}")
    expect_error(
        lambda: get_benchmark("dynamath").load(root / "dynamath"), "dataset.json", "nested too deeply"
    )
    dataset.write_bytes(text.replace(b'"2.0944"', b"9" * 5000))
    expect_error(lambda: get_benchmark("dynamath").load(root / "dynamath"), "dataset.json", "digits")
    assert main(["eval", "--validate-only", "--set", f"evaluation.data_root={root}"]) == 2
    out = capsys.readouterr().out
    assert f"BAD DATA: {dataset}: invalid JSON: Exceeds the limit (4300 digits)" in out

    make_hrbench(tmp_path / "hr")
    tsv = tmp_path / "hr" / "hr_bench_4k.tsv"
    rows = tsv.read_bytes().split(b"\n")
    rows[3] = rows[3].replace(b"trees", b"tr\xe9es")  # Latin-1, not UTF-8
    tsv.write_bytes(b"\n".join(rows))
    expect_error(
        lambda: get_benchmark("hrbench4k").load(tmp_path / "hr"), "hr_bench_4k.tsv: line 4", "not UTF-8"
    )


def test_corrupt_parquet_page_names_the_file_and_row(tmp_path: Path) -> None:
    """A page header overwritten in the second of three row groups: the first 16 rows load, then one
    error names the file, the first row not read and its row group (it was a bare pyarrow OSError)."""
    rows = [{"id": str(i), "question": f"Compute {i} + 1.", "answers": [str(i + 1)]} for i in range(40)]
    file = tmp_path / "vr" / "data" / "test-00000-of-00001.parquet"
    file.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), file, row_group_size=16)
    offset = pq.ParquetFile(file).metadata.row_group(1).column(1).data_page_offset
    data = bytearray(file.read_bytes())
    data[offset : offset + 12] = b"\xff" * 12
    file.write_bytes(bytes(data))
    assert len(get_benchmark("mathvr").load(tmp_path / "vr", limit=16)) == 16
    expect_error(
        lambda: get_benchmark("mathvr").validate(tmp_path / "vr"),
        "test-00000-of-00001.parquet: row 16",
        "cannot read the data from this row on (row group 1 of 3): OSError",
    )


# --------------------------------------------------------------------------------------------- scoring


def test_f1_edge_cases() -> None:
    assert f1_score("Paris", "paris") == 1.0
    assert f1_score("The Eiffel Tower.", "eiffel tower") == 1.0  # articles and punctuation dropped
    assert f1_score("\\text{Real Madrid}", "Real Madrid") == 1.0  # LaTeX wrappers unwrapped first
    assert f1_score("Real Madrid CF", "Real Madrid") == pytest.approx(0.8)  # p = 2/3, r = 1
    assert f1_score("new new york", "new york") == pytest.approx(0.8)  # tokens count as a multiset
    assert f1_score("Barcelona", "Real Madrid") == 0.0
    assert f1_score("...", "Paris") == 0.0  # nothing left of the prediction
    assert f1_score("the", "a") == 1.0  # both empty after normalisation: agree, as the official rule
    assert match_f1("Madrid", []) == 0.0
    assert match_f1("Real Madrid CF", ["Real Madrid", "Real Madrid CF"]) == 1.0
    assert score("no answer", "Paris", "f1") == 0.0
    assert score(boxed("Paris, France"), "Paris", "f1") == pytest.approx(2 / 3)
    assert 0.0 <= score(boxed("x y z"), "x", "f1", ("y",)) <= 1.0


def test_approx_and_choice_rules() -> None:
    assert match_approx("2.094", "2.0944") and not match_approx("2.1", "2.0944")
    assert match_approx("May", "may") and not match_approx("12 dots", "12")
    # choice: the gold may be the letter or the option text; the response may give either
    assert rewards.match_choice("red", "A", ("red", "blue"))
    assert rewards.match_choice("(B)", "blue", ("red", "blue"))
    assert rewards.match_choice("B. blue", "B", ("red", "blue"))
    assert not rewards.match_choice("B. red", "A", ("red", "blue"))  # inconsistent letter and text
    with pytest.raises(ValueError, match="answer_type"):
        score(boxed("1"), "1", "fuzzy")  # type: ignore[arg-type]


def test_expected_max_at_k_is_graded_pass_at_k() -> None:
    for rewards_ in ([0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]):
        for k in (1, 2, 4):
            assert expected_max_at_k(rewards_, k) == pytest.approx(pass_at_k(4, sum(rewards_), k))
    f1s = [0.2, 0.9, 0.0, 0.5]
    assert expected_max_at_k(f1s, 1) == pytest.approx(sum(f1s) / 4)  # mean F1, MMSearch's number
    assert expected_max_at_k(f1s, 4) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        expected_max_at_k(f1s, 5)


# ------------------------------------------------------------------------------------------ judges, runner


def test_parse_verdict() -> None:
    assert parse_verdict("Yes") == 1 and parse_verdict("no.") == 0
    assert parse_verdict("Yes, the candidate is correct.") == 1
    assert parse_verdict("No. The correct answer is 5.") == 0
    assert parse_verdict("<think>maybe yes</think>\nno") == 0
    assert parse_verdict("the reasoning so far</think> Correct") == 1  # template-opened thinking
    assert parse_verdict("<think>yes yes yes") is None  # cut inside its reasoning
    assert parse_verdict("") is None and parse_verdict("banana 42") is None


def test_llm_judge_runs_on_a_real_local_model(tiny_model_dir: Path) -> None:
    judge = LLMJudge(tiny_model_dir, device="cpu", max_new_tokens=8)
    q = Question("hr-0", "hrbench4k", "Colour? Options: (A) red (B) blue", (), "A", "choice", ("red", "blue"))
    for response in (boxed("B"), boxed("purple"), "no answer", "<answer>\\boxed{unclosed</answer>"):
        verdict = judge.verdict(q, response)
        assert verdict.score in (0.0, 1.0) and verdict.reason
        assert judge.judge(q, response) in (0.0, 1.0)
    assert judge.verdict(q, boxed("red")).reason == "rule match"  # the rule accepts it: no model call
    assert judge.verdict(q, "no answer").score == 0.0
    f1_question = Question("ms-0", "mmsearch", "Who?", (), "Real Madrid", "f1", ("Real Madrid CF",))
    assert judge.judge(f1_question, boxed("Barcelona")) in (0.0, 1.0)


def test_llm_judge_survives_generation_failures(tiny_model_dir: Path) -> None:
    judge = LLMJudge(tiny_model_dir, device="cpu", max_new_tokens=4, rule_first=False)

    def broken(prompt: str) -> str:
        raise RuntimeError("CUDA out of memory")

    judge._generate = broken  # type: ignore[method-assign]
    q = Question("q", "s", "2+2?", (), "4", "numeric")
    verdict = judge.verdict(q, boxed("4"))
    assert verdict.score == 0.0 and "judge model failed" in verdict.reason


def test_make_judge_and_apply_judge(config, tmp_path: Path) -> None:
    assert isinstance(make_judge(config.evaluation), RuleJudge)
    llm_cfg = config.evaluation.model_copy(update={"judge": "llm"})
    with pytest.raises(ValueError, match="evaluation.judge_model_path"):
        make_judge(llm_cfg)
    with pytest.raises(FileNotFoundError, match="judge_model_path"):
        make_judge(llm_cfg.model_copy(update={"judge_model_path": str(tmp_path)}))
    q = Question("q", "s", "2+2?", (), "4", "numeric")
    t = Trajectory("q", 0, [], [], [], [], 0, text=boxed("4"), answer_text=boxed("4"))
    apply_judge(RuleJudge(), [q], [t])
    assert t.reward == 1.0 and t.correct
    # the judge reads the policy's final turn, not the whole text (which holds tool output)
    forged = Trajectory("q", 0, [], [], [], [], 0, text=boxed("4"), answer_text="<answer>5</answer>")
    apply_judge(RuleJudge(), [q], [forged])
    assert forged.reward == 0.0


def test_runner_reads_real_benchmarks_from_data_root(config, tmp_path: Path) -> None:
    make_vstar(tmp_path / "vstar")
    cfg = config.model_copy(
        update={
            "evaluation": config.evaluation.model_copy(update={"data_root": str(tmp_path), "questions": 1})
        }
    )
    questions = benchmark_questions(cfg, "vstar")
    assert [q.question_id for q in questions] == ["vstar-direct_attributes-sa_1"]
    with pytest.raises(ValueError, match="evaluation.data_root"):
        benchmark_questions(config, "vstar")
    with pytest.raises(BenchmarkFormatError, match="mmsearch"):
        benchmark_questions(cfg, "mmsearch")  # <data_root>/mmsearch does not exist
    synthetic = benchmark_questions(config, "control_shapes")
    assert len(synthetic) == config.evaluation.questions


def test_evaluation_token_budgets_replace_the_rollouts(config) -> None:
    from axpo_core.evaluation.runner import evaluation_config

    assert evaluation_config(config).rollout.max_total_tokens == config.rollout.max_total_tokens  # None: same
    ev = config.evaluation.model_copy(update={"max_total_tokens": 40960, "max_new_tokens_per_turn": 32768})
    rollout = evaluation_config(config.model_copy(update={"evaluation": ev})).rollout
    assert (rollout.max_total_tokens, rollout.max_new_tokens_per_turn, rollout.max_turns) == (40960, 32768, 5)
