"""The multi-turn rollout engine: turns, tools and rewards over any `Generator`.

All live rollouts advance one assistant turn per step, as one batch. A turn ends at `</tool_call>` (the
engine runs the tool and appends its response, images included, as tokens), at `<|im_end|>` (the final
answer) or at a bound (turn limit, token limit: the rollout is marked truncated). Only tokens the policy
sampled get `loss_mask = 1`.

`continue_from` starts rollouts from a prefix of an existing one (AXPO's resampling, ARPO's branches): the
prefix's tokens, log-probs and images are copied as they are and prefilled once by the generator, never
decoded again. With a request's `feedback` (RLTF), the whole finished rollout is the prefix and the
feedback follows it as a user turn: the continuation is a second attempt.

The reward reads only the policy's final turn (`Trajectory.answer_text`): a tool's output that spells
`<answer>\\boxed{7}</answer>` is not the policy's answer. One rollout's failure (an image the processor
refuses, a reward function that raises, a request that breaks the generator's batch) ends that rollout
with `Trajectory.error`, and so does a failure to close its tools; the others go on.

With a `seed`, every turn's generation request carries its own seed, from the seed, its rollout (question
id, sample id) and its context length (`request_seed`): a rollout's samples do not depend on which other
rollouts ran with it, so questions can be split over workers without changing any trajectory. `rollout`
also takes one seed per question id: evaluation pools benchmarks into one run, each with its own seed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from axpo_core.config import RolloutConfig, SamplingConfig, ToolsConfig
from axpo_core.envs.suites import Question
from axpo_core.envs.tools import ToolResult, ToolSession, system_prompt, valid_text
from axpo_core.rewards import score_question
from axpo_core.rollout.chat import ChatFormat, EncodedImage
from axpo_core.rollout.generator import GenerationOutput, GenerationRequest, Generator, request_seed
from axpo_core.rollout.trajectory import UNCLOSED, UNOPENED, ContinuationRequest, Parent, Trajectory
from axpo_core.threads import available_cores

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class _Call:
    """A tool call a turn ended in: its token span and its text (None: a `</tool_call>` never opened)."""

    span: tuple[int, int]
    raw: str | None


@dataclass
class _Live:
    """A rollout in progress: its trajectory so far, its images as the model sees them, and its tools."""

    question: Question
    trajectory: Trajectory
    encoded: list[EncodedImage]
    tools: ToolSession
    turn_start: int  # index of the current assistant turn's first token
    done: bool = False
    tools_closed: bool = False


class RolloutEngine:
    def __init__(
        self,
        generator: Generator,
        chat: ChatFormat,
        rollout: RolloutConfig,
        tools: ToolsConfig,
        sampling: SamplingConfig | None = None,
        reward: Callable[[str, Question], float] = score_question,
        tool_threads: int | None = None,
    ):
        self.generator = generator
        # Tool calls of one turn run side by side (`_answer_calls`): they mostly wait on sandbox processes.
        self.tool_threads = tool_threads if tool_threads is not None else 2 * available_cores()
        self.reward = reward  # (the policy's final turn, its question) -> reward
        self.chat = chat
        self.config = rollout
        self.tools_config = tools
        self.sampling = sampling or rollout.sampling
        self.system = system_prompt(tools.enabled, compact=tools.descriptions == "compact")
        special = chat.special
        self.stop_ids = [special.tool_call_end, special.im_end, special.endoftext]

    # ---- public API -------------------------------------------------------------------------------
    def rollout(
        self, questions: Sequence[Question], group_size: int, seed: int | Mapping[str, int] | None = None
    ) -> list[Trajectory]:
        """`group_size` rollouts per question, sample ids 0..group_size-1, grouped by question id; `seed`
        seeds each request (module doc), or a question id's seed its rollouts', None leaves sampling to the
        generator."""
        live = []
        for question in questions:
            try:
                encoded = [self.chat.encode_image(img) for img in question.images]
                prompt = self.chat.prompt(self.system, question.text, encoded)
                failure = None
            except Exception as exc:  # noqa: BLE001 - one odd question must not end the batch
                encoded, failure = [], exc  # its rollouts end at once, on a bare prompt
                prompt = self.chat.prompt(self.system, "", [])
            for sample_id in range(group_size):
                trajectory = Trajectory(
                    question_id=question.question_id,
                    sample_id=sample_id,
                    token_ids=list(prompt),
                    logprobs=[0.0] * len(prompt),
                    entropies=[0.0] * len(prompt),
                    loss_mask=[0] * len(prompt),
                    prompt_len=len(prompt),
                    images=list(question.images) if failure is None else [],
                )
                live.append(
                    _Live(
                        question,
                        trajectory,
                        list(encoded),
                        self._tool_session(question.images),
                        turn_start=len(prompt),
                    )
                )
                if failure is not None:
                    self._fail(live[-1], failure)
        return self._run(live, seed)

    def continue_from(
        self,
        requests: Sequence[ContinuationRequest],
        questions: dict[str, Question],
        seed: int | None = None,
    ) -> list[Trajectory]:
        """`num_samples` continuations of `source[:prefix_tokens]` per request (see ContinuationRequest).

        The prefix may end anywhere inside the source's turns; its images are restored, but a python
        sandbox starts fresh (its variables are not part of the token prefix). A request with `feedback`
        closes the source's last turn if it is open, adds the feedback as a user turn (environment tokens)
        and the assistant header, and the second attempt's turn starts there.
        """
        live = []
        for request in requests:
            source = request.source
            cut = request.prefix_tokens
            if not source.prompt_len <= cut <= len(source.token_ids):
                raise ValueError(
                    f"prefix_tokens={cut} outside [{source.prompt_len}, {len(source.token_ids)}] for "
                    f"{source.question_id}/{source.sample_id}"
                )
            question = questions[source.question_id]
            prefix = source.token_ids[:cut]
            num_images = prefix.count(self.chat.special.vision_start)
            images = source.images[:num_images]
            encoded = [self.chat.encode_image(img) for img in images]
            turns_done = prefix[source.prompt_len :].count(self.chat.special.tool_response)
            turn_start = self._last_turn_start(prefix, source.prompt_len)
            spans = [span for span in source.tool_call_spans if span[1] <= cut]
            # A prefix ending in `</tool_call>` holds a call whose response is not in it yet.
            pending_call = prefix[-1] == self.chat.special.tool_call_end and request.feedback is None
            if pending_call:
                spans = [span for span in spans if span[1] < cut]
            prefix_text = self.chat.decode(prefix[source.prompt_len :])
            feedback = [] if request.feedback is None else self._feedback_turn(prefix, request.feedback)
            for k in range(request.num_samples):
                trajectory = Trajectory(
                    question_id=source.question_id,
                    sample_id=request.first_sample_id + k,
                    token_ids=list(prefix),
                    logprobs=source.logprobs[:cut],
                    entropies=source.entropies[:cut],
                    loss_mask=source.loss_mask[:cut],
                    prompt_len=source.prompt_len,
                    images=list(images),
                    tool_call_spans=list(spans),
                    tool_calls=source.tool_calls[: len(spans)],
                    tool_errors=source.tool_errors[: len(spans)],
                    tool_outcomes=source.tool_outcomes[: len(spans)],
                    tool_call_opened=source.tool_call_opened[: len(spans)],
                    turns=turns_done,
                    parent=Parent(source.sample_id, cut),
                    prefix_text=prefix_text,
                    group_id=request.group_id,
                )
                tools = self._tool_session(images)
                tools.num_calls = len(spans)
                r = _Live(question, trajectory, list(encoded), tools, turn_start=turn_start)
                live.append(r)
                if feedback:
                    self._append(r, feedback, None, None, policy=False)
                    r.turn_start = len(trajectory.token_ids)
                if pending_call:  # the environment answers before the policy goes on
                    trajectory.turns += 1
                    self._isolated(r, self._after_turn, r, True)
        return self._run(live, seed)

    # ---- the turn loop ----------------------------------------------------------------------------
    def _run(self, live: list[_Live], seed: int | Mapping[str, int] | None) -> list[Trajectory]:
        try:
            while active := [r for r in live if not r.done]:
                requests = []
                for r in active:
                    tokens = r.trajectory.token_ids
                    key = (r.trajectory.question_id, r.trajectory.sample_id)
                    base = seed[key[0]] if isinstance(seed, Mapping) else seed
                    budget = self.config.max_total_tokens - len(tokens)
                    requests.append(
                        GenerationRequest(
                            tokens,
                            r.encoded,
                            max(0, min(self.config.max_new_tokens_per_turn, budget)),
                            key,
                            None if base is None else request_seed(base, key, len(tokens)),
                        )
                    )
                for r, request in zip(active, requests):
                    if request.max_new_tokens == 0:
                        self._isolated(r, self._finish, r, True)
                ready = [(r, q) for r, q in zip(active, requests) if not r.done]
                if not ready:
                    continue
                calls = []
                for (r, _), output in zip(ready, self._generate(ready)):
                    if output is not None and (call := self._isolated(r, self._take_turn, r, output)):
                        calls.append((r, call))
                self._answer_calls(calls)
                for r in active:  # a finished rollout's sandbox ends now, not with the whole run
                    if r.done:
                        self._close_tools(r)
        finally:
            for r in live:
                self._close_tools(r)
        return [r.trajectory for r in live]

    def _close_tools(self, r: _Live) -> None:
        """Close one rollout's tools, once. What goes wrong there (a scratch folder that cannot be removed,
        say) is that rollout's error alone; every other rollout's tools are still closed."""
        if r.tools_closed:
            return
        r.tools_closed = True
        try:
            r.tools.close()
        except Exception as exc:  # noqa: BLE001 - one rollout's failure must not end the batch
            self._fail(r, exc, "its tools failed to close: ")

    def _generate(self, ready: list[tuple[_Live, GenerationRequest]]) -> list[GenerationOutput | None]:
        """One turn for every ready rollout. When the batch fails, each request is tried alone, so only
        the ones that fail alone end (output None); when every one fails alone, the error is the batch's."""
        try:
            return self.generator.generate([q for _, q in ready], self.sampling, self.stop_ids)
        except Exception as exc:  # noqa: BLE001 - find the rollout that broke the batch
            if len(ready) == 1:
                raise
            batch_error = exc
        outputs, failures = [], []
        for r, request in ready:
            try:
                outputs.append(self.generator.generate([request], self.sampling, self.stop_ids)[0])
            except Exception as exc:  # noqa: BLE001
                outputs.append(None)
                failures.append((r, exc))
        if len(failures) == len(ready):
            raise batch_error
        for r, exc in failures:
            self._fail(r, exc)
        return outputs

    def _take_turn(self, r: _Live, output: GenerationOutput) -> _Call | None:
        self._append(r, output.token_ids, output.logprobs, output.entropies, policy=True)
        r.trajectory.turns += 1
        return self._turn_call(r, output.stopped)

    def _isolated(self, r: _Live, step: Callable[..., _T], *args) -> _T | None:
        """`step(*args)` for one rollout; an exception ends that rollout alone (`_fail`) and gives None."""
        try:
            return step(*args)
        except Exception as exc:  # noqa: BLE001 - one rollout's failure must not end the batch
            self._fail(r, exc)
            return None

    def _answer_calls(self, calls: list[tuple[_Live, _Call]]) -> None:
        """Run the turn's tool calls side by side, then append each answer in rollout order.

        A python call waits on its sandbox process (start-up and run) most of its time, and a batch's
        calls are independent (one ToolSession per rollout), so they overlap on a thread pool; each
        rollout's tokens are appended after all of them in the batch's order, as before, so the
        trajectories do not depend on which call finished first."""
        if len(calls) > 1 and self.tool_threads > 1:
            with ThreadPoolExecutor(min(self.tool_threads, len(calls)), "axpo-tools") as pool:
                results = list(pool.map(lambda rc: self._run_call(*rc), calls))
        else:
            results = [self._run_call(r, call) for r, call in calls]
        for (r, call), result in zip(calls, results):
            if isinstance(result, BaseException):
                self._fail(r, result)
            else:
                self._isolated(r, self._answer_call, r, call, result)

    @staticmethod
    def _run_call(r: _Live, call: _Call) -> ToolResult | BaseException:
        try:
            return r.tools.unopened_call() if call.raw is None else r.tools.execute(call.raw)
        except Exception as exc:  # noqa: BLE001 - handed back, to end this rollout alone
            return exc

    def _fail(self, r: _Live, exc: BaseException, context: str = "") -> None:
        trajectory = r.trajectory
        message = valid_text(f"{context}{type(exc).__name__}: {exc}")
        trajectory.error = message if len(message) <= _MAX_ERROR_CHARS else message[:_MAX_ERROR_CHARS] + "..."
        trajectory.truncated, trajectory.reward, r.done = True, 0.0, True
        trajectory.text = self.chat.decode(trajectory.token_ids[trajectory.prompt_len :])
        log.warning(
            "rollout %s/%s ended with an error: %s", trajectory.question_id, trajectory.sample_id, message
        )

    def _after_turn(self, r: _Live, stopped: bool) -> None:
        """Whatever follows a turn, for one rollout: its tool call run and answered, or its end."""
        if call := self._turn_call(r, stopped):
            self._answer_calls([(r, call)])

    def _turn_call(self, r: _Live, stopped: bool) -> _Call | None:
        """The tool call that ends the turn just taken; None when the turn holds no complete call, and
        then the rollout is finished (a final answer, or out of tokens)."""
        special = self.chat.special
        trajectory = r.trajectory
        last = trajectory.token_ids[-1] if stopped else None
        turn = trajectory.token_ids[r.turn_start :]
        opening = len(turn) - 1 - turn[::-1].index(special.tool_call) if special.tool_call in turn else None
        if last != special.tool_call_end:
            # `<|im_end|>`/`<|endoftext|>`: the final answer; no stop id: the turn ran out of tokens. A
            # `<tool_call>` the turn opened and never closed is a format error (and tool use).
            if opening is not None:
                start = r.turn_start + opening
                self._record_call(
                    trajectory, (start, len(trajectory.token_ids)), self.chat.decode(turn[opening + 1 :]),
                    UNCLOSED, "format", opened=True,
                )
            self._finish(r, truncated=not stopped)
            return None
        end = len(trajectory.token_ids)
        if opening is None:  # a lone `</tool_call>`: the whole turn stands for the malformed call
            return _Call((r.turn_start, end), None)
        start = r.turn_start + opening
        return _Call((start, end), self.chat.decode(trajectory.token_ids[start + 1 : end - 1]))

    def _answer_call(self, r: _Live, call: _Call, result: ToolResult) -> None:
        """Record the call with its outcome and append the tool's response (or end the rollout)."""
        trajectory = r.trajectory
        if call.raw is None:
            self._record_call(trajectory, call.span, "", UNOPENED, "format", opened=False)
        else:
            self._record_call(trajectory, call.span, call.raw, result.error, result.outcome, opened=True)
        result_text, new_images = result.text, result.images  # capped by the tool session
        if trajectory.turns >= self.config.max_turns:
            self._finish(r, truncated=True)  # a tool call on the last allowed turn: no answer will come
            return
        encoded = [self.chat.encode_image(img) for img in new_images]
        response = self.chat.tool_response(result_text, encoded, close_turn=True)
        if len(trajectory.token_ids) + len(response) > self.config.max_total_tokens:
            self._finish(r, truncated=True)
            return
        trajectory.images.extend(new_images)
        r.encoded.extend(encoded)
        self._append(r, response, None, None, policy=False)
        r.turn_start = len(trajectory.token_ids)

    @staticmethod
    def _record_call(
        trajectory: Trajectory,
        span: tuple[int, int],
        raw: str,
        error: str | None,
        outcome: str,
        opened: bool,
    ) -> None:
        trajectory.tool_call_spans.append(span)
        trajectory.tool_calls.append(raw)
        trajectory.tool_errors.append(error)
        trajectory.tool_outcomes.append(outcome)
        trajectory.tool_call_opened.append(opened)

    def _finish(self, r: _Live, truncated: bool) -> None:
        trajectory = r.trajectory
        trajectory.truncated = truncated
        trajectory.text = self.chat.decode(trajectory.token_ids[trajectory.prompt_len :])
        final = range(r.turn_start, len(trajectory.token_ids))
        policy = [trajectory.token_ids[i] for i in final if trajectory.loss_mask[i]]
        trajectory.answer_text = self.chat.decode(policy)
        trajectory.reward = self.reward(trajectory.answer_text, r.question)
        r.done = True

    @staticmethod
    def _append(
        r: _Live, ids: list[int], logprobs: list[float] | None, entropies: list[float] | None, policy: bool
    ) -> None:
        trajectory = r.trajectory
        trajectory.token_ids.extend(ids)
        trajectory.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))
        trajectory.entropies.extend(entropies if entropies is not None else [0.0] * len(ids))
        trajectory.loss_mask.extend([1 if policy else 0] * len(ids))

    def _feedback_turn(self, prefix: list[int], feedback: str) -> list[int]:
        """The tokens after a finished rollout that carry a critique: `<|im_end|>` if its last turn is
        still open, the user turn with the feedback as plain text, then the assistant header."""
        s = self.chat.special
        close = [] if prefix[-1] in (s.im_end, s.endoftext) else [s.im_end]
        user = [s.im_start] + self.chat.text("user\n") + self.chat.literal(feedback) + [s.im_end]
        return close + self.chat.text("\n") + user + self.chat.text("\n") + self.chat.assistant_header()

    def _last_turn_start(self, prefix: list[int], prompt_len: int) -> int:
        """Start of the assistant turn a prefix ends in: after the last tool response's assistant header."""
        header = self.chat.assistant_header()
        special = self.chat.special
        if special.tool_response_end not in prefix[prompt_len:]:
            return prompt_len
        last_close = len(prefix) - 1 - prefix[::-1].index(special.tool_response_end)
        for i in range(last_close, len(prefix) - len(header) + 1):
            if prefix[i : i + len(header)] == header:
                return i + len(header)
        return len(prefix)

    def _tool_session(self, images: Sequence) -> ToolSession:
        t = self.tools_config
        return ToolSession(
            list(images),
            tools=t.enabled,
            max_calls=t.max_calls,
            max_image_pixels=t.max_image_pixels,
            python_timeout_s=t.python_timeout_s,
            python_memory_mb=t.python_memory_mb,
            python_max_output_chars=t.python_max_output_chars,
            python_allow_weak_isolation=t.python_allow_weak_isolation,
            search_index=t.search_index,
        )
