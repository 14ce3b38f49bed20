"""One GRPO round of this project vs TRL's GRPOTrainer, and AXPO's extra cost per round; side by side.

1. round_vs_trl: completion tokens generated per second of wall time (rollout + update) by
   `RLTrainer.run_round` with `algorithm.name=grpo` vs by `trl.GRPOTrainer` steps, in one process, on two
   copies of one freshly built tiny-s Qwen3-VL (`Qwen3VLForConditionalGeneration`). Both sides get the
   same B text-only prompts (our prompt ids decoded to plain strings for TRL; the bench checks that they
   tokenize back to the same ids), N completions each, at most L new tokens, temperature 1, the same stop
   ids (`</tool_call>`, `<|im_end|>`, `<|endoftext|>`) and suppressed ids, the same reward function
   (`reward_text`: 1 when the completion contains "z", which no special token spells; about half of a
   random model's 64-token completions do), β = 0, AdamW at the same constant lr, grad-norm clip 1.0,
   ε_low/ε_high = 0.2/0.4, token-mean loss (TRL `loss_type="dapo"`), and one optimizer step over the whole
   B·N batch per round (TRL: `per_device_train_batch_size = B·N`, `gradient_accumulation_steps = 1`,
   `steps_per_generation = 1`, `num_iterations = 1`; ours: `rollout.batch_size = training.micro_batch_size
   = training.mini_batch_size = B·N`, `training.ppo_epochs = 1`). Ours runs single-turn with tools off
   (`tools.enabled=[]`, `rollout.max_turns=1`).
   Interleaved: our round i runs inside TRL's `on_step_end` callback right after TRL step i and is left out
   of TRL's step time (TRL's time is the rest of its training loop: prompt batching, generation, reward,
   loss, backward, optimizer step). Step/round 1 of each side is a warm-up and not counted.
   Tokens: ours = the policy tokens of the round's rollouts; TRL = the lengths of the `completion_ids` its
   reward function receives (both include a completion's stop token). Figures are medians over the
   interleaved pairs (a burst of load from other jobs on a shared machine hits one pair; both sides of a
   pair run back to back); `round_vs_trl_total` is the ratio of the totals and `round_vs_trl_cpu` the
   same median ratio in tokens per CPU second (less sensitive to other jobs). Goal: round_vs_trl >= 1.0.
   TRL drives this model as it is: no workaround was needed (a `PreTrainedTokenizerFast` as
   `processing_class` puts TRL on its text-only path). Settings that differ from TRL's defaults, to
   compare like with like: `gradient_checkpointing=False` (TRL's default is True; our update does not
   checkpoint), `bf16=False`, `optim="adamw_torch"`, `lr_scheduler_type="constant"`,
   `shuffle_dataset=False`, logging off. Our round gets the bench's text questions
   (`run_round(..., questions=)`) and its reward (`RolloutEngine(reward=...)`), TRL the same reward.

2. axpo_extra_share: AXPO's extra cost per round vs GRPO at the paper's budget (r = 0.25, K = 4), with tools
   on, on `config.training.suites` (the nine suites and the control). A randomly initialised
   model hardly ever opens a `<tool_call>`, so both start from a quickly SFT'd model: the project's
   `run_sft` (64 examples, all with a tool call, one epoch at a high lr, with the config's rollout bounds
   so that no oracle trajectory is dropped for truncation). That model opens tool calls that are mostly
   wrong, so groups trigger and the budget is used (with half the examples tool-free, AXPO found a
   resamplable prefix in only one of two rounds). For each round index, GRPO and AXPO each run one
   `RLTrainer.run_round` from the same starting weights (with a fresh optimizer and reference), taking
   turns at going first. The seeded sampler gives both the same original rollouts (checked:
   `same_original_rollouts`), so the difference is AXPO's resampling plus its extra update tokens.
   Printed: resampled policy tokens (continuation tokens after the prefix) / original rollout policy
   tokens; the mean prefix length (prompt included) each continuation prefills in its batch (a prefix is
   never decoded again); the time inside `continue_from`; and the wall-time ratio AXPO round / GRPO round
   (median over the pairs; `axpo_round_cpu_ratio` in CPU time). The rounds use
   `--axpo-max-new-tokens` per turn (default 160; the config's default is 320) to stay within the time
   budget.
   ARPO (algorithms/arpo.py) runs the same round from the same weights, at its default budget
   ⌊r·N⌋ per question (AXPO's ⌊r·B·N⌋ over the B questions): `arpo_extra_share` is its branch and fill
   tokens / original tokens, `arpo_round_time_ratio` its round / GRPO's (median), and `arpo_branches`,
   `arpo_fill_rollouts` how its budget went (ARPO spends all of it; AXPO only on triggered groups).

Usage: python bench/round_vs_trl.py [--rounds R] [--questions B] [--group N] [--max-new-tokens L]
       [--axpo-rounds R2] [--axpo-questions B2] [--axpo-group N2] [--axpo-max-new-tokens L2]
       [--sft-examples E] [--sft-epochs X] [--sft-batch S] [--sft-lr LR] [--sft-tool-share F] [--skip-axpo]
The defaults (R=6, B=8, N=8, L=64; R2=2, B2=4, N2=8, L2=160) took 70 s on this 2-core machine when it was
quiet, and 5 to 10 min while other jobs kept its CPUs busy; at those times the per-pair ratios spread from
0.2 to 4. The run ends with one `name = value` line per figure.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from axpo_core.algorithms.arpo import branch_budget  # noqa: E402
from axpo_core.config import Config, load_config  # noqa: E402
from axpo_core.envs.suites import Question  # noqa: E402
from axpo_core.models.loader import Policy, load_policy  # noqa: E402
from axpo_core.models.tiny import build_tiny  # noqa: E402
from axpo_core.rollout.factory import build_engine  # noqa: E402
from axpo_core.training.loop import RLTrainer, RoundResult  # noqa: E402

REWARD_CHAR = "z"
LEARNING_RATE = 1e-5


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (tool sandboxes): less sensitive than wall time
    to other jobs on a shared machine, so it is printed beside the wall-time figures."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def reward_text(text: str) -> float:
    """The one reward both sides call: 1 when the completion contains REWARD_CHAR (in no special token)."""
    return 1.0 if REWARD_CHAR in text else 0.0


def text_questions(count: int) -> list[Question]:
    rng = random.Random(0)
    questions = []
    for i in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        text = f"What is {a} plus {b}? Answer with a number."
        questions.append(Question(f"text-{i}", "text", text, (), str(a + b), "numeric"))
    return questions


def load(folder: Path, config: Config) -> Policy:
    return load_policy(
        folder,
        device="cpu",
        max_image_pixels=config.model.max_image_pixels,
        min_image_pixels=config.model.min_image_pixels,
    )


# ---- 1. one GRPO round vs TRL GRPOTrainer steps ---------------------------------------------------


def round_vs_trl(folder: Path, args: argparse.Namespace, work: Path) -> dict[str, float]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    b, n, length = args.questions, args.group, args.max_new_tokens
    config = load_config(
        None,
        [
            "model.device=cpu",
            "tools.enabled=[]",
            "rollout.max_turns=1",
            f"rollout.max_new_tokens_per_turn={length}",
            "rollout.max_total_tokens=4096",
            f"rollout.group_size={n}",
            f"rollout.batch_size={b * n}",
            f"training.questions_per_round={b}",
            f"training.micro_batch_size={b * n}",
            "training.ppo_epochs=1",  # one optimizer step over the whole batch, as TRL's step here
            f"training.mini_batch_size={b * n}",
            f"training.learning_rate={LEARNING_RATE}",
            "training.max_grad_norm=1.0",
            "algorithm.name=grpo",
            "algorithm.kl_beta=0",
            "algorithm.aggregation=token-mean",
        ],
    )
    questions = text_questions(b)
    ours = load(folder, config)
    engine, _ = build_engine(config, policy=ours)
    engine.reward = lambda text, _question: reward_text(text)
    trainer = RLTrainer(config, ours, engine)

    # TRL: a second copy of the same weights, the same prompts as plain strings, the same stop/suppressed ids.
    theirs = load(folder, config)
    chat = engine.chat
    prompt_ids = [chat.prompt(engine.system, q.text, []) for q in questions]
    prompts = [chat.decode(ids) for ids in prompt_ids]
    retokenized = theirs.tokenizer(prompts)["input_ids"]
    if retokenized != prompt_ids:
        raise RuntimeError("TRL would tokenize the prompt strings differently from our prompt ids")
    theirs.model.generation_config.eos_token_id = list(engine.stop_ids)
    steps = args.rounds + 1  # + a warm-up step

    trl_tokens: list[int] = []
    rewards: dict[str, list[float]] = {"ours": [], "trl": []}

    def trl_reward(completions, completion_ids, **_) -> list[float]:
        trl_tokens.append(sum(len(ids) for ids in completion_ids))
        scores = [reward_text(c) for c in completions]
        rewards["trl"].append(sum(scores) / len(scores))
        return scores

    names = ("trl_s", "trl_cpu", "trl_tokens", "ours_s", "ours_cpu", "ours_tokens")
    timings: dict[str, list[float]] = {name: [] for name in names}

    class Interleave(TrainerCallback):
        """After TRL step i, our round i; TRL's step time excludes it."""

        resume = (0.0, 0.0)

        def on_train_begin(self, *_, **__):
            self.resume = (time.perf_counter(), cpu_seconds())

        def on_step_end(self, _args, state, *_, **__):
            timings["trl_s"].append(time.perf_counter() - self.resume[0])
            timings["trl_cpu"].append(cpu_seconds() - self.resume[1])
            timings["trl_tokens"].append(trl_tokens.pop())
            start, cpu = time.perf_counter(), cpu_seconds()
            result: RoundResult = trainer.run_round(state.global_step, questions=questions)
            timings["ours_s"].append(time.perf_counter() - start)
            timings["ours_cpu"].append(cpu_seconds() - cpu)
            timings["ours_tokens"].append(sum(t.num_policy_tokens for t in result.originals))
            rewards["ours"].append(result.diagnostics["reward_mean"])
            self.resume = (time.perf_counter(), cpu_seconds())

    grpo_args = GRPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=b * n,
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_iterations=1,
        num_generations=n,
        max_completion_length=length,
        max_steps=steps,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"suppress_tokens": ours.special.never_sampled()},
        beta=0.0,
        epsilon=config.algorithm.eps_low,
        epsilon_high=config.algorithm.eps_high,
        loss_type="dapo",
        scale_rewards="group",
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        gradient_checkpointing=False,
        shuffle_dataset=False,
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        log_completions=False,
        seed=0,
    )
    trl_trainer = GRPOTrainer(
        model=theirs.model,
        reward_funcs=trl_reward,
        args=grpo_args,
        train_dataset=Dataset.from_dict({"prompt": prompts * steps}),
        processing_class=theirs.tokenizer,
        callbacks=[Interleave()],
    )
    trl_trainer.train()

    # Drop the warm-up step/round. Medians over the interleaved pairs: a burst of load from other jobs on a
    # shared machine hits one pair, and both sides of a pair run back to back.
    ours_s, trl_s = timings["ours_s"][1:], timings["trl_s"][1:]
    ours_tokens, trl_tokens_counted = timings["ours_tokens"][1:], timings["trl_tokens"][1:]
    ours_rates = [tokens / s for tokens, s in zip(ours_tokens, ours_s)]
    trl_rates = [tokens / s for tokens, s in zip(trl_tokens_counted, trl_s)]
    ratios = [ours / theirs for ours, theirs in zip(ours_rates, trl_rates)]
    cpu_ratios = [  # tokens per CPU second, ours / TRL
        (o / oc) / (t / tc)
        for o, oc, t, tc in zip(
            ours_tokens, timings["ours_cpu"][1:], trl_tokens_counted, timings["trl_cpu"][1:]
        )
    ]
    completions = args.rounds * b * n
    return {
        "ours_round_s": statistics.median(ours_s),
        "trl_step_s": statistics.median(trl_s),
        "ours_completion_len": sum(ours_tokens) / completions,
        "trl_completion_len": sum(trl_tokens_counted) / completions,
        "ours_reward_mean": statistics.mean(rewards["ours"]),
        "trl_reward_mean": statistics.mean(rewards["trl"]),
        "ours_tokens_per_s": statistics.median(ours_rates),
        "trl_tokens_per_s": statistics.median(trl_rates),
        "round_vs_trl_min": min(ratios),
        "round_vs_trl_max": max(ratios),
        "round_vs_trl_total": (sum(ours_tokens) / sum(ours_s)) / (sum(trl_tokens_counted) / sum(trl_s)),
        "round_vs_trl_cpu": statistics.median(cpu_ratios),
        "round_vs_trl": statistics.median(ratios),
    }


