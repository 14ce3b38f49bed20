r"""Answer extraction and verification: the binary correctness reward r ∈ {0, 1} (docs/design.md §3, §6).

A response ends with ``<answer>\boxed{...}</answer>``. The rules below decide what counts as the
response's answer, and how it is compared to the gold answer. They are deliberately strict where
leniency would let a policy hedge (several different answers score 0), and lenient where the
difference is only formatting (case, whitespace, ``\text{}``, a trailing period, "1,200" vs "1200").

Extraction (:func:`extract_answer`):

- Text inside ``<think>``, ``<tool_call>`` and ``<tool_response>`` blocks is ignored (an answer the
  model only muses about, or one printed by a tool, is not the model's answer). An unclosed block
  of these kinds runs to the end of the text.
- Without an ``<answer>`` block there is no answer (``None``), even if a ``\boxed{}`` appears
  elsewhere: the format requires the tag.
- An unclosed trailing ``<answer>`` is read to the end of the text (backends that stop on
  ``</answer>`` may drop the closing tag).
- Inside a block, the content of ``\boxed{...}`` is the answer; nested braces are balanced
  (``\boxed{\frac{3}{4}}`` gives ``\frac{3}{4}``), and a ``\boxed`` inside another is part of the
  outer one's content. A block without ``\boxed`` gives its whole body. A block whose ``\boxed{`` is
  never closed, or whose answer is empty, gives nothing.
- Several answers (two ``<answer>`` blocks, or two ``\boxed`` in one block) are accepted only when
  they all agree after :func:`normalize`; otherwise the response is ambiguous and has no answer.

Every step is one left-to-right pass (no rescanning per nesting level), so the work grows linearly with
the text, however the model nests ``\boxed{`` or ``\text{``; numbers of more than ``MAX_NUMBER_CHARS``
characters are not parsed as numbers (Python refuses to convert integers of over 4300 digits).

Matching: ``exact`` compares :func:`normalize`-d strings; ``numeric`` compares numbers (see
:func:`match_numeric`); ``choice`` accepts the option letter or the option text (see
:func:`match_choice`: a letter first, exact option text before normalised text); ``approx`` compares
numbers within an absolute tolerance of 1e-3 (DynaMath's rule, see :func:`match_approx`);
``contains`` accepts an answer that contains the gold answer (DynaMath's rule for its text answers, see
:func:`match_contains`); ``f1`` is graded, not binary: the token-level F1 of MMSearch / SQuAD (see
:func:`f1_score`), the maximum over the gold answer and its alternatives.

For ``f1`` the reward is the F1 itself, in [0, 1]. Everything that thresholds rewards (a trajectory is
"correct" when its reward is > 0.5) therefore counts a search answer correct when its F1 exceeds 0.5;
:func:`axpo_core.evaluation.passk.expected_max_at_k` turns F1 rewards into a graded pass@k.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

AnswerType = Literal["exact", "numeric", "choice", "approx", "contains", "f1"]
ANSWER_TYPES: tuple[str, ...] = ("exact", "numeric", "choice", "approx", "contains", "f1")

__all__ = [
    "ANSWER_TYPES",
    "APPROX_ABS_TOL",
    "AnswerType",
    "choice_indices",
    "extract_answer",
    "f1_score",
    "match_approx",
    "match_choice",
    "match_contains",
    "match_exact",
    "match_f1",
    "match_numeric",
    "normalize",
    "score",
]

_IGNORED_BLOCK = re.compile(r"<(think|tool_call|tool_response)>.*?(?:</\1>|\Z)", re.DOTALL)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)
_BOXED = re.compile(r"\\boxed\s*\{")
_BOXED_OR_BRACE = re.compile(r"\\boxed\s*\{|[{}]")
_WRAPPER_OR_BRACE = re.compile(r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mbox)\s*\{|[{}]")
_LATEX_SPACE = re.compile(r"\\[,;:! ]")
_QUOTES = ('"', "'", "`")


def _boxed_contents(body: str) -> list[str] | None:
    r"""Contents of every outermost ``\boxed{...}`` in ``body`` (braces balanced); None if one is unclosed.

    One pass over the braces: a ``\boxed{`` inside another only deepens the nesting.
    """
    contents = []
    depth, start = 0, 0  # depth: open braces of the current outermost \boxed (0: outside any)
    for match in _BOXED_OR_BRACE.finditer(body):
        token = match.group()
        if depth == 0:
            if token != "{" and token != "}":  # braces outside a \boxed do not count
                depth, start = 1, match.end()
        elif token == "}":
            depth -= 1
            if depth == 0:
                contents.append(body[start : match.start()])
        else:
            depth += 1
    return None if depth else contents


def extract_answer(text: str) -> str | None:
    r"""The response's final answer (stripped, not normalized), or None when it has none.

    See the module docstring for the rules; in short: the ``\boxed{}`` content of the
    ``<answer>`` block, its body when there is no ``\boxed``, and None when there is no block,
    the block is empty or malformed, or the response gives several different answers.
    """
    visible = _IGNORED_BLOCK.sub(" ", text)
    candidates: list[str] = []
    for body in _ANSWER_BLOCK.findall(visible):
        if _BOXED.search(body):
            boxed = _boxed_contents(body)
            if boxed is None:
                continue
            candidates.extend(b.strip() for b in boxed)
        else:
            candidates.append(body.strip())
    candidates = [c for c in candidates if normalize(c)]
    if not candidates:
        return None
    if len({normalize(c) for c in candidates}) > 1:
        return None
    return candidates[-1]


def normalize(s: str) -> str:
    r"""Canonical form for string comparison: formatting differences must not change the reward.

    Unwraps ``\text{}``-like wrappers, drops ``$`` and LaTeX spacing commands, strips one layer of
    enclosing quotes, collapses whitespace, lowercases, and drops trailing periods.
    """
    s = _LATEX_SPACE.sub(" ", _unwrap_text(s).replace("$", ""))
    s = " ".join(s.split())
    if len(s) >= 2 and s[0] == s[-1] and s[0] in _QUOTES:
        s = s[1:-1].strip()
    return s.lower().rstrip(". ").strip()


def _unwrap_text(s: str) -> str:
    r"""``s`` with every ``\text{...}``-like wrapper replaced by its content, inner wrappers first; a wrapper
    stays when braces other than unwrapped wrappers' are left inside it (``\text{a{b}}``).

    One pass: each wrapper or brace is looked at once, and an unwrapped wrapper's two pieces are blanked
    in place (re-substituting until nothing changes took a pass per nesting level: quadratic).
    """
    pieces: list[str] = []
    # per open brace: [index of its opening piece, is a wrapper, keeps a brace inside]
    open_groups: list[list] = []
    pos = 0
    for match in _WRAPPER_OR_BRACE.finditer(s):
        pieces.append(s[pos : match.start()])
        pos = match.end()
        token = match.group()
        if token != "}":
            open_groups.append([len(pieces), token != "{", False])
            pieces.append(token)
        elif not open_groups:
            pieces.append(token)  # a stray closing brace is text
        else:
            opening, wrapper, braced = open_groups.pop()
            if wrapper and not braced:
                pieces[opening] = ""
            else:
                pieces.append(token)
                if open_groups:
                    open_groups[-1][2] = True
    pieces.append(s[pos:])
    return "".join(pieces)


def match_exact(pred: str, gold: str) -> bool:
    """Equal after :func:`normalize` (so case- and whitespace-insensitive); empty never matches."""
    p = normalize(pred)
    return bool(p) and p == normalize(gold)


_FRAC = re.compile(r"^([+-]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
# unambiguous (`\d+\.?\d*` backtracks quadratically on a long run of digits); bounded exponent: no 10**huge
_PLAIN = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d{1,3})?$")
MAX_NUMBER_CHARS = 1000
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _parse_number(s: str) -> Fraction | None:
    """Exact value of a plain number, "1,200", "3/4", ``\\frac{3}{4}`` or "50%" (as 50); else None."""
    t = normalize(s).replace("\u2212", "-").replace("\\%", "%").replace(" ", "")
    t = t.removesuffix("%")
    if len(t) > MAX_NUMBER_CHARS:
        return None
    if frac := _FRAC.match(t):
        num, den = _parse_number(frac.group(2)), _parse_number(frac.group(3))
        if num is None or den is None or den == 0:
            return None
        return -num / den if frac.group(1) == "-" else num / den
    if t.count("/") == 1:
        num_s, den_s = t.split("/")
        if not (_PLAIN.match(num_s) and _PLAIN.match(den_s)):
            return None
        den = Fraction(den_s)
        return Fraction(num_s) / den if den else None
    if _THOUSANDS.match(t):
        t = t.replace(",", "")
    if _PLAIN.match(t):
        return Fraction(t)
    return None


def match_numeric(pred: str, gold: str, rel_tol: float = 1e-6) -> bool:
    r"""Numerically equal: "12" = "12.0" = "1.2e1", "1,200" = "1200", "3/4" = "0.75".

    Two integer values must be equal; otherwise they may differ by ``rel_tol`` (relative).

    The prediction must be a number and nothing else ("12 dots" does not match): accepted forms
    are plain/decimal/scientific numbers with an optional sign (also the Unicode minus), comma
    thousands separators in groups of three, ``a/b``, ``\frac{a}{b}`` (also ``\dfrac``,
    ``\tfrac``) and a trailing "%" (dropped: "50%" equals 50). A gold answer that is not a number
    is compared with :func:`match_exact`.
    """
    g = _parse_number(gold)
    if g is None:
        return match_exact(pred, gold)
    p = _parse_number(pred)
    if p is None:
        return False
    if p.denominator == 1 and g.denominator == 1:
        return p == g  # counts: 1000001 is not 1000000, whatever rel_tol says
    return abs(p - g) <= max(Fraction(rel_tol) * max(abs(p), abs(g)), Fraction(1, 10**12))


# "b", "(b)", "[b]", "b.", "b:", "b)", "option b", optionally followed by the option text
_LETTER = re.compile(
    r"^(?:(?:option|choice|answer)\s*)?(?:\(([a-z])\)|\[([a-z])\]|([a-z])(?:[.:)]|$))\s*(.*)$"
)


def _letter_index(text: str, options: Sequence[str]) -> int | None:
    """The option a letter form names ("b", "(b)", "b.", "option b", "(b) red" with option b's text), in
    lower-cased ``text``; None when ``text`` is no letter form, the letter is out of range, or its text
    is another option's."""
    m = _LETTER.match(text)
    if m is None:
        return None
    index = ord(m.group(1) or m.group(2) or m.group(3)) - ord("a")
    rest = m.group(4).strip()
    if index < len(options) and (not rest or rest == normalize(options[index])):
        return index
    return None


def choice_indices(s: str, choices: Sequence[str]) -> frozenset[int] | None:
    """The options ``s`` names, or None: a letter first, then an option's exact text, then its text after
    :func:`normalize`, unless normalising makes that option equal to another one.

    Order matters. A letter ("B", "(B)", "B.", "option B", "(B) red") names its option whatever the option
    texts are, so an answer can never be re-read as a different option's text. Exact text comes before
    normalised text because :func:`normalize` drops case and trailing periods: when two options differ
    only that way (HR-Bench's "ELEVATE" and "ELEVATE."), only the exact text tells them apart, and an
    answer that matches both after normalising names neither. Options with identical text (MATH-V has
    some) are all named by that text. A letter is recognised before LaTeX is unwrapped, so an option
    written ``$\\text{B}$`` is matched by its text; a wrapped letter (``\\text{B}``) that is no option's
    text still counts as the letter, last.
    """
    options = list(choices)
    n = normalize(s)
    if not n:
        return None
    light = " ".join(s.split()).lower().rstrip(". ").strip()  # case, spacing, a trailing period: no LaTeX
    index = _letter_index(light, options)
    if index is not None:
        return frozenset({index})
    exact = frozenset(i for i, o in enumerate(options) if o.strip() == s.strip())
    if exact:
        return exact
    same = frozenset(i for i, o in enumerate(options) if normalize(o) == n)
    if len({options[i].strip() for i in same}) > 1:  # normalising merged options that differ: exact only
        return None
    if same:
        return same
    index = _letter_index(n, options)
    return None if index is None else frozenset({index})


def match_choice(pred: str, gold: str, choices: Sequence[str] | None) -> bool:
    """Same option: ``pred`` and ``gold`` may each be a letter ("B", "(B)", "B.", "B)") or the
    option text; "(B) red" must name a consistent letter and text. See :func:`choice_indices` for the
    order (letter, exact text, normalised text without collisions), which cannot turn a right answer
    into a wrong one or the reverse when two options differ only by case or a trailing period.

    Without ``choices`` only letter-to-letter and exact text comparisons are possible.
    """
    if choices:
        p, g = choice_indices(pred, choices), choice_indices(gold, choices)
        return p is not None and g is not None and bool(p & g)
    p, g = normalize(pred), normalize(gold)
    p_letter, g_letter = _LETTER.match(p), _LETTER.match(g)
    if p_letter and g_letter and not p_letter.group(4) and not g_letter.group(4):
        return (p_letter.group(1) or p_letter.group(2) or p_letter.group(3)) == (
            g_letter.group(1) or g_letter.group(2) or g_letter.group(3)
        )
    return bool(p) and p == g


APPROX_ABS_TOL = 1e-3  # DynaMath: a float answer is right when |pred - gold| <= 0.001


def match_approx(pred: str, gold: str, abs_tol: float = APPROX_ABS_TOL) -> bool:
    """Numbers within ``abs_tol`` of each other (DynaMath's float rule: gold values are rounded to 4
    decimals and the model is asked for 3, so exact equality would be too strict).

    Accepts the same number forms as :func:`match_numeric`; a gold answer that is not a number is
    compared with :func:`match_exact`.
    """
    g = _parse_number(gold)
    if g is None:
        return match_exact(pred, gold)
    p = _parse_number(pred)
    return p is not None and abs(p - g) <= Fraction(str(abs_tol))


def match_contains(pred: str, gold: str) -> bool:
    """The gold answer occurs in the prediction: DynaMath's rule for every answer type other than float
    and multiple choice (``gold in answer`` in its evaluation script), case-sensitive as there. LaTeX
    wrappers (``\\text{}``, ``$``) and runs of whitespace are removed from both sides first; an empty gold
    never matches."""
    g = " ".join(_unwrap_text(gold).replace("$", "").split())
    return bool(g) and g in " ".join(_unwrap_text(pred).replace("$", "").split())


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _f1_tokens(s: str) -> list[str]:
    """SQuAD answer normalisation (lowercase, no ASCII punctuation, no articles), after
    :func:`normalize` has unwrapped LaTeX (so ``\\text{Paris}`` is the token "paris")."""
    s = normalize(s).translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", s).split()


def f1_score(pred: str, gold: str) -> float:
    """Token-level F1 between two short answers, as MMSearch and SQuAD score them.

    Tokens are compared as multisets. When either side has no tokens left after normalisation the
    score is 1.0 if both are empty and 0.0 otherwise (the official rule).
    """
    p, g = _f1_tokens(pred), _f1_tokens(gold)
    if not p or not g:
        return float(p == g)
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def match_f1(pred: str, golds: Sequence[str]) -> float:
    """The best :func:`f1_score` against any of the acceptable answers (MMSearch's alternatives)."""
    return max((f1_score(pred, g) for g in golds), default=0.0)


def score(text: str, gold: str, answer_type: AnswerType, choices: Sequence[str] | None = None) -> float:
    """Reward of a full response: 1.0 when its extracted answer matches ``gold``, else 0.0.

    ``f1`` is the exception: the reward is the token F1 in [0, 1], the best over ``gold`` and the
    alternative gold answers passed as ``choices`` (search benchmarks have no options, so the slot
    carries the alternatives). A response without an answer scores 0.0 under every type.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; expected one of {', '.join(ANSWER_TYPES)}")
    pred = extract_answer(text)
    if pred is None:
        return 0.0
    if answer_type == "f1":
        return match_f1(pred, [gold, *(choices or ())])
    if answer_type == "exact":
        ok = match_exact(pred, gold)
    elif answer_type == "numeric":
        ok = match_numeric(pred, gold)
    elif answer_type == "approx":
        ok = match_approx(pred, gold)
    elif answer_type == "contains":
        ok = match_contains(pred, gold)
    else:
        ok = match_choice(pred, gold, choices)
    return 1.0 if ok else 0.0


def score_question(text: str, question: Any) -> float:
    """`score` against a question's own gold answer, answer type and choices (any object with those
    fields: a suite's or a benchmark's `Question`). The rollout engine's default reward."""
    return score(text, question.answer, question.answer_type, question.choices)
