"""A policy checkpoint is a from_pretrained folder (model, tokenizer, image processor) plus, during RL,
the optimizer state, so a round can resume from storage in another process."""

from __future__ import annotations

from pathlib import Path

import torch

from axpo_core.models.loader import Policy

OPTIMIZER_FILE = "optimizer.pt"
SHARDED_OPTIMIZER = "optimizer"  # a torch.distributed.checkpoint folder, written by a sharded update


def save_checkpoint(
    policy: Policy, folder: str | Path, optimizer: torch.optim.Optimizer | None = None
) -> Path:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(out)
    policy.tokenizer.save_pretrained(out)
    policy.image_processor.save_pretrained(out)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), out / OPTIMIZER_FILE)
    return out


def load_optimizer_state(optimizer: torch.optim.Optimizer, folder: str | Path) -> bool:
    """Restore the optimizer state saved with a checkpoint; False when there is none (a fresh start)."""
    path = Path(folder) / OPTIMIZER_FILE
    if not path.is_file():
        if (Path(folder) / SHARDED_OPTIMIZER).is_dir():
            raise ValueError(
                f"{folder}: its optimizer state was saved by a sharded update (optimizer/); resume it with "
                "the training.world_size it was saved with (or any > 1)"
            )
        return False
    optimizer.load_state_dict(torch.load(path, weights_only=True))
    return True