# ---- 2. AXPO's extra cost per round vs GRPO --------------------------------------------------------


def warm_start(base: Path, config: Config, work: Path) -> tuple[Policy, str]:
    """The project's own SFT (`config.sft`), briefly: enough for the policy to open tool calls."""
    from axpo_core.training.sft import run_sft

    result = run_sft(config, base, work / "sft")
    summary = result.summary
    what = (
        f"run_sft: {summary.get('examples')} examples ({summary.get('tool_share', 0):.0%} with a tool call), "
        f"{summary.get('steps')} steps, final loss {result.train_loss:.2f}, {result.seconds:.0f} s"
    )
    return load(result.path, config), what


def axpo_extra(base: Path, args: argparse.Namespace, work: Path) -> dict[str, object]:
    sft = [
        f"sft.examples={args.sft_examples}",
        f"sft.epochs={args.sft_epochs}",
        f"sft.batch_size={args.sft_batch}",
        f"sft.learning_rate={args.sft_lr}",
        f"sft.tool_share={args.sft_tool_share}",
    ]
    # SFT keeps the config's rollout bounds: an oracle trajectory they truncate is dropped from the SFT set.
    policy, warm = warm_start(base, load_config(None, ["model.device=cpu", *sft]), work)
    config = load_config(
        None,
        [
            "model.device=cpu",
            f"training.questions_per_round={args.axpo_questions}",
            f"rollout.group_size={args.axpo_group}",
            f"rollout.max_new_tokens_per_turn={args.axpo_max_new_tokens}",
            "algorithm.budget_ratio=0.25",
            "algorithm.continuations_per_prefix=4",
        ],
    )
    print(f"warm start: {warm}")
    engine, _ = build_engine(config, policy=policy)
    start_weights = {k: v.clone() for k, v in policy.model.state_dict().items()}

    resample_s = [0.0]  # AXPO's continuations, timed inside its round
    continue_from = engine.continue_from

    def timed_continue_from(*a, **kw):
        start = time.perf_counter()
        try:
            return continue_from(*a, **kw)
        finally:
            resample_s[0] += time.perf_counter() - start

    engine.continue_from = timed_continue_from

    algos = ("grpo", "axpo", "arpo")
    seconds: dict[str, list[float]] = {algo: [] for algo in algos}
    cpu: dict[str, list[float]] = {algo: [] for algo in algos}
    summed = [
        "tokens_original",
        "tokens_resampled",
        "triggered_groups",
        "resampled_prefixes",
        "continuations",
    ]
    totals = dict.fromkeys([*summed, "tool_use_rate", "flip_rate"], 0.0)
    arpo_totals = dict.fromkeys(
        ["tokens_original", "tokens_resampled", "continuations", "arpo_branches", "arpo_fill_rollouts"], 0.0
    )
    prefix_lengths: list[int] = []
    same_originals = True
    for round_index in range(1, args.axpo_rounds + 1):
        results: dict[str, RoundResult] = {}
        turn = round_index % len(algos)  # each algorithm takes its turn at going first
        for algo in algos[turn:] + algos[:turn]:
            policy.model.load_state_dict(start_weights)
            algorithm = config.algorithm.model_copy(update={"name": algo})
            trainer = RLTrainer(config.model_copy(update={"algorithm": algorithm}), policy, engine)
            start, cpu_start = time.perf_counter(), cpu_seconds()
            results[algo] = trainer.run_round(round_index)
            seconds[algo].append(time.perf_counter() - start)
            cpu[algo].append(cpu_seconds() - cpu_start)
        axpo, grpo, arpo = results["axpo"], results["grpo"], results["arpo"]
        same_originals &= [t.token_ids for t in axpo.originals] == [t.token_ids for t in grpo.originals]
        same_originals &= [t.token_ids for t in arpo.originals] == [t.token_ids for t in grpo.originals]
        for key in totals:
            totals[key] += axpo.diagnostics[key]
        for key in arpo_totals:
            arpo_totals[key] += arpo.diagnostics[key]
        # Every continuation prefills its prefix (prompt included) once, in the batch that continues it.
        prefix_lengths += [c.parent.prefix_tokens for c in axpo.continuations if c.parent is not None]

    rounds = args.axpo_rounds
    budget = int(config.algorithm.budget_ratio * args.axpo_questions * args.axpo_group + 1e-9)
    time_ratios = [a / g for a, g in zip(seconds["axpo"], seconds["grpo"])]
    return {
        "axpo_questions_x_group": f"{args.axpo_questions} x {args.axpo_group}",
        "axpo_max_new_tokens_per_turn": args.axpo_max_new_tokens,
        "axpo_budget_continuations": budget,
        "same_original_rollouts": same_originals,
        "tool_use_rate": totals["tool_use_rate"] / rounds,
        "triggered_groups": int(totals["triggered_groups"]),
        "resampled_prefixes": int(totals["resampled_prefixes"]),
        "continuations": int(totals["continuations"]),
        "flip_rate": totals["flip_rate"] / rounds,
        "tokens_original": int(totals["tokens_original"]),
        "tokens_resampled": int(totals["tokens_resampled"]),
        "prefill_tokens_per_continuation": statistics.mean(prefix_lengths) if prefix_lengths else 0.0,
        "grpo_round_s": statistics.mean(seconds["grpo"]),
        "axpo_round_s": statistics.mean(seconds["axpo"]),
        "axpo_resample_s": resample_s[0] / rounds,
        "axpo_round_time_ratio_min": min(time_ratios),
        "axpo_round_time_ratio_max": max(time_ratios),
        "axpo_round_cpu_ratio": statistics.median(a / g for a, g in zip(cpu["axpo"], cpu["grpo"])),
        "axpo_extra_share": totals["tokens_resampled"] / max(totals["tokens_original"], 1.0),
        "axpo_round_time_ratio": statistics.median(time_ratios),
        "arpo_budget_rollouts": branch_budget(config.algorithm, args.axpo_group) * args.axpo_questions,
        "arpo_continuations": int(arpo_totals["continuations"]),
        "arpo_branches": int(arpo_totals["arpo_branches"]),
        "arpo_fill_rollouts": int(arpo_totals["arpo_fill_rollouts"]),
        "arpo_round_s": statistics.mean(seconds["arpo"]),
        "arpo_round_time_ratio": statistics.median(a / g for a, g in zip(seconds["arpo"], seconds["grpo"])),
        "arpo_extra_share": arpo_totals["tokens_resampled"] / max(arpo_totals["tokens_original"], 1.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", default="tiny-s")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds/steps per side, after a warm-up")
    parser.add_argument("--questions", type=int, default=8, help="B prompts per round")
    parser.add_argument("--group", type=int, default=8, help="N completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="L, max completion length")
    parser.add_argument("--axpo-rounds", type=int, default=2, help="GRPO/AXPO/ARPO round triples")
    parser.add_argument("--axpo-questions", type=int, default=4, help="B for part 2")
    parser.add_argument("--axpo-group", type=int, default=8, help="N for part 2")
    parser.add_argument("--axpo-max-new-tokens", type=int, default=160, help="per turn (config default 320)")
    parser.add_argument("--sft-examples", type=int, default=64)
    parser.add_argument("--sft-epochs", type=float, default=1.0)
    parser.add_argument("--sft-batch", type=int, default=4)
    parser.add_argument("--sft-lr", type=float, default=5e-3)
    parser.add_argument("--sft-tool-share", type=float, default=1.0)
    parser.add_argument("--skip-axpo", action="store_true", help="part 1 only")
    args = parser.parse_args()

    started = time.perf_counter()
    figures: dict[str, object] = {
        "model": args.scale,
        "questions_x_group": f"{args.questions} x {args.group}",
        "max_new_tokens": args.max_new_tokens,
    }
    with tempfile.TemporaryDirectory(prefix="axpo-bench-") as tmp:
        work = Path(tmp)
        base = build_tiny(args.scale, work / args.scale, seed=0, pretrain_steps=0)
        figures |= round_vs_trl(base, args, work)
        if not args.skip_axpo:
            figures |= axpo_extra(base, args, work)
    figures["bench_seconds"] = time.perf_counter() - started
    for name, value in figures.items():
        print(f"{name} = {value:.3f}" if isinstance(value, float) else f"{name} = {value}")


if __name__ == "__main__":
    main()
