"""The vLLM backend: its pure helpers here; parity with the transformers backend on a GPU machine only."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from axpo_core.config import load_config
from axpo_core.rollout.vllm_backend import (
    VLLMUnavailable,
    collapse_image_pads,
    require_vllm,
    resized_like_ours,
    topk_entropy,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None
HAS_GPU_VLLM = HAS_VLLM and torch.cuda.is_available()


def test_image_pads_collapse_to_one_per_image():
    pad = 5
    assert collapse_image_pads([1, 3, pad, pad, pad, 4, 7, 3, pad, pad, 4], pad) == [
        1,
        3,
        pad,
        4,
        7,
        3,
        pad,
        4,
    ]
    assert collapse_image_pads([1, 2], pad) == [1, 2]


def test_topk_entropy_is_the_renormalised_entropy():
    assert topk_entropy([math.log(0.5), math.log(0.5)]) == pytest.approx(math.log(2))
    assert topk_entropy([0.0]) == 0.0
    assert topk_entropy([]) == 0.0


def test_images_are_sent_as_our_processor_resized_them(chat):
    """vLLM's processor interpolates differently: it gets the image at its final size, where our processor
    resizes nothing and gives the same pixels as from the original."""
    from PIL import Image

    pixels = torch.randint(
        0, 256, (257, 321, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    image = Image.fromarray(pixels.numpy()).convert("RGBA")
    encoded = chat.encode_image(image)
    sent = resized_like_ours(encoded, chat.image_processor)
    _, grid_h, grid_w = encoded.grid_thw.tolist()
    patch = chat.image_processor.patch_size
    assert sent.mode == "RGB" and sent.size == (grid_w * patch, grid_h * patch) != image.size
    again = chat.encode_image(sent)
    assert torch.equal(again.grid_thw, encoded.grid_thw)
    assert torch.equal(again.pixel_values, encoded.pixel_values)


@pytest.mark.skipif(HAS_VLLM, reason="this environment has vLLM (its tests: tests/vllm_lane)")
def test_missing_vllm_is_one_clear_error(policy):
    from axpo_core.rollout.factory import make_generator

    with pytest.raises(VLLMUnavailable, match="rollout.backend"):
        require_vllm()
    with pytest.raises(VLLMUnavailable, match="rollout.backend=transformers"):
        make_generator(load_config(None, ["rollout.backend=vllm"], check_environment=False), policy)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU_VLLM, reason="needs the vllm extra and a CUDA GPU (run on a GPU machine)")
def test_vllm_logprobs_match_transformers_within_bf16(tmp_path):
    """Same sequences, both backends: vLLM's sampled-token log-probs vs a teacher-forced transformers pass."""
    from axpo_core.envs.suites import get_suite
    from axpo_core.models.loader import load_policy
    from axpo_core.models.tiny import build_tiny
    from axpo_core.rollout.factory import build_engine
    from axpo_core.rollout.logprobs import pack, sequence_logprobs

    folder = build_tiny("tiny-m", tmp_path / "m", pretrain_steps=0)
    config = load_config(
        None, ["rollout.backend=vllm", "model.dtype=bfloat16", "rollout.max_new_tokens_per_turn=32"]
    )
    policy = load_policy(
        folder, device="cuda", dtype="bfloat16", max_image_pixels=config.model.max_image_pixels
    )
    engine, _ = build_engine(config, policy=policy)
    trajectories = engine.rollout(get_suite("control_shapes").generate(4, 0), group_size=2)
    for t in trajectories:
        images = [engine.chat.encode_image(img) for img in t.images]
        batch = pack(
            [t.token_ids], [images], policy.special.pad, policy.special.image_pad, "right", policy.device
        )
        with torch.no_grad():
            tf, _ = sequence_logprobs(policy.model, batch, 1.0, policy.special.never_sampled())
        mask = torch.tensor(t.loss_mask, dtype=torch.bool, device=tf.device)
        diff = (tf[0][mask].float().cpu() - torch.tensor(t.logprobs)[mask.cpu()]).abs()
        assert diff.mean() < 0.05 and diff.max() < 0.5  # bf16 tolerance


