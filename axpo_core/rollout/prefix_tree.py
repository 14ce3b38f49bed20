"""Shared-prefix ("tree") teacher forcing: a group's common prompt, and the prefix AXPO's or ARPO's
continuations share with their source, are forwarded once per batch instead of once per rollout.

The sequences of one packed row are merged into a token trie: a token is shared by every sequence whose
tokens (and images) up to and including it are the same. The row holds each trie node once, in creation
order, and a 4-D attention mask lets a node attend to its ancestors and itself only, which is exactly the
causal context it has in each sequence it belongs to. Each node keeps the position ids (M-RoPE included) it
has in those sequences, so every node's hidden states equal the flat forward's. A sequence's log-prob of
token i is read from the logits of the node of its token i − 1: a branch point's logits serve every child.
Gradients then flow back through the shared nodes summed over the sequences, so loss and gradients are those
of the flat forward up to float rounding (tests/test_prefix_tree.py pins this on an AXPO batch with images).

This is AReaL's "tree training" and TreePO's shared-prefix rollouts, applied to the update. The mask is
dense (rows × L × L), which is cheap at the toy scale and at a group's row (one row per question); a
real-scale trainer would hand the same ancestor relation to flex attention as a block mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from axpo_core.rollout.logprobs import PackedBatch, policy_log_softmax, reset_rope_cache

# Attention implementations that take a custom 4-D mask (sdpa: boolean; eager: additive).
_MASKED_ATTENTION = ("sdpa", "eager")


@dataclass
class TreeBatch:
    """Packed rows of merged sequences, and where each sequence's tokens live in them."""

    input_ids: torch.Tensor  # [R, L]
    attention_mask: torch.Tensor  # [R, 1, L, L]: bool (sdpa) or additive float (eager)
    position_ids: torch.Tensor  # [3, R, L]
    mm_token_type_ids: torch.Tensor  # [R, L]
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None
    seq_rows: torch.Tensor  # [n]: the packed row of each sequence
    context: torch.Tensor  # [n, T]: packed index of token i − 1 (0 where i = 0 or past the end)
    targets: torch.Tensor  # [n, T]: token i (0 where none)
    valid: torch.Tensor  # [n, T]: True where token i has a context (1 ≤ i < len)
    flat_tokens: int  # tokens the flat forward would process (Σ len), for the sharing ratio
    packed_tokens: int  # trie nodes actually forwarded

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "position_ids": self.position_ids,
            "mm_token_type_ids": self.mm_token_type_ids,
        }
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
            inputs["image_grid_thw"] = self.image_grid_thw
        return inputs


def supports_tree(model: torch.nn.Module) -> bool:
    """Whether `model` takes explicit M-RoPE positions and a custom 4-D mask (Qwen3-VL under sdpa/eager)."""
    inner = getattr(model, "model", None)
    return hasattr(inner, "get_rope_index") and _attention(model) in _MASKED_ATTENTION


def _attention(model: torch.nn.Module) -> str:
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "_attn_implementation", None) or getattr(config, "_attn_implementation", "sdpa")


def _flat_positions(model: torch.nn.Module, flat: PackedBatch) -> torch.Tensor:
    """[3, n, T] positions of the right-padded flat batch, as the flat forward computes them."""
    n, width = flat.input_ids.shape
    if flat.image_grid_thw is None:  # text only: the language model's own arange
        return torch.arange(width, device=flat.input_ids.device).view(1, 1, -1).expand(3, n, -1)
    positions, _ = model.model.get_rope_index(
        flat.input_ids,
        mm_token_type_ids=flat.mm_token_type_ids,
        image_grid_thw=flat.image_grid_thw,
        attention_mask=flat.attention_mask,
    )
    return positions


