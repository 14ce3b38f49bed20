"""The default `Generator`: batched decoding on the training module itself (CPU or one GPU).

Each call prefills its left-padded batch once (prompt, or a prefix to continue from, with all its images)
and decodes with the KV cache; per-token log-probs come from the raw logits of each step. Greedy and
seeded requests (every request the pipeline sends) decode in `decode_dropping_finished`, `generate`'s
loop whose finished rows leave the batch; unseeded sampling (the global RNG) goes through
`model.generate` itself, and so does everything with `drop_finished=False`.

Shared prefills (`share_prefill`, the default): a group's N rollouts send the same prompt, and AXPO's K
continuations the same prefix. When a batch holds such duplicates (same token ids and the same image
objects), the unique contexts are prefilled once, all but their last token, with their images; the KV
cache's rows are then copied to every request (`DynamicCache.batch_select_indices`) and decoding
goes on from that cache: its first step forwards each row's last context token, then it decodes as usual.
Positions are passed to `generate` as the [4, B, T] M-RoPE ids it would compute itself (text positions
from the attention mask, vision positions from `get_rope_index`), so no image needs to be seen again and
Qwen3-VL's `rope_deltas` module state is not read. The result equals the unshared path's within float
tolerance: the last context token's logits come from a one-token step rather than from the whole prefill,
a different reduction order (about 1e-6), so a sampled token differs only at a near-tie of its noisy
logits. Batches without duplicates (later turns, mostly) take the unshared path.

Seeded requests sample by Gumbel-max: each row adds noise from its own `torch.Generator` to its warped
logits and takes the argmax, which is a draw from softmax(warped logits). A row's tokens then depend on its
seed alone, not on which other requests share its batch, shard or worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from axpo_core.config import SamplingConfig
from axpo_core.models.loader import Policy
from axpo_core.rollout.generator import GenerationOutput, GenerationRequest, request_seed
from axpo_core.rollout.logprobs import PackedBatch, pack, reset_rope_cache, token_logprobs_and_entropy


class PresencePenalty(LogitsProcessor):
    """vLLM/OpenAI presence penalty: subtract `penalty` once from every token already generated this turn."""

    def __init__(self, penalty: float, prompt_width: int):
        self.penalty = penalty
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width :]
        if generated.numel() == 0:
            return scores
        seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
        return scores - self.penalty * seen.to(scores.dtype)


class PerRowGumbel(LogitsProcessor):
    """The last processor of seeded sampling: Gumbel noise, one generator per row (see the module doc)."""

    def __init__(self, seeds: Sequence[int], device: torch.device):
        self.generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]

    def keep_rows(self, rows: Sequence[int]) -> None:
        """The batch lost its other rows (`decode_dropping_finished`): their generators go with them."""
        self.generators = [self.generators[i] for i in rows]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[1]
        uniform = torch.stack(
            [torch.rand(vocab, generator=g, device=scores.device) for g in self.generators]
        ).clamp_(min=torch.finfo(torch.float32).tiny)
        return scores.float() - torch.log(-torch.log(uniform))


_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _model_lock(model: torch.nn.Module) -> threading.Lock:
    """One lock per module: Qwen3-VL keeps M-RoPE state on the module, so two threads must not interleave
    generate calls on the same model (evaluation fans out over threads)."""
    with _locks_guard:
        return _locks.setdefault(id(model), threading.Lock())


class TransformersGenerator:
    """A request's own `seed` wins; else `seed` (optional) seeds each request from itself (request_seed), so
    results do not depend on the batch, thread or process (threads, Dask, Ray) that ran it, nor on what ran
    before. With neither, sampling draws from the global torch RNG."""

    def __init__(
        self,
        policy: Policy,
        batch_size: int = 32,
        seed: int | None = None,
        share_prefill: bool = True,
        drop_finished: bool = True,
    ):
        self.policy = policy
        self.batch_size = batch_size
        self.seed = seed
        self.share_prefill = share_prefill  # False: every request prefills its own context (the module doc)
        # False: `model.generate` decodes every batch (the oracle the own loop is tested against)
        self.drop_finished = drop_finished
        self._lock = _model_lock(policy.model)

    def sync_weights(self) -> None:
        """Generation runs on the training module itself: nothing to copy."""

    @torch.no_grad()
    def generate(
        self, requests: Sequence[GenerationRequest], sampling: SamplingConfig, stop_ids: Sequence[int]
    ) -> list[GenerationOutput]:
        outputs: list[GenerationOutput | None] = [None] * len(requests)
        # Similar lengths share a batch: less padding to prefill.
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].token_ids))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = [requests[i] for i in chunk]
            with self._lock:
                generated = self._generate_batch(batch, sampling, stop_ids)
            for index, output in zip(chunk, generated):
                outputs[index] = output
        return outputs  # type: ignore[return-value]

    def _seeds(self, requests: Sequence[GenerationRequest]) -> list[int] | None:
        """Each request's sampling seed, or None (no seeds at all: the global RNG, as `model.generate`)."""
        if self.seed is None and all(r.seed is None for r in requests):
            return None
        seeds = []
        for r in requests:
            if r.seed is not None:
                seeds.append(r.seed)
            elif self.seed is not None:
                seeds.append(request_seed(self.seed, r.rollout_key, len(r.token_ids)))
            else:  # an unseeded request batched with seeded ones: noise from the global RNG
                seeds.append(int(torch.randint(2**62, ())))
        return seeds

    def _generate_batch(
        self, requests: list[GenerationRequest], sampling: SamplingConfig, stop_ids: Sequence[int]
    ) -> list[GenerationOutput]:
        policy = self.policy
        special = policy.special
        inputs = self._shared_prefill(requests) if self.share_prefill else None
        greedy = sampling.temperature <= 1e-5
        seeds = None if greedy else self._seeds(requests)
        own_loop = self.drop_finished and (greedy or seeds is not None)
        if inputs is None:
            packed = self._pack(requests)
            inputs = packed.model_inputs()
            if own_loop:  # the loop passes positions itself, as `generate` computes them
                inputs["position_ids"] = _generation_positions(policy.model, packed)
        width = inputs["input_ids"].shape[1]
        processors = LogitsProcessorList()
        if sampling.presence_penalty:
            processors.append(PresencePenalty(sampling.presence_penalty, width))
        warpers = {
            "temperature": None if greedy else sampling.temperature,
            "top_p": sampling.top_p if (not greedy and sampling.top_p < 1.0) else None,
            "top_k": sampling.top_k if (not greedy and sampling.top_k > 0) else None,
        }
        if seeds is not None:  # the same warpers, then per-row noise and an argmax (do_sample=False)
            processors.extend(_warpers(**warpers))
            processors.append(PerRowGumbel(seeds, policy.device))
            warpers = {"temperature": None, "top_p": None, "top_k": None}
        reset_rope_cache(policy.model)
        temperature = 1.0 if greedy else sampling.temperature
        if own_loop:
            suppress = SuppressTokensLogitsProcessor(special.never_sampled(), device=policy.device)
            new_tokens, logprobs, entropies = decode_dropping_finished(
                policy.model,
                inputs,
                LogitsProcessorList([suppress, *processors]),  # `generate`'s order: its own, then ours
                [r.max_new_tokens for r in requests],
                stop_ids,
                special.pad,
                lambda logits, chosen: token_logprobs_and_entropy(
                    logits, chosen, temperature, special.never_sampled()
                ),
            )
        else:
            result = policy.model.generate(
                **inputs,
                max_new_tokens=max(r.max_new_tokens for r in requests),
                do_sample=not greedy and seeds is None,
                **warpers,
                eos_token_id=list(stop_ids),
                pad_token_id=special.pad,
                suppress_tokens=special.never_sampled(),
                logits_processor=processors,
                output_logits=True,
                return_dict_in_generate=True,
            )
            new_tokens = result.sequences[:, width:]
            if new_tokens.shape[1] > 0:
                logits = torch.stack(result.logits, dim=1)  # [B, new, V]
                logprobs, entropies = token_logprobs_and_entropy(
                    logits, new_tokens, temperature, special.never_sampled()
                )
        if new_tokens.shape[1] == 0:
            return [GenerationOutput([], [], [], False) for _ in requests]
        stops = set(stop_ids)
        outputs = []
        for row, request in enumerate(requests):
            ids = new_tokens[row].tolist()
            end = min(len(ids), request.max_new_tokens)
            stopped = False
            for i, token in enumerate(ids[:end]):
                if token in stops:
                    end, stopped = i + 1, True
                    break
            outputs.append(
                GenerationOutput(
                    ids[:end], logprobs[row, :end].tolist(), entropies[row, :end].tolist(), stopped
                )
            )
        return outputs

    def _pack(self, requests: Sequence[GenerationRequest]) -> PackedBatch:
        """Requests' contexts left-padded to one batch, with their images."""
        special = self.policy.special
        return pack(
            [r.token_ids for r in requests],
            [r.images for r in requests],
            special.pad,
            special.image_pad,
            side="left",
            device=self.policy.device,
        )

    def _shared_prefill(self, requests: list[GenerationRequest]) -> dict[str, Any] | None:
        """`generate`'s inputs for the whole batch with its KV cache prefilled once per unique context (the
        module doc), or None when sharing saves nothing or does not apply."""
        firsts: dict[tuple, int] = {}
        rows = [
            firsts.setdefault((tuple(r.token_ids), tuple(id(img) for img in r.images)), len(firsts))
            for r in requests
        ]
        if len(firsts) == len(requests):
            return None
        policy = self.policy
        prompts = self._pack([requests[rows.index(u)] for u in range(len(firsts))])  # each context's first
        # The last column is every row's last context token (left padding): `generate` forwards it, so it must
        # be text, and there must be something before it to cache.
        if prompts.input_ids.shape[1] < 2 or bool(prompts.mm_token_type_ids[:, -1].any()):
            return None
        positions = _generation_positions(policy.model, prompts)
        prefill: dict[str, torch.Tensor | None] = {key: getattr(prompts, key)[:, :-1] for key in _PER_TOKEN}
        if prompts.pixel_values is not None:
            prefill.update(pixel_values=prompts.pixel_values, image_grid_thw=prompts.image_grid_thw)
        reset_rope_cache(policy.model)
        cache = policy.model(
            **prefill, position_ids=positions[..., :-1], use_cache=True, logits_to_keep=1
        ).past_key_values
        index = torch.tensor(rows, device=policy.device)
        cache.batch_select_indices(index)  # row i of the batch gets its context's cached keys and values
        inputs = {key: getattr(prompts, key).index_select(0, index) for key in _PER_TOKEN}
        return {**inputs, "position_ids": positions.index_select(1, index), "past_key_values": cache}


_PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids")
_DROP_SHARE = 8  # the finished rows leave the batch once they are 1/8 of it (a KV-cache copy each time)


@torch.no_grad()
def decode_dropping_finished(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    processors: LogitsProcessorList,
    max_new_tokens: Sequence[int],
    stop_ids: Sequence[int],
    pad: int,
    score: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy or Gumbel-max decoding, as `model.generate(do_sample=False)` does it, except that rows leave
    the batch once they have finished (a stop id, or their own `max_new_tokens`).

    `generate` decodes every row until the last one stops; in a batch of multi-turn rollouts, where most
    turns are short and a few run to the token limit, half of its decode steps' rows were rows that had
    already finished (measured on an evaluation stage of make run). Here, once the finished rows are
    1/_DROP_SHARE of the batch, they are dropped from the KV cache (`DynamicCache.batch_select_indices`),
    the attention mask, the positions and the per-row state of the processors (`PerRowGumbel.keep_rows`).
    The rows that go on see the same context, positions and noise as in `generate`, so they sample the same
    tokens up to float noise of the smaller batch (about 1e-6 in a logit).

    `inputs` are `generate`'s, with `position_ids` ([4, B, T], `_generation_positions`) and optionally a
    `past_key_values` holding all but the last context token (`_shared_prefill`). `score(raw logits [n, V],
    chosen [n])` gives each chosen token's log-prob and its distribution's entropy, step by step for the
    rows still decoding. Returns the new tokens [B, L] (`pad` after a row's end), their log-probs and
    entropies [B, L] (0 after a row's end)."""
    ids, mask, positions = inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"]
    batch, device = ids.shape[0], ids.device
    longest = max(max_new_tokens, default=0)
    if longest == 0:
        empty = torch.empty((batch, 0), device=device)
        return empty.long(), empty, empty
    if inputs.get("past_key_values") is None:  # the whole context at once, then one token per step
        out = model(**inputs, use_cache=True, logits_to_keep=1)
    else:  # the cache holds all but the last context token
        out = model(
            input_ids=ids[:, -1:],
            attention_mask=mask,
            position_ids=positions[..., -1:],
            past_key_values=inputs["past_key_values"],
            use_cache=True,
        )
    cache = out.past_key_values
    tokens = torch.full((batch, longest), pad, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, longest), device=device)
    entropies = torch.zeros((batch, longest), device=device)
    rows = torch.arange(batch, device=device)  # the batch row of each row still decoding
    budgets = torch.tensor(list(max_new_tokens), device=device)
    stops = torch.tensor(list(stop_ids), device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    position = positions[..., -1:]  # [4, rows, 1]
    gumbel = next((p for p in processors if isinstance(p, PerRowGumbel)), None)
    for step in range(longest):
        logits = out.logits[:, -1].float()  # the raw logits, scored below: processors get a copy
        chosen = processors(ids, logits.clone()).argmax(-1)
        chosen = chosen.masked_fill(finished, pad)  # as `generate` pads a finished row
        tokens[rows, step] = chosen
        logprobs[rows, step], entropies[rows, step] = score(logits, chosen)
        ids = torch.cat([ids, chosen[:, None]], dim=1)
        finished = finished | torch.isin(chosen, stops) | (budgets[rows] <= step + 1)
        if bool(finished.all()) or step + 1 == longest:
            break
        if int(finished.sum()) * _DROP_SHARE >= len(rows):
            keep = (~finished).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            ids, mask, rows, finished = ids[keep], mask[keep], rows[keep], finished[keep]
            position = position[:, keep]
            if gumbel is not None:
                gumbel.keep_rows(keep.tolist())
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        position = position + 1
        out = model(
            input_ids=ids[:, -1:],
            attention_mask=mask,
            position_ids=position,
            past_key_values=cache,
            use_cache=True,
        )
    return tokens[:, : step + 1], logprobs[:, : step + 1], entropies[:, : step + 1]


def _generation_positions(model: torch.nn.Module, batch: PackedBatch) -> torch.Tensor:
    """The [4, B, T] position ids `generate` computes for a left-padded batch before its prefill: text
    positions from the attention mask, then Qwen3-VL's three M-RoPE rows (`get_rope_index`, which places
    image tokens on their grid), or the text positions again when the batch has no image."""
    mask = batch.attention_mask
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    if batch.image_grid_thw is None:
        vision = text.unsqueeze(0).expand(3, -1, -1)
    else:
        vision, _ = model.model.get_rope_index(
            batch.input_ids,
            mm_token_type_ids=batch.mm_token_type_ids,
            image_grid_thw=batch.image_grid_thw,
            attention_mask=mask,
        )
    return torch.cat([text.unsqueeze(0), vision], dim=0)


def _warpers(temperature: float | None, top_p: float | None, top_k: int | None) -> list[LogitsProcessor]:
    """The warpers `model.generate(do_sample=True)` would apply, in its order."""
    chosen: list[LogitsProcessor] = []
    if temperature is not None and temperature != 1.0:
        chosen.append(TemperatureLogitsWarper(temperature))
    if top_k is not None:
        chosen.append(TopKLogitsWarper(top_k))
    if top_p is not None:
        chosen.append(TopPLogitsWarper(top_p))
    return chosen
