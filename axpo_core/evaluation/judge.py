"""Pluggable answer judges for evaluation (docs/design.md §6): rule-based by default, a local LLM by config.

A judge maps ``(question, response_text)`` to a reward in [0, 1], on the same scale as the rollout
engine's :func:`axpo_core.rewards.score_question`, so :func:`apply_judge` can overwrite trajectory rewards and
:func:`axpo_core.evaluation.runner.score_samples` counts pass@k unchanged.

- :class:`RuleJudge` scores a real benchmark's question with that benchmark's scorer (written after its
  official evaluation code, see :mod:`axpo_core.evaluation.benchmarks`) and anything else (the synthetic
  suites) with the engine's reward: answer extraction, normalisation and the rules of
  :mod:`axpo_core.rewards`.
- :class:`LLMJudge` asks a local transformers model (no network) whether the extracted answer matches
  the gold one, for benchmarks whose golds are hard to match by rule (VisualProbe, Math-VR,
  HR-MMSearch grade with an LLM). It never raises on model output: a missing answer, a generation
  failure or an unparseable verdict scores 0 and logs the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from axpo_core import rewards
from axpo_core.envs.suites import Question

if TYPE_CHECKING:
    from axpo_core.config import EvaluationConfig
    from axpo_core.rollout.trajectory import Trajectory

__all__ = ["Judge", "LLMJudge", "RuleJudge", "Verdict", "apply_judge", "make_judge", "parse_verdict"]

log = logging.getLogger(__name__)


class Judge(Protocol):
    def judge(self, question: Question, response_text: str) -> float:
        """The response's reward in [0, 1]."""
        ...


class RuleJudge:
    """Deterministic and free: the benchmark's own scorer for a real benchmark's question
    (:func:`axpo_core.evaluation.benchmarks.benchmark_score`), else the rollout engine's reward
    (:func:`axpo_core.rewards.score_question`)."""

    def judge(self, question: Question, response_text: str) -> float:
        from axpo_core.evaluation.benchmarks import benchmark_score

        scored = benchmark_score(question, response_text)
        return rewards.score_question(response_text, question) if scored is None else scored


@dataclass(frozen=True)
class Verdict:
    score: float
    reason: str  # why: "rule match", "llm: yes", "no answer", "unparseable verdict", ...
    raw: str = ""  # the judge model's output, when it was asked


_VERDICT_WORD = re.compile(r"\b(yes|no|correct|incorrect|true|false)\b", re.IGNORECASE)
_POSITIVE = {"yes", "correct", "true"}


def parse_verdict(text: str) -> int | None:
    """1 / 0 from a judge's reply, or None when it gives no verdict.

    Reasoning up to the last ``</think>`` is skipped (an unclosed ``<think>`` means the reply was cut
    before any verdict); the first verdict word after it decides ("Yes, it is correct" -> 1, "No. The correct
    answer is 5" -> 0), as HR-Bench's and Mini-o3's judges read the first word.
    """
    if "</think>" in text:  # closed reasoning, or reasoning the chat template opened for the model
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return None
    match = _VERDICT_WORD.search(text)
    if match is None:
        return None
    return int(match.group(1).lower() in _POSITIVE)


def _gold_description(question: Question) -> str:
    """The gold answer as a grader should read it: "B. red" for options, alternatives for F1."""
    if question.answer_type == "choice" and question.choices:
        gold = question.answer.strip().strip("()")
        if len(gold) == 1 and gold.isalpha() and ord(gold.upper()) - ord("A") < len(question.choices):
            return f"{gold.upper()}. {question.choices[ord(gold.upper()) - ord('A')]}"
        if question.answer in question.choices:
            return f"{chr(ord('A') + question.choices.index(question.answer))}. {question.answer}"
    if question.answer_type == "f1" and question.choices:
        return " or ".join([question.answer, *question.choices])
    return question.answer


SYSTEM = "You are a strict grader of answers. Reply with only yes or no."
TEMPLATE = (
    "Question: {question}\n"
    "Reference answer: {gold}\n"
    "Candidate answer: {candidate}\n"
    "Does the candidate answer mean the same as the reference answer? Reply yes or no."
)


