"""Trajectories and continuation requests to bytes and back, for object storage between pipeline steps.

Images are stored once each as PNG (a group's rollouts share their question's images), token arrays as
lists; the format is a pickled dict of plain types only, written and read by this project.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from PIL import Image

from axpo_core.rollout.trajectory import ContinuationRequest, Parent, Trajectory

FORMAT_VERSION = 1


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def trajectories_to_bytes(trajectories: Sequence[Trajectory]) -> bytes:
    images: dict[int, int] = {}  # id(image) -> index in the stored list
    stored: list[bytes] = []
    rows = []
    for t in trajectories:
        row = {f.name: getattr(t, f.name) for f in fields(Trajectory) if f.name not in ("images", "parent")}
        row["parent"] = asdict(t.parent) if t.parent is not None else None
        refs = []
        for image in t.images:
            if id(image) not in images:
                images[id(image)] = len(stored)
                stored.append(_png(image))
            refs.append(images[id(image)])
        row["images"] = refs
        rows.append(row)
    return pickle.dumps({"version": FORMAT_VERSION, "images": stored, "trajectories": rows})


def trajectories_from_bytes(data: bytes) -> list[Trajectory]:
    payload: dict[str, Any] = pickle.loads(data)
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"trajectory file format {payload.get('version')!r}; this version reads {FORMAT_VERSION}"
        )
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in payload["images"]]
    out = []
    for row in payload["trajectories"]:
        row = dict(row)
        row["images"] = [images[i] for i in row["images"]]
        row["parent"] = Parent(**row["parent"]) if row["parent"] is not None else None
        row["tool_call_spans"] = [tuple(span) for span in row["tool_call_spans"]]
        out.append(Trajectory(**row))
    return out


def requests_to_records(requests: Sequence[ContinuationRequest]) -> list[dict[str, Any]]:
    """Requests point at their source by (question_id, sample_id); the source travels with the rollouts."""
    return [
        {
            "question_id": r.source.question_id,
            "source_sample_id": r.source.sample_id,
            "prefix_tokens": r.prefix_tokens,
            "num_samples": r.num_samples,
            "group_id": r.group_id,
            "first_sample_id": r.first_sample_id,
            "feedback": r.feedback,
        }
        for r in requests
    ]


def requests_from_records(
    records: Sequence[dict[str, Any]], originals: Sequence[Trajectory]
) -> list[ContinuationRequest]:
    by_key = {(t.question_id, t.sample_id): t for t in originals}
    requests = []
    for record in records:
        key = (record["question_id"], record["source_sample_id"])
        if key not in by_key:
            raise ValueError(f"continuation request names rollout {key}, which is not among the rollouts")
        requests.append(
            ContinuationRequest(
                by_key[key],
                record["prefix_tokens"],
                record["num_samples"],
                record["group_id"],
                record["first_sample_id"],
                record.get("feedback"),
            )
        )
    return requests
