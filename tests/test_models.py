"""Tiny Qwen3-VL models: built from a config, saved, reloaded offline through the one loader."""

import json

import pytest
import torch
from PIL import Image

from axpo_core.models.loader import REAL_SCALES, ensure_model, load_policy
from axpo_core.models.tiny import SPECIAL_TOKENS, TINY_SCALES, tiny_config, train_tokenizer
from axpo_core.rollout.chat import ChatFormat
from axpo_core.rollout.logprobs import pack, reset_rope_cache


def test_saved_folder_reloads_offline_with_identical_logits(tiny_model_dir):
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= names
    # Plain from_pretrained, offline, on each component:
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    processor = Qwen2VLImageProcessorPil.from_pretrained(tiny_model_dir, local_files_only=True)
    policy = load_policy(tiny_model_dir, device="cpu")
    for token in SPECIAL_TOKENS:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token

    chat = ChatFormat(tokenizer, processor, policy.special)
    image = chat.encode_image(Image.new("RGB", (300, 200), "red"))
    ids = chat.prompt("system text", "What colour?", [image])
    batch = pack([ids], [[image]], policy.special.pad, policy.special.image_pad, "right", torch.device("cpu"))
    with torch.no_grad():
        reset_rope_cache(model)
        reset_rope_cache(policy.model)
        a = model(**batch.model_inputs()).logits
        b = policy.model(**batch.model_inputs()).logits
    assert torch.equal(a, b)


def test_scales_have_the_advertised_sizes():
    tokenizer = train_tokenizer([json.dumps({"text": "a b c " * 200}), "<think>x</think>"] * 20, 2048)
    from transformers import Qwen3VLForConditionalGeneration

    sizes = {}
    for scale in TINY_SCALES:
        config = tiny_config(scale, tokenizer)
        text = config.text_config
        assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
        assert max(config.vision_config.deepstack_visual_indexes) < config.vision_config.depth
        with torch.device("meta"):
            model = Qwen3VLForConditionalGeneration(config)
        # count with the full 2048-token vocabulary the real corpus reaches
        embed = 2 * (2048 - len(tokenizer)) * text.hidden_size
        sizes[scale] = (sum(p.numel() for p in model.parameters()) + embed) / 1e6
    assert 0.5 < sizes["tiny-s"] < 2, sizes
    assert 3 < sizes["tiny-m"] < 8, sizes
    assert 14 < sizes["tiny-l"] < 28, sizes


def test_image_processor_caps_what_the_model_sees(policy, chat):
    big = Image.new("RGB", (1024, 1024), "white")
    encoded = chat.encode_image(big)
    t, h, w = encoded.grid_thw.tolist()
    assert h * 16 * w * 16 <= 128 * 128  # patch 16: at most 128x128 pixels reach the model
    assert encoded.num_tokens == t * h * w // 4


def test_real_scales_need_a_local_path(tmp_path):
    assert set(REAL_SCALES) == {"qwen3vl-2b", "qwen3vl-4b", "qwen3vl-8b", "qwen3vl-32b"}
    with pytest.raises(ValueError, match="need model.path"):
        ensure_model("qwen3vl-2b", None, tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_policy(tmp_path)


def test_processes_sharing_the_model_cache_build_each_model_once(tmp_path, monkeypatch):
    """Two test workers (or two sweep variants) asking for the same tiny model at once: one builds, the other
    waits on the cache's lock and takes the finished folder; a killed build's leftover is removed. A
    pure-logic test: the build is faked."""
    import threading
    import time

    import axpo_core.models.loader as loader

    builds = []

    def slow_build(scale, out, seed=0, pretrain_steps=None):
        builds.append(out)
        time.sleep(0.3)  # long enough for the second caller to arrive while the first builds
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        return out

    monkeypatch.setattr(loader, "build_tiny", slow_build)
    # seed 1: the default seed 0 ships prebuilt and is copied, not built
    killed = tmp_path / f"tiny-s-seed1-{loader.recipe_digest()}.partial-99999"  # a build killed half-way
    killed.mkdir()
    folders = []
    callers = [
        threading.Thread(target=lambda: folders.append(ensure_model("tiny-s", None, tmp_path, seed=1)))
        for _ in "ab"
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(builds) == 1 and len(set(folders)) == 1 and (folders[0] / "config.json").is_file()
    assert not list(tmp_path.glob("*.partial*"))


def test_cli_builds_a_model_folder(tmp_path, capsys):
    from flows.cli import main

    build = ["models", "build", "--scale", "tiny-s", "--out", str(tmp_path / "m"), "--pretrain-steps", "3"]
    assert main(build) == 0
    out = capsys.readouterr().out
    assert "model folder:" in out and (tmp_path / "m" / "config.json").is_file()
    recorded = json.loads((tmp_path / "m" / "pretraining.json").read_text())
    assert "in-context recall pretraining" in out and recorded["short_steps"] + recorded["long_steps"] == 3


def test_recall_sequences_label_only_tokens_that_copying_predicts():
    import random

    from axpo_core.models.pretrain import IGNORE, recall_sequence

    ids, labels = recall_sequence(random.Random(0), list(range(100, 400)), 256)
    assert len(ids) == len(labels) == 256
    labelled = [p for p, label in enumerate(labels) if label != IGNORE]
    assert labelled and labelled[0] > 0
    for p in labelled:
        assert labels[p] == ids[p]
        # the bigram (previous token, this token) occurred earlier: a copy predicts it
        assert any(ids[q - 1 : q + 1] == ids[p - 1 : p + 1] for q in range(1, p))


def test_the_tiny_base_copies_from_its_context(policy):
    """The default tiny-s build (the one make run and the flow tests use) ends with in-context recall
    pretraining: on a fresh held-out batch it copies >= 80% of the copyable tokens, where the untrained
    model (the unit tests' `policy`) copies almost none."""
    from axpo_core.models.pretrain import copy_accuracy, recall_vocab
    from axpo_core.rollout.factory import MODEL_CACHE

    folder = ensure_model("tiny-s", None, MODEL_CACHE, seed=0)
    trained = load_policy(folder, device="cpu")
    vocab = recall_vocab(trained.tokenizer)
    recorded = json.loads((folder / "pretraining.json").read_text())
    assert recorded["short_steps"] > 0 and recorded["long_steps"] > 0 and recorded["copy_accuracy"] >= 0.8
    assert copy_accuracy(trained.model, vocab, seed=7) >= 0.8
    assert copy_accuracy(policy.model, vocab, seed=7) < 0.1
