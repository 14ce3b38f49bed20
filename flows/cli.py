"""The `axpo` command line. Every command accepts `--config` (YAML) and `--set a.b=value` overrides and
prints where its outputs went. Heavy imports (torch, transformers, prefect) happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from axpo_core.config import ConfigError, load_config


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (default: configs/tiny.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set rollout.group_size=4 (repeatable)",
    )


def cmd_models_build(args: argparse.Namespace) -> None:
    from axpo_core.models.tiny import build_tiny

    out = build_tiny(args.scale, args.out, seed=args.seed)
    from axpo_core.models.loader import load_policy

    policy = load_policy(out, device="cpu")
    params = sum(p.numel() for p in policy.model.parameters())
    print(f"built {args.scale}: {params / 1e6:.2f}M parameters, vocab {len(policy.tokenizer)}")
    print(f"model folder: {out}")


def cmd_rollout(args: argparse.Namespace) -> None:
    from axpo_core.envs.suites import get_suite
    from axpo_core.rollout.factory import build_engine

    config = load_config(args.config, args.overrides)
    engine, policy = build_engine(config, model_path=args.model)
    questions = get_suite(args.suite).generate(args.questions, seed=args.seed)
    trajectories = engine.rollout(questions, group_size=args.group)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for trajectory in trajectories:
            f.write(json.dumps(trajectory.record()) + "\n")
    n = len(trajectories)
    tool_rate = sum(t.used_tool for t in trajectories) / n
    reward = sum(t.reward for t in trajectories) / n
    errors = sum(t.num_tool_errors for t in trajectories)
    calls = sum(t.num_tool_calls for t in trajectories)
    print(f"{n} rollouts ({args.questions} questions x {args.group}) on {args.suite} with {policy.path}")
    print(f"tool_call_rate = {tool_rate:.3f}")
    print(f"mean_reward = {reward:.3f}")
    print(f"tool_error_rate = {errors / calls if calls else 0.0:.3f}")
    print(f"rollouts written to {out}")


SHOWN = [
    "tool_use_rate",
    "all_wrong_rate_tool",
    "all_wrong_rate_no_tool",
    "flip_rate",
    "reward_mean",
    "zero_advantage_group_share",
    "tokens_resampled",
    "update/loss",
    "update/kl",
    "update/clip_fraction",
    "update/grad_norm",
]


def _train(config, algo: str, rounds: int, out_root: Path) -> list:
    """R rounds of one algorithm, in-process, from the configured starting model."""
    from axpo_core.rollout.factory import build_engine
    from axpo_core.training.loop import RLTrainer, write_rollouts

    config = config.model_copy(update={"algorithm": config.algorithm.model_copy(update={"name": algo})})
    engine, policy = build_engine(config)
    trainer = RLTrainer(config, policy, engine)

    def report(result) -> None:
        metrics = result.metrics()
        path = write_rollouts(
            out_root / algo / "rollouts" / f"round-{result.round_index}.jsonl",
            result.originals + result.continuations,
        )
        shown = "  ".join(f"{k.removeprefix('update/')}={metrics[k]:.3g}" for k in SHOWN if k in metrics)
        print(f"[{algo}] round {result.round_index}: {shown}", flush=True)
        print(f"[{algo}]   rollouts: {path}", flush=True)

    return trainer.train(rounds, on_round=report)


def cmd_train(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.overrides)
    rounds = args.rounds or config.training.rounds
    out_root = Path(args.out or f"runs/{config.experiment}")
    _train(config, args.algo, rounds, out_root)
    print(f"outputs under {out_root}/{args.algo}")


def cmd_run(args: argparse.Namespace) -> None:
    """GRPO and AXPO from the same starting model, side by side (the in-process main job)."""
    config = load_config(args.config, args.overrides)
    out_root = Path(args.out or f"runs/{config.experiment}")
    results = {algo: _train(config, algo, config.training.rounds, out_root) for algo in ("grpo", "axpo")}
    print()
    header = ["metric"] + [f"{algo} r{r.round_index}" for algo, rs in results.items() for r in rs]
    print(" | ".join(header))
    for key in SHOWN:
        row = [f"{r.metrics().get(key, float('nan')):.3g}" for rs in results.values() for r in rs]
        print(" | ".join([key.removeprefix("update/")] + row))
    print(f"\noutputs under {out_root}/{{grpo,axpo}}/rollouts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="axpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="build tiny Qwen3-VL-family models").add_subparsers(
        dest="models_command", required=True
    )
    build = models.add_parser("build", help="build a tiny scale and save it with save_pretrained")
    build.add_argument("--scale", default="tiny-s", choices=["tiny-s", "tiny-m", "tiny-l"])
    build.add_argument("--out", required=True)
    build.add_argument("--seed", type=int, default=0)
    build.set_defaults(func=cmd_models_build)

    rollout = sub.add_parser("rollout", help="multi-turn rollouts on a suite, written as JSON lines")
    _add_config(rollout)
    rollout.add_argument(
        "--model", default=None, help="model folder (default: build/load the config's scale)"
    )
    rollout.add_argument("--suite", required=True)
    rollout.add_argument("--questions", type=int, default=8)
    rollout.add_argument("--group", type=int, default=4)
    rollout.add_argument("--seed", type=int, default=0)
    rollout.add_argument("--out", required=True)
    rollout.set_defaults(func=cmd_rollout)

    train = sub.add_parser(
        "train", help="R rounds of GRPO or AXPO in-process, printing per-round diagnostics"
    )
    _add_config(train)
    train.add_argument("--algo", choices=["grpo", "axpo"], required=True)
    train.add_argument("--rounds", type=int, default=None, help="default: training.rounds of the config")
    train.add_argument("--out", default=None, help="output folder (default: runs/<experiment>)")
    train.set_defaults(func=cmd_train)

    run = sub.add_parser("run", help="the main job: GRPO and AXPO from one starting model, side by side")
    _add_config(run)
    run.add_argument("--out", default=None, help="output folder (default: runs/<experiment>)")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as exc:
        print(f"axpo: config error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