def _image_key(pixel_values: torch.Tensor, grid: torch.Tensor) -> bytes:
    """Content identity of an encoded image: two sequences share image tokens only for the same pixels."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(grid.detach().cpu().numpy().tobytes())
    digest.update(pixel_values.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()


def pack_tree(
    model: torch.nn.Module,
    flat: PackedBatch,
    images: Sequence[Sequence],  # per sequence, EncodedImage-like (.pixel_values, .grid_thw), in token order
    row_keys: Sequence[Hashable],  # sequences with the same key are merged into one row (e.g. the question)
    pad_id: int,
    image_pad_id: int,
) -> TreeBatch:
    """Merges the right-padded `flat` batch's sequences into one trie per row key (see the module doc)."""
    device = flat.input_ids.device
    positions = _flat_positions(model, flat).to(device)
    lengths = flat.attention_mask.sum(dim=1).tolist()
    ids = flat.input_ids.tolist()
    rows: dict[Hashable, int] = {}
    # Per row: children by (parent, token key) -> node index, node tokens, the (sequence, index) per node.
    children: list[dict[tuple[int, Hashable], int]] = []
    tokens: list[list[int]] = []
    node_source: list[list[tuple[int, int]]] = []  # (sequence, index) whose positions the node takes
    row_images: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    seq_rows, seq_nodes = [], []
    for s, key in enumerate(row_keys):
        if key not in rows:
            rows[key] = len(rows)
            children.append({})
            tokens.append([])
            node_source.append([])
            row_images.append([])
        r = rows[key]
        keys = [_image_key(img.pixel_values, img.grid_thw) for img in images[s]]
        image_index, in_image, parent, nodes = -1, False, -1, []
        for i in range(int(lengths[s])):
            token = ids[s][i]
            starts_image = token == image_pad_id and not in_image
            in_image = token == image_pad_id
            if starts_image:
                image_index += 1
            tag = keys[image_index] if in_image else None
            node = children[r].get((parent, (token, tag)))
            if node is None:
                node = len(tokens[r])
                children[r][(parent, (token, tag))] = node
                tokens[r].append(token)
                node_source[r].append((s, i))
                if starts_image:  # a new image run: its pixels join the row, in token order
                    img = images[s][image_index]
                    row_images[r].append((img.pixel_values, img.grid_thw))
            nodes.append(node)
            parent = node
        seq_rows.append(r)
        seq_nodes.append(nodes)

    width = max(len(t) for t in tokens)
    n_rows = len(tokens)
    input_ids = torch.full((n_rows, width), pad_id, dtype=torch.long)
    allowed = torch.zeros((n_rows, width, width), dtype=torch.bool)
    packed_positions = torch.zeros((3, n_rows, width), dtype=positions.dtype, device=device)
    for r in range(n_rows):
        count = len(tokens[r])
        input_ids[r, :count] = torch.tensor(tokens[r], dtype=torch.long)
        source_seq = torch.tensor([s for s, _ in node_source[r]], device=device)
        source_idx = torch.tensor([i for _, i in node_source[r]], device=device)
        packed_positions[:, r, :count] = positions[:, source_seq, source_idx]
        pads = torch.arange(count, width)
        allowed[r, pads, pads] = True  # padding attends to itself only (no empty softmax row)
    for s, nodes in enumerate(seq_nodes):  # along a sequence's path, each node sees the nodes before it
        path = torch.tensor(nodes)
        below = torch.tril_indices(len(nodes), len(nodes))
        allowed[seq_rows[s], path[below[0]], path[below[1]]] = True

    seq_width = flat.input_ids.shape[1]
    context = torch.zeros((len(seq_nodes), seq_width), dtype=torch.long)
    valid = torch.zeros((len(seq_nodes), seq_width), dtype=torch.bool)
    for s, nodes in enumerate(seq_nodes):
        if len(nodes) > 1:
            context[s, 1 : len(nodes)] = torch.tensor(nodes[:-1], dtype=torch.long)
            valid[s, 1 : len(nodes)] = True
    targets = torch.where(valid.to(device), flat.input_ids, torch.zeros_like(flat.input_ids))

    all_images = [img for per_row in row_images for img in per_row]
    pixel_values = torch.cat([p for p, _ in all_images]).to(device) if all_images else None
    grids = torch.stack([g for _, g in all_images]).to(device) if all_images else None
    attention = allowed.unsqueeze(1).to(device)
    if _attention(model) == "eager":  # eager attention adds its mask to the scores
        dtype = next(model.parameters()).dtype
        attention = torch.zeros(attention.shape, dtype=dtype, device=device).masked_fill(
            ~attention, torch.finfo(dtype).min
        )
    input_ids = input_ids.to(device)
    return TreeBatch(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=packed_positions,
        mm_token_type_ids=(input_ids == image_pad_id).long(),
        pixel_values=pixel_values,
        image_grid_thw=grids,
        seq_rows=torch.tensor(seq_rows, dtype=torch.long, device=device),
        context=context.to(device),
        targets=targets,
        valid=valid.to(device),
        flat_tokens=int(sum(lengths)),
        packed_tokens=int(sum(len(t) for t in tokens)),
    )


