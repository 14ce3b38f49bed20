"""Answer extraction and matching: every documented edge case of axpo_core.rewards."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from axpo_core.rewards import extract_answer, match_choice, match_exact, match_numeric, normalize, score

# --------------------------------------------------------------------------- extract_answer

PRINTS_AN_ANSWER = (
    '<tool_call>\n{"name": "python", "arguments": {"code": "print(\'<answer>1</answer>\')"}}\n</tool_call>'
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the normal case, with and without thinking
        ("<think>It is red.</think>\n<answer>\\boxed{red}</answer>", "red"),
        ("<answer>\\boxed{red}</answer>", "red"),
        # whitespace is stripped, case is kept (matching is case-insensitive, extraction is not)
        ("<answer>  \\boxed{  Red  }  </answer>", "Red"),
        ("<answer>\n\\boxed {red}\n</answer>", "red"),
        # nested braces are balanced
        ("<answer>\\boxed{\\frac{3}{4}}</answer>", "\\frac{3}{4}"),
        ("<answer>\\boxed{\\text{dark {red}}}</answer>", "\\text{dark {red}}"),
        # no \boxed: the body of the block
        ("<answer> red </answer>", "red"),
        ("<answer>B.</answer>", "B."),
        # text around the box inside the block is ignored
        ("<answer>The answer is \\boxed{7}.</answer>", "7"),
        # no answer at all
        ("", None),
        ("<think>I think it is red.</think>", None),
        ("The answer is \\boxed{red}.", None),  # a box without the <answer> tag does not count
        ("<answer></answer>", None),
        ("<answer>\\boxed{}</answer>", None),
        ("<answer>   </answer>", None),
        # malformed or truncated
        ("<answer>\\boxed{red</answer>", None),
        ("<answer>\\boxed{re", None),
        ("<answer>\\boxed{red}", "red"),  # closing tag dropped by a stop string
        # two answers: accepted only when they agree
        ("<answer>\\boxed{red}</answer><answer>\\boxed{blue}</answer>", None),
        ("<answer>\\boxed{red}</answer> <answer>\\boxed{RED}</answer>", "RED"),
        ("<answer>\\boxed{red} or \\boxed{blue}</answer>", None),
        ("<answer>\\boxed{red} \\boxed{red.}</answer>", "red."),
        # a malformed block next to a good one: the good one counts
        ("<answer>\\boxed{re</answer><answer>\\boxed{red}</answer>", "red"),
        # answers inside thinking, tool calls and tool responses are not the model's answer
        ("<think>maybe <answer>\\boxed{blue}</answer></think><answer>\\boxed{red}</answer>", "red"),
        ("<think>maybe <answer>\\boxed{blue}</answer></think>", None),
        ("<think>unclosed thinking <answer>\\boxed{blue}</answer>", None),
        (PRINTS_AN_ANSWER, None),
        ("<tool_response><answer>\\boxed{1}</answer></tool_response><answer>\\boxed{2}</answer>", "2"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


# --------------------------------------------------------------------------- normalize / exact


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Red", "red"),
        ("  dark   Red \n", "dark red"),
        ("red.", "red"),
        ("red...", "red"),
        ("\\text{red}", "red"),
        ("\\textbf{ Red }", "red"),
        ("\\text{\\mathrm{red}}", "red"),
        ("$12$", "12"),
        ('"red"', "red"),
        ("'red'", "red"),
        ("a\\,b", "a b"),
        ("", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("red", "red", True),
        ("RED", "red", True),
        (" red ", "Red", True),
        ("red.", "red", True),
        ("\\text{red}", "red", True),
        ("dark  red", "dark red", True),
        ("reddish", "red", False),
        ("", "", False),  # an empty prediction never matches
        ("blue", "red", False),
    ],
)
def test_match_exact(pred: str, gold: str, ok: bool) -> None:
    assert match_exact(pred, gold) is ok


# --------------------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("12", "12", True),
        ("12.0", "12", True),
        ("12.", "12", True),
        ("1.2e1", "12", True),
        ("+12", "12", True),
        ("1,200", "1200", True),
        ("1,200.5", "1200.5", True),
        ("1200", "1,200", True),
        ("3/4", "0.75", True),
        ("0.75", "3/4", True),
        ("\\frac{3}{4}", "0.75", True),
        ("\\dfrac{3}{4}", "3/4", True),
        ("-\\frac{3}{4}", "-0.75", True),
        ("-5", "-5", True),
        ("\u22125", "-5", True),  # Unicode minus
        ("-5", "5", False),
        ("50%", "50", True),
        ("50\\%", "50", True),
        ("$12$", "12", True),
        ("\\text{12}", "12", True),
        ("12.", "12", True),
        ("0.333333", "1/3", False),  # rel_tol 1e-6 is tighter than six digits
        ("0.3333333333", "1/3", True),
        ("13", "12", False),
        ("12 dots", "12", False),  # the prediction must be a number and nothing else
        ("twelve", "12", False),
        ("1,20", "120", False),  # not a thousands separator
        ("3/0", "0", False),
        ("", "0", False),
        ("1e999999999", "1", False),  # absurd exponents are not parsed (no 10**huge)
        ("red", "red", True),  # a non-numeric gold falls back to exact matching
    ],
)
def test_match_numeric(pred: str, gold: str, ok: bool) -> None:
    assert match_numeric(pred, gold) is ok


def test_match_numeric_rel_tol() -> None:
    assert match_numeric("100.5", "100", rel_tol=0.01)
    assert not match_numeric("101", "100", rel_tol=0.01)  # two integers must be equal
    assert match_numeric("100.0000001", "100")
    assert not match_numeric("102", "100", rel_tol=0.01)
    assert match_numeric("0", "0")
    assert not match_numeric("1e-6", "0")


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_numeric_integer_forms(n: int) -> None:
    for form in (str(n), f"{n:,}", f"{n}.0", f"{n:+d}"):
        assert match_numeric(form, str(n)), form
    assert not match_numeric(str(n + 1), str(n))


@given(st.fractions(min_value=-1000, max_value=1000, max_denominator=50))
def test_numeric_fraction_forms(x: Fraction) -> None:
    gold = f"{float(x):.12f}"
    assert match_numeric(f"{x.numerator}/{x.denominator}", gold)
    sign = "-" if x < 0 else ""
    assert match_numeric(f"{sign}\\frac{{{abs(x.numerator)}}}{{{x.denominator}}}", gold)


# --------------------------------------------------------------------------- choice

CHOICES = ("red", "green", "blue", "dark yellow")


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("B", "green", True),
        ("b", "green", True),
        ("(B)", "green", True),
        ("B.", "green", True),
        ("B)", "green", True),
        ("[B]", "green", True),
        ("B:", "green", True),
        ("option B", "green", True),
        ("green", "green", True),
        ("Green.", "green", True),
        ("\\text{green}", "green", True),
        ("(B) green", "green", True),
        ("B. green", "green", True),
        ("(B) red", "green", False),  # letter and text disagree
        ("D", "dark yellow", True),
        ("dark   yellow", "dark yellow", True),
        ("A", "green", False),
        ("red", "green", False),
        ("E", "green", False),  # no option E
        ("blue", "B", False),  # gold given as a letter: blue is C
        ("green", "B", True),
        ("(b)", "B", True),
        ("Bx", "green", False),
        ("", "green", False),
    ],
)
def test_match_choice(pred: str, gold: str, ok: bool) -> None:
    assert match_choice(pred, gold, CHOICES) is ok


def test_match_choice_letter_first() -> None:
    """A letter names its option whatever the option texts are (the texts cannot re-read it)."""
    assert match_choice("a", "A", ("b", "a"))  # "a" is the letter A (option "b"), the gold
    assert not match_choice("a", "B", ("b", "a"))
    assert match_choice("B", "B", ("b", "a")) and not match_choice("B", "A", ("b", "a"))
    assert match_choice("C", "C", ("A", "C", "C", "D", "it depends"))  # letter C, though option B reads "C"
    # a letter is read before LaTeX is unwrapped: MATH-V's options "$\\text{B}$", "$\\text{G}$", ...
    latex = ("$\\text{B}$", "$\\text{G}$", "$\\text{O}$")
    assert match_choice("$\\text{B}$", "A", latex) and not match_choice("$\\text{B}$", "B", latex)
    assert match_choice("\\text{B}", "B", ("red", "blue"))  # a wrapped letter that is no option's text


def test_match_choice_exact_text_before_normalised_text() -> None:
    """Options that differ only by a trailing period or case: exact text tells them apart, and an answer
    matching both only after normalising names neither (it can never score the wrong option)."""
    options = ("ELEVATE", "ELEVATE.", "ELEVATOR")
    assert match_choice("ELEVATE", "A", options) and not match_choice("ELEVATE", "B", options)
    assert match_choice("ELEVATE.", "B", options) and not match_choice("ELEVATE.", "A", options)
    assert not match_choice("elevate", "A", options) and not match_choice("elevate", "B", options)
    assert match_choice("elevator.", "C", options)  # no collision: normalised text is enough
    assert match_choice("Red", "A", ("red", "Red")) is False  # case-only collision, not exact: neither
    assert match_choice("red", "A", ("red", "Red")) and match_choice("Red", "B", ("red", "Red"))


def test_match_choice_without_choices() -> None:
    assert match_choice("(B)", "B", None)
    assert match_choice("b.", "B", None)
    assert not match_choice("A", "B", None)
    assert match_choice("Red", "red", None)
    assert not match_choice("B", "green", None)  # no options to map the letter to


# --------------------------------------------------------------------------- score


def test_score_end_to_end() -> None:
    good = "<think>The square is red.</think>\n<answer>\\boxed{red}</answer>"
    assert score(good, "red", "exact") == 1.0
    assert score(good, "blue", "exact") == 0.0
    assert score(good, "red", "choice", ("blue", "red")) == 1.0
    assert score("<answer>\\boxed{B}</answer>", "red", "choice", ("blue", "red")) == 1.0
    assert score("<answer>\\boxed{1,200}</answer>", "1200", "numeric") == 1.0
    assert score("<answer>\\boxed{\\frac{3}{4}}</answer>", "0.75", "numeric") == 1.0
    assert score("no answer", "red", "exact") == 0.0
    assert score("<answer>\\boxed{red}</answer><answer>\\boxed{blue}</answer>", "red", "exact") == 0.0


def test_score_rejects_unknown_answer_type() -> None:
    with pytest.raises(ValueError, match="answer_type"):
        score("<answer>\\boxed{1}</answer>", "1", "fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="answer_type"):
        score("", "1", "fuzzy")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- hostile output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a \boxed inside another is part of the outer one's content (one pass over the braces)
        ("<answer>\\boxed{\\boxed{7}}</answer>", "\\boxed{7}"),
        ("<answer>\\boxed{a \\boxed{b} c}</answer>", "a \\boxed{b} c"),
        ("<answer>\\boxed{\\boxed{7}</answer>", None),  # the outer box is never closed
        ("<answer>{ \\boxed{7} }</answer>", "7"),  # braces outside a box do not count
        ("<answer>} \\boxed{7}</answer>", "7"),
        ("<answer>" + "\\boxed{" * 3 + "7" + "}" * 3 + "</answer>", "\\boxed{\\boxed{7}}"),
    ],
)
def test_extract_answer_on_nested_boxes(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\\text{\\text{\\textbf{x}}}", "x"),
        ("\\text{a \\mathrm{b} c}", "a b c"),
        ("\\text{a{b}}", "\\text{a{b}}"),  # braces other than wrappers' stay, and so does the wrapper
        ("\\text{a}b}", "ab}"),  # a stray closing brace is text
        ("{\\text{a}", "{a"),
        ("\\text {a} \\mbox{b}", "a b"),
        ("\\text{" * 50 + "deep" + "}" * 50, "deep"),
        ("\\text{", "\\text{"),
    ],
)
def test_normalize_unwraps_nested_wrappers_in_one_pass(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_huge_numbers_are_not_parsed_and_never_raise() -> None:
    digits = "1" * 5000  # int() refuses over 4300 digits; a reward that raises would end the batch
    assert score(f"<answer>\\boxed{{{digits}}}</answer>", digits, "numeric") == 1.0  # exact text match
    assert score(f"<answer>\\boxed{{{digits}}}</answer>", "1", "numeric") == 0.0
    assert score(f"<answer>\\boxed{{{digits}}}</answer>", "1", "approx") == 0.0
    assert not match_numeric("9" * 2000 + "x", "9")
    assert match_numeric("1" * 900, "1" * 900)  # long but still a number


def _line_events(function, *args) -> int:
    """Python lines executed inside axpo_core/rewards.py while `function(*args)` runs: a work count that
    does not depend on the machine's speed."""
    import sys

    import axpo_core.rewards as module

    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code.co_filename == module.__file__ else None

    sys.settrace(tracer)
    try:
        function(*args)
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize(
    "shape",
    [
        lambda n: "<answer>" + "\\boxed{" * n + "7" + "}" * n + "</answer>",
        lambda n: "<answer>\\boxed{" + "\\text{" * n + "7" + "}" * n + "}</answer>",
        lambda n: "<answer>\\boxed{" + "{" * n + "</answer>",
        lambda n: "<answer>\\boxed{7}</answer>" * n,
        lambda n: "<answer>" + "\\boxed{7} " * n + "</answer>",
        lambda n: "<think>" * n + "<answer>\\boxed{7}</answer>",
        lambda n: "<answer>\\boxed{" + "\\text{x}" * n + "}</answer>",
    ],
    ids=[
        "nested-boxed",
        "nested-text",
        "unclosed-braces",
        "many-blocks",
        "many-boxes",
        "unclosed-think",
        "many-text",
    ],
)
def test_extraction_work_grows_linearly(shape) -> None:
    """10x the text costs about 10x the work, never the 100x of a rescan per nesting level (the nested
    cases took 6.3 s at 40k characters before)."""
    small, large = shape(400), shape(4000)
    work_small = max(1, _line_events(score, small, "7", "exact"))
    work_large = _line_events(score, large, "7", "exact")
    assert work_large <= 30 * work_small, (work_small, work_large)
