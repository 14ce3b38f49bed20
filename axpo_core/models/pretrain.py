"""In-context recall pretraining: the one generic skill a tiny Base model gets before SFT.

A real Qwen3-VL Base comes out of pretraining able to copy from its context (induction heads, Olsson et
al. 2022, "In-context Learning and Induction Heads"): a name from the question into a search query, a
number from a tool's output into `\\boxed{}`. A randomly initialised tiny model cannot, and the SFT set does
not teach it: after SFT, tiny-s wrote "The code printed 74." right under a tool response of 66, and searched
"Zelvik" for a question about "Torvik". So a tiny build ends with a short pretraining on text that holds
nothing of the suites: random token spans, each repeated after a random gap, with the loss on the
repeated span's tokens after its first, which only copying can predict (the first is unpredictable).

Two phases. Short sequences until the induction head has formed: a plateau, then a sudden drop of the loss
(Olsson et al.), here within 1,000-1,100 steps for seeds 0-3 (tiny.py's initialisation scale; at transformers'
default 0.02, seed 2 had formed none after 2,000 steps). Then long sequences, for copying over a
rollout's distances (a question to its search query, a tool response to the answer), where a head trained
on short ones copies ~55%. The steps and the held-out copy accuracy are saved with the model
(`pretraining.json`).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

IGNORE = -100
SHORT, LONG = (64, 32), (256, 8)  # (tokens per sequence, sequences per batch)
LONG_STEPS = 400
FORMED = 0.5  # held-out copy accuracy on short sequences that ends the first phase (~0 on the plateau)
CHECK_EVERY = 100
LEARNING_RATE = 3e-3
WARMUP_STEPS = 50
SPAN_LENGTH = (4, 16)  # tokens copied per repeat
GAP_LENGTH = (1, 16)  # random tokens between a span and its repeat


@dataclass(frozen=True)
class RecallPretraining:
    short_steps: int
    long_steps: int
    final_loss: float
    copy_accuracy: float  # greedy next-token accuracy on the copyable tokens of a held-out long batch

    def save(self, folder: str | Path) -> None:
        (Path(folder) / "pretraining.json").write_text(json.dumps(asdict(self), indent=1) + "\n")


def recall_vocab(tokenizer) -> list[int]:
    """The token ids recall sequences draw from: every id but the special tokens."""
    special = set(tokenizer.all_special_ids)
    return [i for i in range(len(tokenizer)) if i not in special]


def recall_sequence(rng: random.Random, vocab: list[int], length: int) -> tuple[list[int], list[int]]:
    """One sequence of `span, gap, span` blocks (all random tokens) and its labels: the repeated span's
    tokens after its first; everything else is IGNORE."""
    ids: list[int] = []
    labels: list[int] = []
    while len(ids) < length:
        span = [rng.choice(vocab) for _ in range(rng.randint(*SPAN_LENGTH))]
        gap = [rng.choice(vocab) for _ in range(rng.randint(*GAP_LENGTH))]
        ids += span + gap + span
        labels += [IGNORE] * (len(span) + len(gap) + 1) + span[1:]
    return ids[:length], labels[:length]


def recall_batch(rng: random.Random, vocab: list[int], shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    length, batch_size = shape
    rows = [recall_sequence(rng, vocab, length) for _ in range(batch_size)]
    return torch.tensor([ids for ids, _ in rows]), torch.tensor([labels for _, labels in rows])


def _next_token_logits_and_targets(model, ids: torch.Tensor, labels: torch.Tensor):
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    return logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)


@torch.no_grad()
def copy_accuracy(model, vocab: list[int], seed: int, shape: tuple[int, int] = LONG) -> float:
    """Greedy accuracy on the copyable tokens of a fresh batch (its own seed: never trained on)."""
    was_training = model.training
    model.eval()
    ids, labels = recall_batch(random.Random(f"held-out-{seed}"), vocab, shape)
    logits, targets = _next_token_logits_and_targets(model, ids, labels)
    mask = targets != IGNORE
    model.train(was_training)
    return (logits.argmax(-1)[mask] == targets[mask]).float().mean().item()


def pretrain_in_context_recall(model, vocab: list[int], max_steps: int, seed: int = 0) -> RecallPretraining:
    """AdamW on next-token loss over recall sequences of `vocab` (the non-special tokens): short ones until
    the held-out copy accuracy reaches FORMED (checked every CHECK_EVERY steps), then LONG_STEPS long
    ones; at most `max_steps` in all (the long phase: at most a fifth of them)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS))
    loss = torch.tensor(float("nan"))

    def step(shape: tuple[int, int]) -> torch.Tensor:
        logits, targets = _next_token_logits_and_targets(model, *recall_batch(rng, vocab, shape))
        loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    model.train()  # copy_accuracy restores it after each check
    long_steps = min(LONG_STEPS, max_steps // 5)
    short_steps = 0
    while short_steps < max_steps - long_steps:
        loss = step(SHORT)
        short_steps += 1
        if short_steps % CHECK_EVERY == 0 and copy_accuracy(model, vocab, seed, SHORT) >= FORMED:
            break
    for _ in range(long_steps):
        loss = step(LONG)
    model.eval()
    accuracy = copy_accuracy(model, vocab, seed)
    return RecallPretraining(short_steps, long_steps, round(loss.item(), 4), round(accuracy, 4))
