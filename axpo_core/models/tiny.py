"""Tiny Qwen3-VL-family policies, built from a config with a locally trained tokenizer.

Nothing is downloaded: the architecture is transformers' own `Qwen3VLForConditionalGeneration`, sized down;
the tokenizer is a byte-level BPE trained here on the suites' text with the special tokens of the rollout
format (DESIGN §3); the image processor is the PIL Qwen2-VL one (torchvision-free). The saved folder
reloads offline through the same `load_policy` that loads a real Qwen3-VL checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# The rollout format's special tokens, in Qwen's spelling, so real checkpoints and tiny ones share code.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]


@dataclass(frozen=True)
class TinyScale:
    """Sizes of one tiny scale; `mrope_section` sums to head_dim / 2 as Qwen3-VL requires."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vocab_size: int = 2048
    # In-context recall pretraining before the model is saved (models/pretrain.py): the Base's one skill;
    # at most this many steps (tiny-s seeds 0-2 took 1,400-1,500).
    recall_pretrain_steps: int = 4000

    @property
    def mrope_section(self) -> list[int]:
        half = self.head_dim // 2
        temporal = half - 2 * (3 * half // 8)
        return [temporal, 3 * half // 8, 3 * half // 8]


TINY_SCALES: dict[str, TinyScale] = {
    "tiny-s": TinyScale(
        hidden=96,
        layers=2,
        heads=4,
        kv_heads=2,
        # 32, not hidden/heads = 24: vLLM's CPU attention has kernels for head sizes 32, 64, 80, ... only.
        # 24 was toy world v1 (before 2026-12-08); v2 changes nothing else.
        head_dim=32,
        intermediate=256,
        vision_hidden=64,
        vision_depth=2,
        vision_heads=2,
    ),
    "tiny-m": TinyScale(
        hidden=256,
        layers=4,
        heads=8,
        kv_heads=4,
        head_dim=32,
        intermediate=768,
        vision_hidden=128,
        vision_depth=2,
        vision_heads=4,
    ),
    "tiny-l": TinyScale(
        hidden=512,
        layers=5,
        heads=8,
        kv_heads=4,
        head_dim=64,
        intermediate=1280,
        vision_hidden=256,
        vision_depth=4,
        vision_heads=4,
    ),
}

PATCH_SIZE = 16
INITIALIZER_RANGE = 0.08  # std of the language model's initial weights
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2


def default_corpus(num_questions: int = 48, seed: int = 0) -> list[str]:
    """Text the tiny tokenizer is trained on: the system prompt and the suites' questions and oracle turns."""
    from axpo_core.envs.suites import SUITES
    from axpo_core.envs.tools import system_prompt

    rng = random.Random(seed)
    corpus = [system_prompt(), system_prompt(compact=True)]
    for suite in SUITES.values():
        for question in suite.generate(num_questions, seed):
            corpus.append(question.text)
            corpus.extend(suite.oracle(question, rng))
            corpus.extend(suite.no_tool_oracle(question, rng))
    return corpus


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Byte-level BPE (like Qwen's) trained on `corpus`; special tokens get the first ids."""
    tokenizer = Tokenizer(models.BPE())
    # Digits one by one, as Qwen's own pre-tokenizer splits them: a number is the same tokens wherever it
    # stands (" 10" in a sentence, "10" in a tool's output or in \boxed{}), so copying one is copying tokens.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|endoftext|>", "<|im_end|>")],
        clean_up_tokenization_spaces=False,
    )


def tiny_config(scale: str, tokenizer: PreTrainedTokenizerFast):
    """A `Qwen3VLConfig` for a tiny scale whose vocabulary and special ids match `tokenizer`."""
    from transformers import Qwen3VLConfig

    if scale not in TINY_SCALES:
        raise ValueError(f"unknown tiny scale {scale!r}; known: {', '.join(TINY_SCALES)}")
    s = TINY_SCALES[scale]
    ids = tokenizer.convert_tokens_to_ids
    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=s.hidden,
            intermediate_size=s.intermediate,
            num_hidden_layers=s.layers,
            num_attention_heads=s.heads,
            num_key_value_heads=s.kv_heads,
            head_dim=s.head_dim,
            max_position_embeddings=8192,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": s.mrope_section,
                "mrope_interleaved": True,
            },
            pad_token_id=ids("<|endoftext|>"),
            # transformers' default std (0.02) is sized for wide models: at hidden 96 and 0.02, seed 2 formed
            # no induction head in 2,000 steps of recall pretraining; at 0.08 seeds 0-3 did (pretrain.py).
            initializer_range=INITIALIZER_RANGE,
        ),
        vision_config=dict(
            depth=s.vision_depth,
            hidden_size=s.vision_hidden,
            intermediate_size=2 * s.vision_hidden,
            num_heads=s.vision_heads,
            patch_size=PATCH_SIZE,
            spatial_merge_size=MERGE_SIZE,
            temporal_patch_size=TEMPORAL_PATCH_SIZE,
            out_hidden_size=s.hidden,
            num_position_embeddings=256,  # a perfect square: a 16x16 grid, interpolated for other sizes
            deepstack_visual_indexes=[s.vision_depth - 1],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def tiny_image_processor(max_pixels: int = 128 * 128, min_pixels: int = 32 * 32):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=PATCH_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        merge_size=MERGE_SIZE,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )


def build_tiny(
    scale: str,
    out_dir: str | Path,
    seed: int = 0,
    corpus: Iterable[str] | None = None,
    pretrain_steps: int | None = None,
) -> Path:
    """Build a tiny scale from scratch, pretrain it on in-context recall (`pretrain_steps`, default the
    scale's; 0 for an untrained model, as unit tests use) and save model, tokenizer and image processor."""
    from transformers import Qwen3VLForConditionalGeneration

    from axpo_core.models.pretrain import pretrain_in_context_recall, recall_vocab

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(
        corpus if corpus is not None else default_corpus(seed=seed),
        TINY_SCALES[scale].vocab_size if scale in TINY_SCALES else 2048,
    )
    config = tiny_config(scale, tokenizer)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    steps = TINY_SCALES[scale].recall_pretrain_steps if pretrain_steps is None else pretrain_steps
    if steps > 0:
        pretrain_in_context_recall(model, recall_vocab(tokenizer), steps, seed=seed).save(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    tiny_image_processor().save_pretrained(out)
    return out
