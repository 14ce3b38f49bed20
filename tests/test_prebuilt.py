"""The shipped default tiny-s Base is this code's build: its folder names the current recipe digest, its
weights and tokenizer equal a fresh build's, and `ensure_model` copies it instead of building."""

from __future__ import annotations

import filecmp

import torch
from safetensors.torch import load_file

from axpo_core.models import loader
from axpo_core.models.tiny import build_tiny

STALE = (
    "no shipped tiny-s for this recipe digest: the build's sources changed (models/tiny.py, "
    "models/pretrain.py, envs/tools.py, the suites); run `make prebuilt-model` and commit "
    "axpo_core/models/prebuilt/"
)


def shipped_folder():
    scale, seed = loader.PREBUILT_DEFAULT
    return loader.PREBUILT / loader.model_folder_name(scale, seed, None)


def test_the_shipped_model_is_of_the_current_recipe():
    folder = shipped_folder()
    assert (folder / "config.json").is_file(), STALE
    assert len(list(loader.PREBUILT.iterdir())) == 1  # older digests' folders are removed, not kept


def test_the_shipped_weights_equal_a_fresh_build(tmp_path):
    """The whole build (tokenizer training, initialisation, recall pretraining) redone: ~3 min, 1 thread."""
    scale, seed = loader.PREBUILT_DEFAULT
    fresh = build_tiny(scale, tmp_path / "fresh", seed=seed)
    shipped = shipped_folder()
    want, got = load_file(str(shipped / "model.safetensors")), load_file(str(fresh / "model.safetensors"))
    assert sorted(want) == sorted(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name
    for name in ("tokenizer.json", "config.json", "preprocessor_config.json", "pretraining.json"):
        assert filecmp.cmp(shipped / name, fresh / name, shallow=False), name


def test_ensure_model_copies_the_shipped_build(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(loader, "build_tiny", lambda *args, **kwargs: built.append(args))
    scale, seed = loader.PREBUILT_DEFAULT
    folder = loader.ensure_model(scale, None, tmp_path, seed=seed)
    assert built == []  # copied, not built
    assert filecmp.cmp(folder / "model.safetensors", shipped_folder() / "model.safetensors", shallow=False)
