"""Token-level rendering of the rollout format (docs/design.md §3), shared by the rollout engine and SFT.

Pieces are encoded separately and concatenated as ids, never through a chat template, so the engine, the
SFT data and the update see the same tokens for the same conversation.

Only this module puts structure and image tokens into a sequence. Text that the model, a tool or a data set
controls (a question, a tool's output, an echoed argument) goes through `ChatFormat.literal`, which never
yields an added token: a query of `<|image_pad|>` or python printing `</tool_response>` stays plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from axpo_core.envs.tools import valid_text
from axpo_core.models.loader import SpecialIds


@dataclass
class EncodedImage:
    """An image as the model sees it: processor output and the number of `<|image_pad|>` tokens."""

    pixel_values: torch.Tensor  # [patches, patch_dim]
    grid_thw: torch.Tensor  # [3]
    num_tokens: int
    source: Image.Image | None = None  # the image itself (the vLLM backend sends images, not pixels)


class ChatFormat:
    """Encodes prompts, tool responses and images for one tokenizer + image processor."""

    def __init__(self, tokenizer: Any, image_processor: Any, special: SpecialIds):
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.special = special
        merge = int(getattr(image_processor, "merge_size", 2))
        self._merge_area = merge * merge
        self._system_ids: dict[str, list[int]] = {}  # the system prompt is long and the same every time
        added = _added_tokens(tokenizer)
        self._added_ids = set(added.values())
        # Longest first, so `<tool_response>` is cut whole even where a shorter added token is its prefix.
        alternatives = "|".join(re.escape(t) for t in sorted(added, key=len, reverse=True))
        self._added_pattern = re.compile(alternatives) if added else None

    def text(self, text: str) -> list[int]:
        """Text the engine wrote (headers, the system prompt, a scripted policy turn): added tokens kept."""
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def literal(self, text: str) -> list[int]:
        """Text nobody here controls, as plain tokens: never an added token, whatever it spells.

        Every occurrence of an added token's text is encoded in two pieces (its first character, then the
        rest), so the tokenizer cannot match it; this holds for special and non-special added tokens alike
        (Qwen's `<tool_call>` is not "special"), which `split_special_tokens` does not. Lone surrogates,
        which the tokenizer rejects, become U+FFFD first.
        """
        text = valid_text(text)
        if not text:
            return []
        pieces = [text] if self._added_pattern is None else list(_split_at(self._added_pattern, text))
        ids = [i for piece in pieces if piece for i in self.text(piece)]
        if self._added_ids.intersection(ids):  # a normalizer made one after all: fall back to characters
            ids = [i for char in text for i in self.tokenizer.encode(char, add_special_tokens=False)]
            ids = [i for i in ids if i not in self._added_ids]
        return ids

    def encode_image(self, image: Image.Image) -> EncodedImage:
        try:
            out = self.image_processor(images=[image.convert("RGB")], return_tensors="pt")
        except Exception as exc:  # noqa: BLE001 - any processor failure: say which image it was
            width, height = image.size
            raise ValueError(
                f"cannot encode an image of {width}x{height} pixels (mode {image.mode}): {exc}"
            ) from exc
        grid = out["image_grid_thw"][0]
        return EncodedImage(out["pixel_values"], grid, int(grid.prod()) // self._merge_area, image)

    def image_tokens(self, encoded: EncodedImage) -> list[int]:
        s = self.special
        return [s.vision_start] + [s.image_pad] * encoded.num_tokens + [s.vision_end]

    def prompt(self, system: str, question: str, images: Sequence[EncodedImage]) -> list[int]:
        """`<|im_start|>system…<|im_end|>`, the user turn with its images, then the assistant header."""
        s = self.special
        if system not in self._system_ids:
            header = [s.im_start] + self.text(f"system\n{system}")
            self._system_ids[system] = header + [s.im_end] + self.text("\n")
        ids = list(self._system_ids[system])
        ids += [s.im_start] + self.text("user\n")
        for encoded in images:
            ids += self.image_tokens(encoded)
        ids += self.literal(question) + [s.im_end] + self.text("\n")
        return ids + self.assistant_header()

    def assistant_header(self) -> list[int]:
        return [self.special.im_start] + self.text("assistant\n")

    def tool_response(self, text: str, images: Sequence[EncodedImage], close_turn: bool) -> list[int]:
        """Closes the assistant turn (when the policy stopped at `</tool_call>`), then the tool's user turn.

        The result ends with the next assistant header, so the policy continues straight into its turn.
        """
        s = self.special
        ids = [s.im_end] + self.text("\n") if close_turn else self.text("\n")
        ids += [s.im_start] + self.text("user\n") + [s.tool_response] + self.text("\n")
        for encoded in images:
            ids += self.image_tokens(encoded)
        ids += self.literal(f"{text}\n") + [s.tool_response_end] + [s.im_end] + self.text("\n")
        return ids + self.assistant_header()

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)


def _added_tokens(tokenizer: Any) -> dict[str, int]:
    """Text -> id of every added token of the tokenizer (specials, tool tags, vision markers...)."""
    found: dict[str, int] = {}
    for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items():
        content = getattr(token, "content", str(token))
        if content:
            found[content] = int(token_id)
    for content in getattr(tokenizer, "all_special_tokens", []):
        if content and content not in found:
            found[content] = int(tokenizer.convert_tokens_to_ids(content))
    return found


def _split_at(pattern: re.Pattern, text: str):
    """`text` in pieces such that no piece contains a match of `pattern` (matches split after 1 char)."""
    pos = 0
    for match in pattern.finditer(text):
        yield text[pos : match.start()]
        yield match.group()[0]
        rest = match.group()[1:]  # the rest can hold another added token's text (`<<|im_end|>`...)
        yield from _split_at(pattern, rest) if pattern.search(rest) else (rest,)
        pos = match.end()
    yield text[pos:]
