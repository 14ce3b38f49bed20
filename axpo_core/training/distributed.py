"""The sharded policy update (`training.world_size` > 1): the same `update_step` on W processes launched by
torchrun, each model wrapped with FSDP2 `fully_shard` (NCCL on CUDA; gloo on CPU, as the tests run it).

    python -m torch.distributed.run --standalone --nproc-per-node W -m axpo_core.training.distributed JOB

JOB is a folder that `write_job` fills: job.json (the config, the policy, reference and output folders, the
round) and the round's inputs as the update task read them from storage (rollouts, resampled, detected).
Every rank reads the whole batch and takes its rows of each mini-batch (training/update.py `Shard`), so
the loss, its token normalisation over the global batch and the optimizer steps are those of one process.

Outputs in the output folder:
* the updated policy as a full state dict, gathered to rank 0 and saved with `save_pretrained` (it loads
  with `from_pretrained` like any checkpoint);
* the optimizer state, sharded, with torch.distributed.checkpoint (`optimizer/`): each rank writes its
  shard, and a later round loads it into however many ranks it has;
* `update.json`: the round's metrics (`UpdateResult.metrics()`), from rank 0.

Each decoder layer and vision block (the model's `_no_split_modules`) is its own FSDP unit, then the root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from axpo_core.threads import child_env, configure_process
from axpo_core.training.checkpoint import OPTIMIZER_FILE, SHARDED_OPTIMIZER

JOB_FILE = "job.json"
RESULT_FILE = "update.json"
INPUTS = ("rollouts", "resampled", "detected")


def write_job(
    folder: Path,
    config: dict[str, Any],
    policy: str | Path,
    reference: str | Path | None,
    output: str | Path,
    round_index: int,
    triggered: list[str],
    rollouts: bytes,
    resampled: bytes | None,
    detected: bytes | None,
) -> Path:
    """Write a job folder for `launch`: JSON for the small things, the task's input bytes as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "config": config,
        "policy": str(policy),
        "reference": str(reference) if reference is not None else None,
        "output": str(output),
        "round_index": round_index,
        "triggered": list(triggered),
    }
    (folder / JOB_FILE).write_text(json.dumps(spec))
    for name, data in zip(INPUTS, (rollouts, resampled, detected), strict=True):
        if data is not None:
            (folder / name).write_bytes(data)
    return folder


def launch(job: Path, world_size: int) -> dict[str, float]:
    """Run the job on `world_size` local processes (torchrun); the round's metrics. A failed rank raises with
    the end of its output."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
        "-m", "axpo_core.training.distributed", str(job),
    ]
    # the ranks run at once: each starts with its share of the cores (torchrun would otherwise set 1)
    done = subprocess.run(cmd, env=child_env(world_size), capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(
            f"the sharded update ({world_size} processes) failed with code {done.returncode}:\n{tail}"
        )
    return json.loads((job / RESULT_FILE).read_text())


def shard_model(model: torch.nn.Module, mixed_precision: bool = False) -> torch.nn.Module:
    """FSDP2 in place: every `_no_split_modules` block its own unit, then the root. `mixed_precision`: bf16
    compute with fp32 gradient reduction (the parameters stay in their own dtype, sharded)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if mixed_precision:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, **kwargs)
    fully_shard(model, **kwargs)
    return model


def save_sharded(policy, optimizer: torch.optim.Optimizer, folder: Path, rank: int) -> None:
    """The full model state on rank 0 (`save_pretrained`), the optimizer state sharded (all ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    full = get_model_state_dict(policy.model, options=options)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        policy.model.save_pretrained(folder, state_dict=full)
        policy.tokenizer.save_pretrained(folder)
        policy.image_processor.save_pretrained(folder)
    state = {"optimizer": get_optimizer_state_dict(policy.model, optimizer)}
    dcp.save(state, checkpoint_id=str(folder / SHARDED_OPTIMIZER))


def load_sharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> bool:
    """Restore a sharded optimizer state saved with a checkpoint (resharded to this world size); False when
    there is none (a fresh start, as from the SFT checkpoint)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    path = folder / SHARDED_OPTIMIZER
    if not path.is_dir():
        if (folder / OPTIMIZER_FILE).is_file():
            raise ValueError(
                f"{folder}: its optimizer state was saved by a one-process update ({OPTIMIZER_FILE}); "
                "resume it with training.world_size 1"
            )
        return False
    _materialise_state(optimizer)
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=str(path))
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    return True


def _materialise_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state tensors (a step at lr 0 on zero gradients) so that a checkpoint can be
    loaded into them; the loaded values replace all of it, the step count included."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def run_rank(job: Path) -> None:
    """One rank of the job (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous)."""
    import torch.distributed as dist

    from axpo_core.config import Config
    from axpo_core.models.loader import load_policy
    from axpo_core.rollout.chat import ChatFormat
    from axpo_core.rollout.serialization import requests_from_records, trajectories_from_bytes
    from axpo_core.training.steps import update_step
    from axpo_core.training.update import Shard, make_optimizer

    # this rank shares the machine's cores with the node's other ranks
    configure_process(int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("WORLD_SIZE") or 1))
    spec = json.loads((job / JOB_FILE).read_text())
    config = Config.model_validate(spec["config"])
    cuda = torch.cuda.is_available() and config.model.device != "cpu"
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(device)
    model = config.model

    def load(folder: str, on: str = device):
        return load_policy(
            folder, device=on, dtype=model.dtype, max_image_pixels=model.max_image_pixels,
            min_image_pixels=model.min_image_pixels,
        )

    mixed = config.training.autocast_bf16
    trainee = load(spec["policy"])
    shard_model(trainee.model, mixed)
    optimizer = make_optimizer(trainee.model, config.training)
    load_sharded_optimizer(trainee.model, optimizer, Path(spec["policy"]))
    reference = None
    if config.algorithm.kl_beta > 0 and config.training.reference_device is not None:
        # whole on its own device (e.g. the CPU), beside the sharded policy
        reference = load(spec["reference"], config.training.reference_device).model.requires_grad_(False)
    elif config.algorithm.kl_beta > 0:
        reference = shard_model(load(spec["reference"]).model.requires_grad_(False), mixed)
    originals = trajectories_from_bytes((job / "rollouts").read_bytes())
    continuations = (
        trajectories_from_bytes((job / "resampled").read_bytes()) if (job / "resampled").is_file() else []
    )
    requests = (
        requests_from_records(json.loads((job / "detected").read_bytes()), originals)
        if (job / "detected").is_file()
        else []
    )
    chat = ChatFormat(trainee.tokenizer, trainee.image_processor, trainee.special)
    result = update_step(
        trainee, optimizer, config, chat, originals, continuations, requests, spec["triggered"],
        reference=reference, round_index=spec["round_index"], shard=Shard(rank, world),
    )
    output = Path(spec["output"])
    save_sharded(trainee, optimizer, output, rank)
    if rank == 0:
        metrics = {**result.metrics(), **result.stats.cost()}  # the cost: rank 0's
        (job / RESULT_FILE).write_text(json.dumps(metrics))
    dist.barrier()
    # Only after a success: a rank that raised leaves torchrun to stop the others (torchtitan does the same;
    # destroying the group while other ranks are mid-collective can deadlock).
    dist.destroy_process_group()


if __name__ == "__main__":
    run_rank(Path(sys.argv[1]))
    # Everything is written and the process group is destroyed: leave without the interpreter's teardown,
    # where freeing gloo's last work objects can abort the process ("terminate called without an active
    # exception", once in the tests; pytorch/pytorch#179291).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