class FakeLLM:
    """Records the calls a `VLLMEngine` makes on vLLM's `LLM` (the weight bookkeeping is pure logic)."""

    def __init__(self):
        self.calls: list[str] = []
        self.loaded_weights = None
        self.llm_engine = type(
            "Engine",
            (),
            {"model_executor": object(), "reset_encoder_cache": lambda _: self.calls.append("encoder")},
        )()

    def collective_rpc(self, method, kwargs):
        assert method == "reload_weights"
        self.calls.append("load")
        self.loaded_weights = list(kwargs["weights_iterator"])

    def reset_prefix_cache(self):
        self.calls.append("reset")
        return True

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append("generate")
        return ["out"] * len(prompts)

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self):
        self.calls.append("wake")


@pytest.fixture
def two_checkpoints(tiny_model_dir, config):
    from axpo_core.models.loader import load_policy

    return [load_policy(tiny_model_dir, device="cpu") for _ in range(2)]


def test_engine_loads_a_policys_weights_only_when_they_change(two_checkpoints):
    from axpo_core.rollout.vllm_backend import VLLMEngine, VLLMGenerator

    first, second = two_checkpoints
    llm = FakeLLM()
    engine = VLLMEngine(first, llm=llm)
    a, b = VLLMGenerator(first, engine=engine), VLLMGenerator(second, engine=engine)
    engine.run(a.policy, ["p"], [None])
    engine.run(a.policy, ["p"], [None])  # vLLM holds them already
    assert llm.calls == ["load", "reset", "encoder", "generate", "generate"]
    assert [name for name, _ in llm.loaded_weights] == [n for n, _ in first.model.named_parameters()]
    engine.run(b.policy, ["p"], [None])  # another checkpoint: its weights first
    a.sync_weights()  # a is not loaded: nothing to redo
    engine.run(b.policy, ["p"], [None])
    b.sync_weights()  # b was updated in place: loaded again before it next generates
    engine.run(b.policy, ["p"], [None])
    assert llm.calls[5:] == [
        "load",
        "reset",
        "encoder",
        "generate",
        "generate",
        "load",
        "reset",
        "encoder",
        "generate",
    ]
    assert engine.weight_loads == 3


def test_sleep_mode_loads_weights_only_after_waking_up(two_checkpoints):
    from axpo_core.rollout.vllm_backend import VLLMEngine

    llm = FakeLLM()
    engine = VLLMEngine(two_checkpoints[0], sleep_mode=True, llm=llm)
    engine.run(two_checkpoints[0], ["p"], [None])
    engine.run(two_checkpoints[0], ["p"], [None])
    assert llm.calls == [
        "sleep1",
        "wake",
        "load",
        "reset",
        "encoder",
        "generate",
        "sleep1",
        "wake",
        "generate",
        "sleep1",
    ]


def test_one_shared_engine_per_architecture_and_settings_must_agree(two_checkpoints, monkeypatch):
    import axpo_core.rollout.vllm_backend as backend

    built = []

    def fake_build(policy, **settings):
        built.append(settings)
        return FakeLLM()

    monkeypatch.setattr(backend.VLLMEngine, "_build", staticmethod(fake_build))
    monkeypatch.setattr(backend, "_engines", {})
    first, second = two_checkpoints
    engine = backend.shared_engine(first, seed=0)
    assert backend.shared_engine(second) is engine and len(built) == 1
    with pytest.raises(ValueError, match="enable_prefix_caching"):
        backend.shared_engine(second, enable_prefix_caching=False)
    backend.VLLMGenerator(second, engine=engine).close()  # forgets it: the next call builds a new one
    assert backend.shared_engine(first) is not engine and len(built) == 2


def test_request_seeds_depend_on_the_request_not_the_batch(two_checkpoints):
    from axpo_core.rollout.generator import GenerationRequest
    from axpo_core.rollout.vllm_backend import VLLMEngine, VLLMGenerator

    engine = VLLMEngine(two_checkpoints[0], llm=FakeLLM())
    seeded, unseeded = (
        VLLMGenerator(two_checkpoints[0], engine, seed=3),
        VLLMGenerator(two_checkpoints[0], engine),
    )
    r1, r2 = GenerationRequest([1, 2], [], 4, ("q", 0)), GenerationRequest([1, 2], [], 4, ("q", 1))
    assert seeded.request_seed(r1) == seeded.request_seed(GenerationRequest([1, 2], [], 8, ("q", 0)))
    assert seeded.request_seed(r1) != seeded.request_seed(r2)
    assert unseeded.request_seed(r1) is None