class LLMJudge:
    """A local causal or vision-language model judging answer equivalence with a yes/no verdict.

    ``rule_first``: a response the rule judge already accepts scores 1 without asking the model (the
    model is only consulted where the rules say no). The verdict is binary: for ``f1`` questions a
    "yes" scores 1 and a "no" 0, whatever the token overlap. Greedy decoding, at most ``max_new_tokens``; chat
    templates are used when the tokenizer has one (with thinking disabled where the template supports
    it), plain ChatML otherwise.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        device: str = "auto",
        max_new_tokens: int = 256,
        rule_first: bool = True,
        max_question_chars: int = 4000,
    ):
        import torch
        from transformers import AutoTokenizer

        from axpo_core.models.loader import pick_device

        folder = Path(model_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder}: not a model folder (no config.json); check evaluation.judge_model_path"
            )
        self.path, self.max_new_tokens, self.rule_first = folder, max_new_tokens, rule_first
        self.max_question_chars = max_question_chars
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = self._load_model(folder).to(self.device).eval()
        self._torch = torch
        stops = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
        unk = self.tokenizer.unk_token_id
        self._stop_ids = [t for t in stops if isinstance(t, int) and t >= 0 and t != unk] or None
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else (self._stop_ids[0] if self._stop_ids else 0)

    @staticmethod
    def _load_model(folder: Path) -> Any:
        """A causal LM when the config is one, else an image-text-to-text model (e.g. Qwen3-VL)."""
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

        try:
            return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        except ValueError:  # "Unrecognized configuration class ... for AutoModelForCausalLM"
            return AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)

    def judge(self, question: Question, response_text: str) -> float:
        return self.verdict(question, response_text).score

    def verdict(self, question: Question, response_text: str) -> Verdict:
        """The score with its reason; never raises on the response or the judge model's output."""
        candidate = rewards.extract_answer(response_text)
        if candidate is None:
            return self._log(question, Verdict(0.0, "no answer in the response"))
        if self.rule_first and RuleJudge().judge(question, response_text) >= 1.0:
            return Verdict(1.0, "rule match")
        prompt = TEMPLATE.format(
            question=question.text[: self.max_question_chars],
            gold=_gold_description(question),
            candidate=candidate,
        )
        try:
            raw = self._generate(prompt)
        except Exception as exc:  # a judge failure must not end an evaluation
            return self._log(question, Verdict(0.0, f"judge model failed: {type(exc).__name__}: {exc}"))
        parsed = parse_verdict(raw)
        if parsed is None:
            return self._log(question, Verdict(0.0, "unparseable verdict", raw))
        return Verdict(float(parsed), f"llm: {'yes' if parsed else 'no'}", raw)

    def _prompt_text(self, prompt: str) -> str:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n"

    def _generate(self, prompt: str) -> str:
        encoded = self.tokenizer(self._prompt_text(prompt), return_tensors="pt", add_special_tokens=False)
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        with self._torch.no_grad():
            out = self.model.generate(
                **encoded,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self._stop_ids,
                pad_token_id=self._pad_id,
            )
        new = out[0, encoded["input_ids"].shape[1] :]
        text = self.tokenizer.decode(new, skip_special_tokens=False)  # keep <think> markers for the parser
        for special in ("<|im_end|>", "<|endoftext|>", self.tokenizer.eos_token, self.tokenizer.pad_token):
            if special:
                text = text.replace(special, " ")
        return text.strip()

    @staticmethod
    def _log(question: Question, verdict: Verdict) -> Verdict:
        log.info("LLM judge scored %s as 0: %s %r", question.question_id, verdict.reason, verdict.raw[:200])
        return verdict


def make_judge(evaluation: EvaluationConfig, device: str = "auto") -> Judge:
    """The judge ``evaluation.judge`` names; ``llm`` needs ``evaluation.judge_model_path``."""
    if evaluation.judge == "rule":
        return RuleJudge()
    if evaluation.judge_model_path is None:
        raise ValueError("evaluation.judge is 'llm': set evaluation.judge_model_path to a local model folder")
    return LLMJudge(evaluation.judge_model_path, device=device)


def apply_judge(judge: Judge, questions: Sequence[Question], trajectories: Sequence[Trajectory]) -> None:
    """Re-score finished trajectories in place (``reward``), e.g. with an LLM judge after rollout."""
    by_id = {q.question_id: q for q in questions}
    for trajectory in trajectories:
        # the policy's final turn, as the engine's reward: `text` also holds tool output
        trajectory.reward = judge.judge(by_id[trajectory.question_id], trajectory.answer_text)