def tree_logprobs(
    model: torch.nn.Module, batch: TreeBatch, temperature: float, never_sampled: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced log-probs and entropies, [n, T] aligned with the flat right-padded batch (position 0
    and padding get 0), from one forward of the packed rows: `sequence_logprobs`'s result (the entropies are
    detached: they are a statistic, never a loss term)."""
    reset_rope_cache(model)
    logits = model(**batch.model_inputs()).logits  # [R, L, V]
    logp = policy_log_softmax(logits, temperature, never_sampled)
    with torch.no_grad():  # a statistic only: no graph for it
        probs = logp.exp()
        entropy = -(probs * logp.masked_fill(probs == 0, 0.0)).sum(-1)  # [R, L]
    rows = batch.seq_rows.unsqueeze(1).expand_as(batch.context)
    chosen = logp[rows, batch.context, batch.targets]
    zero = torch.zeros((), dtype=chosen.dtype, device=chosen.device)
    entropies = entropy[rows, batch.context]
    return torch.where(batch.valid, chosen, zero), torch.where(batch.valid, entropies, zero)


@dataclass(frozen=True)
class _RowImage:
    pixel_values: torch.Tensor
    grid_thw: torch.Tensor


def row_images(flat: PackedBatch, image_pad_id: int) -> list[list[_RowImage]]:
    """The packed batch's images per row, in token order (pixel_values hold them row by row, each image's
    t·h·w patches), for callers that have only the model inputs (SFT's collated batch)."""
    if flat.pixel_values is None:
        return [[] for _ in range(flat.input_ids.shape[0])]
    grids = iter(flat.image_grid_thw)
    offset, out = 0, []
    for row in flat.input_ids.tolist():
        images, previous = [], None
        for token in row:
            if token == image_pad_id and previous != image_pad_id:  # an image run starts
                grid = next(grids)
                patches = int(grid.prod())
                images.append(_RowImage(flat.pixel_values[offset : offset + patches], grid))
                offset += patches
            previous = token
        out.append(images)
    return out


def tree_nll(
    model: torch.nn.Module, flat: PackedBatch, labels: torch.Tensor, image_pad_id: int, ignore: int = -100
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SFT's summed next-token NLL over the labelled tokens (`labels[i]` names token i, unshifted), the
    number of greedy hits and of labelled tokens, from one forward of the batch merged into one prefix tree
    (the system prompt its rows share is forwarded once). Only the labelled tokens' contexts get logits."""
    n = flat.input_ids.shape[0]
    tree = pack_tree(model, flat, row_images(flat, image_pad_id), [0] * n, 0, image_pad_id)
    scored = (labels != ignore) & tree.valid
    rows = tree.seq_rows.unsqueeze(1).expand_as(tree.context)
    keep = torch.zeros(tree.input_ids.shape, dtype=torch.bool, device=labels.device)
    keep[rows[scored], tree.context[scored]] = True
    reset_rope_cache(model)
    logits = model(**tree.model_inputs(), use_cache=False, logits_to_keep=keep).logits  # [kept, V]
    # The kept positions come out in row-major order: a position's index among them.
    index = keep.flatten().long().cumsum(0) - 1
    at = index[rows[scored] * keep.shape[1] + tree.context[scored]]
    chosen, targets = logits[at].float(), labels[scored]
    nll = torch.nn.functional.cross_entropy(chosen, targets, reduction="sum")
    with torch.no_grad():
        hits = (chosen.argmax(-1) == targets).float().sum()
    return nll, hits, scored.sum()
