"""SFT through TRL's `SFTTrainer` on engine-format trajectories (docs/design.md §2: base → SFT → RL).

The trajectories are already tokens (prompt, assistant turns, tool responses with their images), so TRL's
own tokenisation is skipped (`dataset_kwargs={"skip_prepare_dataset": True}`) and a collator builds the
batch the RL update builds: `pack(..., side="right")` for ids, attention mask, `mm_token_type_ids`, pixel
values and grids, plus `labels` = the token id where `loss_mask == 1`, -100 elsewhere (prompt, tool
responses, padding). Labels sit at the position of the token they name (the HF convention: the model shifts
them), so `labels[i] != -100` exactly where the RL update trains token i (`grpo_advantages(...).mask[i]`).

TRL 1.16 notes (read from its source): `train_dataset` must be a `datasets.Dataset` (a torch Dataset is
refused), so the dataset holds `input_ids`, `loss_mask` and a `row` index while the collator keeps each
row's encoded images (a column named `image(s)` would switch TRL to its processor-based VLM path); with a
custom collator and skipped preparation TRL leaves the batch alone, and its loss is the fused LM head's
token-mean NLL over the labels. It defaults to gradient checkpointing and bf16, which are turned off for
tiny models on CPU. One subclass, for speed only: off Triton devices TRL's fused LM head scores every
position (not only the labelled ones), which on CPU was ~40 % of a tiny-s step; there `compute_loss` asks the
model for the logits of the labelled positions only (`logits_to_keep`) and takes the same token-mean NLL.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainerCallback

from axpo_core.config import Config
from axpo_core.models.loader import Policy, load_policy, pick_device
from axpo_core.rollout.chat import ChatFormat, EncodedImage
from axpo_core.rollout.logprobs import PackedBatch, pack, reset_rope_cache
from axpo_core.rollout.prefix_tree import supports_tree, tree_nll
from axpo_core.rollout.trajectory import Trajectory
from axpo_core.training import checkpoint
from axpo_core.training.sft_data import SFTData, build_sft_data

IGNORE = -100
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # LM only


@dataclass
class SFTResult:
    path: Path  # a from_pretrained folder: model, tokenizer, image processor
    summary: dict[str, Any]
    train_loss: float  # the last logged training loss
    seconds: float


def sft_labels(token_ids: list[int], loss_mask: list[int]) -> list[int]:
    """The token id where the policy produced it, -100 elsewhere; unshifted (position i names token i)."""
    return [token if m else IGNORE for token, m in zip(token_ids, loss_mask, strict=True)]


@dataclass
class TrajectoryCollator:
    """Right-padded model inputs + labels for rows of a `trajectory_dataset`. The images live here, encoded
    once (an Arrow column of pixel tensors would be copied and converted on every access)."""

    images: list[list[EncodedImage]]  # per dataset row
    pad_id: int
    image_pad_id: int

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pack(
            [row["input_ids"] for row in rows],
            [self.images[row["row"]] for row in rows],
            self.pad_id,
            self.image_pad_id,
            side="right",
            device=torch.device("cpu"),
        )
        labels = torch.full_like(batch.input_ids, IGNORE)
        for i, row in enumerate(rows):
            labels[i, : len(row["input_ids"])] = torch.tensor(sft_labels(row["input_ids"], row["loss_mask"]))
        return {**batch.model_inputs(), "labels": labels}

    @classmethod
    def for_trajectories(cls, trajectories: list[Trajectory], chat: ChatFormat) -> TrajectoryCollator:
        images = [[chat.encode_image(img) for img in t.images] for t in trajectories]
        return cls(images, chat.special.pad, chat.special.image_pad)


def _trainer_class(shared_prefix: bool = False, image_pad_id: int | None = None):
    """SFTTrainer, with the loss computed on labelled positions only where TRL would score them all; with
    `shared_prefix`, from one prefix-tree forward of the batch (rollout/prefix_tree.py: the rows' common
    system prompt once), the same token-mean NLL up to float rounding."""
    import torch.nn.functional as F
    from trl import SFTTrainer

    class LabelledPositionsSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            on_cpu = next(model.parameters()).device.type == "cpu"
            if return_outputs or self.args.loss_type != "nll" or not on_cpu:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if shared_prefix and image_pad_id is not None and supports_tree(model):
                flat = PackedBatch(
                    inputs["input_ids"], inputs["attention_mask"], inputs["mm_token_type_ids"],
                    inputs.get("pixel_values"), inputs.get("image_grid_thw"), [0] * len(inputs["input_ids"]),
                )
                nll, hits, scored = tree_nll(model, flat, inputs["labels"], image_pad_id, IGNORE)
            else:
                labels = inputs["labels"][:, 1:]
                mask = labels != IGNORE
                keep = torch.zeros_like(inputs["labels"], dtype=torch.bool)
                keep[:, :-1] = mask  # the logits at position i predict label i + 1
                rest = {k: v for k, v in inputs.items() if k != "labels"}
                logits = model(**rest, use_cache=False, logits_to_keep=keep).logits
                logits = logits.reshape(-1, logits.shape[-1])
                nll = F.cross_entropy(logits.float(), labels[mask], reduction="sum")
                with torch.no_grad():
                    hits = (logits.argmax(-1) == labels[mask]).float().sum()
                scored = mask.sum()
            mode = "train" if model.training else "eval"
            self._metrics[mode]["mean_token_accuracy"].append((hits / scored.clamp(min=1)).item())
            count = scored if num_items_in_batch is None else num_items_in_batch
            return nll / torch.as_tensor(count).clamp(min=1)

    return LabelledPositionsSFTTrainer


def trajectory_dataset(trajectories: list[Trajectory]):
    """A `datasets.Dataset` with `input_ids`, `loss_mask` and `row` (the index of the collator's images)."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [t.token_ids for t in trajectories],
            "loss_mask": [t.loss_mask for t in trajectories],
            "row": list(range(len(trajectories))),
        }
    )


