"""One loader for every policy: a tiny built scale or a real Qwen3-VL checkpoint from a local folder."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from axpo_core.models.tiny import TINY_SCALES, build_tiny

# Real scales (docs/design.md §5): the Thinking checkpoints the paper trains, plus the 32B comparison row.
REAL_SCALES = {
    "qwen3vl-2b": "Qwen/Qwen3-VL-2B-Thinking",
    "qwen3vl-4b": "Qwen/Qwen3-VL-4B-Thinking",
    "qwen3vl-8b": "Qwen/Qwen3-VL-8B-Thinking",
    "qwen3vl-32b": "Qwen/Qwen3-VL-32B-Thinking",
}


@dataclass(frozen=True)
class SpecialIds:
    """The token ids the rollout engine and the algorithms need, read from the tokenizer (tiny and real agree
    on the names): the engine's turn and image markers, AXPO's cuts (`tool_call`, `think_end`), and the
    vocabulary size ARPO normalizes its entropies by (0: not normalized)."""

    pad: int
    im_start: int
    im_end: int
    endoftext: int
    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int
    tool_call: int
    tool_call_end: int
    tool_response: int
    tool_response_end: int
    think: int
    think_end: int
    vocab_size: int = 0

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> SpecialIds:
        names = {
            "im_start": "<|im_start|>",
            "im_end": "<|im_end|>",
            "endoftext": "<|endoftext|>",
            "vision_start": "<|vision_start|>",
            "vision_end": "<|vision_end|>",
            "image_pad": "<|image_pad|>",
            "video_pad": "<|video_pad|>",
            "tool_call": "<tool_call>",
            "tool_call_end": "</tool_call>",
            "tool_response": "<tool_response>",
            "tool_response_end": "</tool_response>",
            "think": "<think>",
            "think_end": "</think>",
        }
        ids: dict[str, int] = {}
        for field_name, token in names.items():
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(
                    f"tokenizer has no single token for {token!r}; a Qwen3-VL tokenizer is required"
                )
            ids[field_name] = int(token_id)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids["endoftext"]
        return cls(pad=int(pad), vocab_size=len(tokenizer), **ids)

    def never_sampled(self) -> list[int]:
        """Ids the policy must never emit: the engine inserts these itself (images, tool responses, turns)."""
        return [
            self.im_start,
            self.vision_start,
            self.vision_end,
            self.image_pad,
            self.video_pad,
            self.tool_response,
            self.tool_response_end,
        ]


@dataclass
class Policy:
    model: Any  # Qwen3VLForConditionalGeneration
    tokenizer: Any
    image_processor: Any
    special: SpecialIds
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_policy(
    path: str | Path,
    *,
    device: str = "auto",
    dtype: str = "float32",
    max_image_pixels: int | None = None,
    min_image_pixels: int | None = None,
) -> Policy:
    """Load model, tokenizer and PIL image processor from a local folder, offline.

    `max_image_pixels` overrides the processor's max_pixels: it is what makes fine detail invisible without
    the zoom tool, so experiments set it explicitly.
    """
    from transformers import Qwen3VLForConditionalGeneration

    folder = Path(path)
    tokenizer, image_processor = load_processors(folder, max_image_pixels, min_image_pixels)
    model = Qwen3VLForConditionalGeneration.from_pretrained(
        folder, dtype=getattr(torch, dtype), local_files_only=True
    )
    model.to(pick_device(device)).eval()
    return Policy(model, tokenizer, image_processor, SpecialIds.from_tokenizer(tokenizer), folder)


def load_processors(
    path: str | Path, max_image_pixels: int | None = None, min_image_pixels: int | None = None
) -> tuple[Any, Any]:
    """The tokenizer and PIL image processor of a model folder, without its weights (what formatting
    rollouts needs; `load_policy` adds the model)."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(folder, local_files_only=True)
    if max_image_pixels is not None:
        image_processor.size["longest_edge"] = max_image_pixels
    if min_image_pixels is not None:
        image_processor.size["shortest_edge"] = min_image_pixels
    return tokenizer, image_processor


def recipe_digest() -> str:
    """A digest of the source a tiny model is built from (its sizes, and the tokenizer's training corpus:
    the suites' questions and oracle turns, the system prompts): a cached build from other code is never
    reused (the corpus changes with the oracles' wording)."""
    root = Path(__file__).resolve().parent.parent
    files = [
        root / "models" / "tiny.py",
        root / "models" / "pretrain.py",
        root / "envs" / "tools.py",
        root / "envs" / "python_helpers.py",
    ]
    files += sorted((root / "envs" / "suites").glob("*.py"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]


# The default tiny-s Base (seed 0, the scale's pretraining), built by this code and shipped so that a fresh
# machine's `make run` copies it instead of spending minutes on the build; a folder per recipe digest, so a
# change to the build's sources falls back to building (and tests/test_prebuilt.py asks for a new one).
PREBUILT = Path(__file__).resolve().parent / "prebuilt"
PREBUILT_DEFAULT = ("tiny-s", 0)


def model_folder_name(scale: str, seed: int, pretrain_steps: int | None) -> str:
    steps = "" if pretrain_steps is None else f"-recall{pretrain_steps}"
    return f"{scale}-seed{seed}{steps}-{recipe_digest()}"


def write_prebuilt() -> Path:
    """Build the default tiny-s into `PREBUILT` (replacing older digests' folders): `make prebuilt-model`."""
    scale, seed = PREBUILT_DEFAULT
    folder = PREBUILT / model_folder_name(scale, seed, None)
    for old in PREBUILT.glob(f"{scale}-seed{seed}-*"):
        shutil.rmtree(old)
    build_tiny(scale, folder, seed=seed)
    return folder


def ensure_model(
    scale: str, path: str | None, cache_dir: str | Path, seed: int = 0, pretrain_steps: int | None = None
) -> Path:
    """The model folder for a config: `path` when given, else the tiny scale built once into `cache_dir`
    (with `pretrain_steps` of recall pretraining at most; None: the scale's)."""
    if path is not None:
        return Path(path)
    if scale not in TINY_SCALES:
        raise ValueError(
            f"model.scale {scale!r} is not a tiny scale ({', '.join(TINY_SCALES)}); real scales "
            f"({', '.join(REAL_SCALES)}) need model.path pointing at a local checkpoint"
        )
    folder = Path(cache_dir) / model_folder_name(scale, seed, pretrain_steps)
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Processes sharing the cache (test workers, a sweep's variants on one machine) build it once: the
    # others wait on the lock and then find the folder.
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "config.json").is_file():
            for stale in folder.parent.glob(f"{folder.name}.partial-*"):  # a killed build's: its lock is gone
                shutil.rmtree(stale, ignore_errors=True)
            tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
            prebuilt = PREBUILT / folder.name
            if (prebuilt / "config.json").is_file():  # this very build, shipped: copied, not rebuilt
                shutil.copytree(prebuilt, tmp)
            else:
                build_tiny(scale, tmp, seed=seed, pretrain_steps=pretrain_steps)
            tmp.rename(folder)  # atomic: a half-built folder is never taken for a model
    return folder
