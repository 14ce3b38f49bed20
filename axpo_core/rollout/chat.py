"""Token-level rendering of the rollout format (DESIGN §3), shared by the rollout engine and SFT.

Pieces are encoded separately and concatenated as ids, never through a chat template, so the engine, the
SFT data and the update see the same tokens for the same conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

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

    def text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def encode_image(self, image: Image.Image) -> EncodedImage:
        out = self.image_processor(images=[image.convert("RGB")], return_tensors="pt")
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
        ids += self.text(question) + [s.im_end] + self.text("\n")
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
        ids += self.text(f"{text}\n") + [s.tool_response_end] + [s.im_end] + self.text("\n")
        return ids + self.assistant_header()

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)