@dataclass
class TrainOutcome:
    final_loss: float
    mean_loss: float
    steps: int
    log_history: list[dict[str, float]] = field(repr=False)


class _StepBar(TrainerCallback):
    """A step bar with the latest loss (Trainer's own bar also prints every logged dict)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc="SFT steps")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.3f}")

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def train_sft(
    policy: Policy, data: SFTData, config: Config, work_dir: Path, show_progress: bool = False
) -> TrainOutcome:
    """Fine-tune `policy.model` in place on `data` with TRL's SFTTrainer; returns the training losses.

    With `config.sft.lora` the adapter is merged back, so `policy.model` stays a plain model.
    """
    from trl import SFTConfig as TRLSFTConfig

    sft = config.sft
    chat = ChatFormat(policy.tokenizer, policy.image_processor, policy.special)
    device = pick_device(config.model.device)
    on_gpu = device.type == "cuda"
    steps_per_epoch = -(-len(data.trajectories) // sft.batch_size)
    args = TRLSFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=sft.epochs,
        learning_rate=sft.learning_rate,
        per_device_train_batch_size=sft.batch_size,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,  # a float < 1 is a share of the steps
        weight_decay=0.0,
        max_grad_norm=config.training.max_grad_norm,
        logging_steps=max(1, round(sft.epochs * steps_per_epoch / 20)),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,  # its bar also prints every log dict; `show_progress` gives a plain step bar
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not on_gpu,
        bf16=on_gpu and config.model.dtype != "float32" and torch.cuda.is_bf16_supported(),
        # Real checkpoints need the memory; a tiny model only gets slower.
        activation_checkpointing=config.model.path is not None,
        max_length=None,  # never truncate: image pads must keep their features
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,  # the collator reads loss_mask and row
        dataloader_pin_memory=on_gpu,
        optim="adamw_torch",
    )
    peft_config = None
    if sft.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS)
    reset_rope_cache(policy.model)
    policy.model.train()
    trainer = _trainer_class(sft.shared_prefix, policy.special.image_pad)(
        model=policy.model,
        args=args,
        data_collator=TrajectoryCollator.for_trajectories(data.trajectories, chat),
        train_dataset=trajectory_dataset(data.trajectories),
        processing_class=policy.tokenizer,
        peft_config=peft_config,
    )
    if show_progress:  # the bar shows the loss; no printed log dict per logging step
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(_StepBar())
    result = trainer.train()
    model = trainer.model
    if sft.lora:
        model = model.merge_and_unload()
    policy.model = model.eval()
    reset_rope_cache(policy.model)  # generation after training must not see a training batch's deltas
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return TrainOutcome(
        final_loss=float(losses[-1]) if losses else float(result.training_loss),
        mean_loss=float(result.training_loss),
        steps=int(result.global_step),
        log_history=list(trainer.state.log_history),
    )


def save_checkpoint(policy: Policy, out_dir: str | Path) -> Path:
    """Model, tokenizer and image processor to `out_dir`, via `out_dir.partial` and a rename: a reader never
    sees a half-written folder as a checkpoint."""
    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    checkpoint.save_checkpoint(policy, partial)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return out


def run_sft(
    config: Config,
    base_model_dir: str | Path,
    out_dir: str | Path,
    data: SFTData | None = None,
    show_progress: bool = False,
) -> SFTResult:
    """Build the SFT set (unless given), fine-tune the base model on it, save the checkpoint to `out_dir`."""
    start = time.perf_counter()
    policy = load_policy(
        base_model_dir,
        device=config.model.device,
        dtype=config.model.dtype,
        max_image_pixels=config.model.max_image_pixels,
        min_image_pixels=config.model.min_image_pixels,
    )
    if data is None:
        data = build_sft_data(config, ChatFormat(policy.tokenizer, policy.image_processor, policy.special))
    data_seconds = time.perf_counter() - start
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="axpo-sft-") as work_dir:
        outcome = train_sft(policy, data, config, Path(work_dir), show_progress)
    path = save_checkpoint(policy, out_dir)
    seconds = time.perf_counter() - start
    summary = {
        **data.summary,
        "base_model": str(base_model_dir),
        "epochs": config.sft.epochs,
        "steps": outcome.steps,
        "learning_rate": config.sft.learning_rate,
        "batch_size": config.sft.batch_size,
        "lora": config.sft.lora,
        "final_loss": outcome.final_loss,
        "mean_loss": outcome.mean_loss,
        "data_seconds": data_seconds,
        "seconds": seconds,
    }
    return SFTResult(path, summary, outcome.final_loss, seconds)
