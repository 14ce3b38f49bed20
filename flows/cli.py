"""The `axpo` command line. Every command accepts `--config` (YAML) and `--set a.b=value` overrides and
prints where its outputs went. Heavy imports (torch, transformers, prefect) happen inside the commands.

Over 600 lines: one argparse parser and one thin function per command; each command's work lives in the
flows and axpo_core, what is here is its arguments and its printed summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from axpo_core.config import ConfigError, load_config
from axpo_core.threads import configure_process


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

    out = build_tiny(args.scale, args.out, seed=args.seed, pretrain_steps=args.pretrain_steps)
    from axpo_core.models.loader import load_policy

    policy = load_policy(out, device="cpu")
    params = sum(p.numel() for p in policy.model.parameters())
    print(f"built {args.scale}: {params / 1e6:.2f}M parameters, vocab {len(policy.tokenizer)}")
    if (out / "pretraining.json").is_file():
        print(f"in-context recall pretraining: {(out / 'pretraining.json').read_text().strip()}")
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


def cmd_sft(args: argparse.Namespace) -> None:
    from axpo_core.rollout.factory import configured_model
    from axpo_core.training.sft import run_sft

    config = load_config(args.config, args.overrides)
    base = args.model or configured_model(config)
    result = run_sft(config, base, args.out)
    s = result.summary
    print(
        f"sft: {s['examples']} examples, tool_share = {s['tool_share']:.3f}, "
        f"final_loss = {result.train_loss:.4f}, time = {result.seconds:.1f}s ({s['steps']} steps from {base})"
    )
    print(f"checkpoint: {result.path}")


SHOWN = [
    "tool_use_rate",
    "all_wrong_rate_tool",
    "all_wrong_rate_no_tool",
    "flip_rate",
    "reward_mean",
    "zero_advantage_group_share",
    "tokens_resampled",
    "continuations",
    "arpo_branches",
    "rltf_revisions",
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


def _flow_config(args: argparse.Namespace):
    from flows.runtime import configure_prefect

    configure_prefect()  # before Prefect is imported: ephemeral server timeouts, analytics off
    return load_config(args.config, args.overrides)


PER_ROUND = [  # (column, metric): each RL arm's diagnostics per round, under the paper's definitions
    ("tool use", "tool_use_rate"),
    ("all-wrong T", "all_wrong_rate_tool"),
    ("all-wrong no-T", "all_wrong_rate_no_tool"),
    ("after resample", "all_wrong_rate_after_resample"),
    ("flip", "flip_rate"),
    ("triggered", "triggered_groups"),
    ("format err", "tool_format_error_rate"),
    ("reward", "reward_mean"),
    ("start reward", "reward_start_policy"),  # the starting policy's, on the same questions (RL data filter)
    ("KL", "update/kl"),
    ("clip", "update/clip_fraction"),
    ("orig. w", "update/original_token_weight"),
]


def _print_result(result) -> None:
    from axpo_core.evaluation.stats import linear_trend, t_interval

    print()
    print(f"Results ({result.scale}, seed {result.seed}), Pass@k in %:")
    print(result.table_markdown)
    if result.outcomes_markdown:
        print("SFT tool calls per benchmark (evaluation; outcomes and accuracy with / without a tool, %):")
        print(result.outcomes_markdown)
    if result.tools_markdown:
        print("Are tools necessary? Oracle with its tool, the no-tool oracle (chance), the SFT agent (%):")
        print(result.tools_markdown)
    for stage, rounds in result.round_metrics.items():
        print(f"[{stage}] per round:")
        print("  round  " + "  ".join(f"{c:>14s}" for c, _ in PER_ROUND))
        for i, metrics in enumerate(rounds, 1):
            print(f"  {i:5d}  " + "  ".join(f"{metrics.get(k, float('nan')):14.4g}" for _, k in PER_ROUND))
    for stage, metrics in result.final_metrics.items():
        shown = "  ".join(f"{k.removeprefix('update/')}={metrics[k]:.3g}" for k in SHOWN if k in metrics)
        print(f"[{stage}] last round: {shown}")
    # The raw reward moves with which B questions a round drew; its gain over the starting policy on the
    # same questions (paired) does not.
    trends = [("training reward", "reward_mean"), ("reward gain over the start", "reward_gain_vs_start")]
    for stage, rounds in result.round_metrics.items():
        for label, key in trends:
            values = [m[key] for m in rounds if key in m]
            if len(values) >= 3:
                trend = linear_trend(values)
                print(
                    f"[{stage}] {label} trend: {trend.mean:+.4f} per round, 95% interval "
                    f"[{trend.low:+.4f}, {trend.high:+.4f}] (least squares over {trend.n} rounds)"
                )
        # Round 1 rolls out the starting policy itself (no update yet), so its gain is zero but for noise;
        # the level of the gain over rounds 2..R is how far the updates moved the training reward.
        gains = [m["reward_gain_vs_start"] for m in rounds[1:] if "reward_gain_vs_start" in m]
        if len(gains) >= 2:
            level = t_interval(gains)
            print(
                f"[{stage}] reward gain over the start, rounds 2-{len(gains) + 1}: {level.mean:+.4f}, 95% t "
                f"interval [{level.low:+.4f}, {level.high:+.4f}]"
            )


ROUND_TIME = [  # (part, metric): where an RL round's wall time went, summed over an arm's rounds
    ("rollout", "seconds_rollout"),
    ("resample", "seconds_resample"),
    ("update: load", "seconds_update_load"),
    ("update: pack inputs", "seconds_update_pack"),
    ("update: reference forward", "seconds_update_reference"),
    ("update: policy forward+backward", "seconds_update_policy"),
    ("update: optimizer", "seconds_update_optimizer"),
    ("update: save", "seconds_update_save"),
]


def _round_seconds(rounds: list[dict[str, float]]) -> float:
    parts = ("seconds_rollout", "seconds_resample", "seconds_update")
    return sum(m.get(k, 0.0) for m in rounds for k in parts)


def _print_round_time(round_metrics: dict[str, list[dict[str, float]]]) -> None:
    """Where each arm's round time went, and AXPO's time against its extra tokens (AXPO pays for its tokens
    when its rounds take at most 1 + its extra token share of GRPO's time)."""
    if not round_metrics:
        return
    print("RL round time per arm, summed over its rounds (s):")
    print("  " + f"{'part':32s}" + "".join(f"{stage:>14s}" for stage in round_metrics))
    for label, key in ROUND_TIME:
        values = [sum(m.get(key, 0.0) for m in rounds) for rounds in round_metrics.values()]
        print("  " + f"{label:32s}" + "".join(f"{v:14.1f}" for v in values))
    grpo, axpo = round_metrics.get("SFT+GRPO"), round_metrics.get("SFT+AXPO")
    if grpo and axpo and _round_seconds(grpo) > 0:
        original = sum(m.get("tokens_original", 0.0) for m in axpo)
        extra = sum(m.get("tokens_resampled", 0.0) for m in axpo) / original if original else float("nan")
        ratio = _round_seconds(axpo) / _round_seconds(grpo)
        print(f"AXPO round time / GRPO's: {ratio:.2f}, against 1 + AXPO's extra token share {1 + extra:.2f} "
              f"(resampled / original policy tokens)")


def _print_where(ctx_tracking_uri: str, report_uri: str, mlflow_url: str = "") -> None:
    from axpo_core.tracking import ui_command

    print(f"\nreport: {report_uri}")
    print(f"MLflow store: {ctx_tracking_uri}")
    print(f"open the MLflow UI: {ui_command(ctx_tracking_uri)}")
    if mlflow_url:
        print(f"  then this run: {mlflow_url}")


def cmd_run_dry(args: argparse.Namespace) -> None:
    """`axpo run --dry-run`: the effective recipe next to the paper's values, and what this machine lacks
    for the config; no weights are loaded, nothing runs."""
    from axpo_core.config import environment_problems
    from axpo_core.recipe import format_recipe

    config = load_config(args.config, args.overrides, check_environment=False)
    source = args.config or "the default config (configs/tiny.yaml)"
    print(f"recipe of {source} (experiment {config.experiment}):")
    print(format_recipe(config))
    print("! = differs from the paper's value; '-' = not given by the paper (this project's choice)")
    problems = environment_problems(config)
    for p in problems:
        print(f"not ready on this machine: {p.fields[0]}: {p.message}")
    print("dry run: nothing loaded or run" + ("" if problems else "; the config is ready to run here"))


def cmd_run(args: argparse.Namespace) -> None:
    """The main job: the pipeline flow (build → SFT → filter → GRPO and AXPO → evaluate → report)."""
    if args.dry_run:
        cmd_run_dry(args)
        return
    config = _flow_config(args)
    from flows.pipeline import pipeline

    result = pipeline(config, args.run_name)
    _print_result(result)
    _print_round_time(result.round_metrics)
    _print_where(result.tracking_uri, result.report_uri, result.mlflow_url)


def cmd_sweep(args: argparse.Namespace) -> None:
    config = _flow_config(args)
    pipeline_config = config.pipeline.model_copy(
        update={
            "scales": args.scales.split(",") if args.scales else config.pipeline.scales,
            "seeds": [int(s) for s in args.seeds.split(",")] if args.seeds else config.pipeline.seeds,
        }
    )
    config = config.model_copy(update={"pipeline": pipeline_config})
    from flows.pipeline import sweep

    results = sweep(config, args.run_name)
    for result in results:
        _print_result(result)
    if results:
        _print_where(results[0].tracking_uri, results[0].report_uri, results[0].mlflow_url)


def cmd_eval_validate(args: argparse.Namespace) -> None:
    """`axpo eval --validate-only`: how many questions of each real benchmark load from
    evaluation.data_root, every row and image checked; no model, no Prefect. Fails (exit 2) when a
    benchmark's data is bad, or a benchmark named in evaluation.benchmarks has no folder."""
    from axpo_core.evaluation.runner import validate_benchmarks

    config = load_config(args.config, args.overrides, check_environment=False)
    checks = validate_benchmarks(config)
    width = max(len(c.benchmark) for c in checks)
    cap = config.evaluation.questions
    for c in checks:
        if c.questions is not None:
            used = f" (evaluation reads the first {cap})" if cap < c.questions else ""
            print(f"{c.benchmark:<{width}}  {c.questions:6d} questions  {c.folder}{used}")
        elif c.error is not None:
            print(f"{c.benchmark:<{width}}  BAD DATA: {c.error}")
        else:
            skipped = "" if c.required else " (skipped)"
            print(f"{c.benchmark:<{width}}  {'-':>6}  no folder {c.folder}{skipped}")
    failed = [c.benchmark for c in checks if not c.ok]
    if failed:
        raise ValueError(f"benchmark data did not validate: {', '.join(failed)}")
    if all(c.questions is None for c in checks):
        raise ValueError(f"no benchmark folder under {config.evaluation.data_root}")
    loaded = sum(c.questions or 0 for c in checks)
    print(f"ok: {loaded} questions in {sum(c.questions is not None for c in checks)} benchmarks")


def cmd_eval(args: argparse.Namespace) -> None:
    """Evaluate one checkpoint (a local folder, a store URI, or the config's base model) on the benchmarks."""
    if args.validate_only:
        cmd_eval_validate(args)
        return
    config = _flow_config(args)
    from flows.evaluation import run_evaluation
    from flows.runtime import make_context
    from tasks.context import CheckpointRef
    from tasks.evaluation import report
    from tasks.stages import build_model

    ctx = make_context(config, args.run_name or f"eval-{args.stage.lower()}")
    scale = config.model.scale
    if args.checkpoint is None:
        checkpoint = build_model(ctx, scale)
    elif "://" in args.checkpoint:
        checkpoint = CheckpointRef(uri=args.checkpoint, stage=args.stage, scale=scale)
    else:  # a local folder: copied into the run's store, so the evaluation reads it like any checkpoint
        uri = ctx.store.put_dir(args.checkpoint, ctx.layout(scale).checkpoint(args.stage.lower()))
        checkpoint = CheckpointRef(uri=uri, stage=args.stage, scale=scale)
    evaluations = run_evaluation(ctx, {args.stage: checkpoint})
    summary = report(ctx, evaluations)
    print(summary.markdown)
    for e in evaluations:
        print(f"{e.benchmark}: tool_call_rate = {e.metrics['tool_call_rate']:.3f}, records: {e.uri}")
    print(f"report: {summary.uri}")


def cmd_report(args: argparse.Namespace) -> None:
    """Rebuild a run's report (tables, diagnostics plots, rollout viewer) from its folder."""
    from axpo_core.evaluation.report import build_report

    out = build_report(args.run_dir, Path(args.out) if args.out else None)
    print(f"report: {out / 'report.md'}")
    print(f"report (html): {out / 'report.html'}")
    print(f"rollout viewer: {out / 'rollouts.html'}")


def cmd_power(args: argparse.Namespace) -> None:
    """The power analysis of a sweep folder's paired comparison (evaluation/power.py)."""
    from axpo_core.evaluation.power import folder_report

    arms = tuple(a.strip() for a in args.arms.split(","))
    if len(arms) != 2 or not all(arms):
        raise ValueError(
            f"--arms takes two stages, arm and baseline, e.g. SFT+AXPO,SFT+GRPO (got {args.arms!r})"
        )
    print(
        folder_report(
            args.sweep_dirs,
            arms=(arms[0], arms[1]),
            target_mde=args.target_mde,
            target_half_width=args.target_half_width,
            questions=args.questions,
            seed_cost=args.seed_cost,
        )
    )


def cmd_ui(args: argparse.Namespace) -> None:
    import subprocess

    from flows.runtime import make_context

    config = load_config(args.config, args.overrides)
    from axpo_core.tracking import ui_command
    from tasks.tracking import ui_link

    ctx = make_context(config)
    command = ui_command(ctx.tracking_uri, port=args.port)
    print(command)
    print(f"then open {ui_link(ctx, port=args.port)}")
    if args.start:
        subprocess.run(command.split(), check=False)


PROJECT_DIR = Path(__file__).resolve().parent.parent
WORK_POOL = "axpo-process"


def cmd_deploy(args: argparse.Namespace) -> None:
    """Register deployments/prefect.yaml (pipeline and the nightly sweep) on a process work pool.

    Reads the YAML and deploys each entry through Prefect's Python API (`flow.from_source(...).deploy`):
    `prefect deploy` 3.8.8 failed against its own server under FastAPI 0.154 (a null `limit` in its worker
    check gave 422); with the pinned 3.9.1 `prefect deployment ls` / `flow-run ls` / `work-pool ls` work,
    `prefect deploy` itself was not retried.
    """
    import os
    import shutil
    import subprocess

    import yaml

    from flows.runtime import configure_prefect

    configure_prefect()
    from prefect import flow as prefect_flow
    from prefect.schedules import Cron

    os.environ.setdefault("AXPO_PROJECT_DIR", str(PROJECT_DIR))
    prefect = shutil.which("prefect") or str(Path(sys.executable).parent / "prefect")
    subprocess.run(
        [prefect, "--no-prompt", "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
        check=True,
        cwd=PROJECT_DIR,
    )
    spec = yaml.safe_load((PROJECT_DIR / "deployments" / "prefect.yaml").read_text())
    for entry in spec["deployments"]:
        loaded = prefect_flow.from_source(source=str(PROJECT_DIR), entrypoint=entry["entrypoint"])
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone", "UTC"), active=s.get("active", True))
            for s in entry.get("schedules", [])
        ]
        deployment_id = loaded.deploy(
            name=entry["name"],
            work_pool_name=entry["work_pool"]["name"],
            parameters=entry.get("parameters", {}),
            description=entry.get("description"),
            schedules=schedules or None,
            build=False,
            push=False,
            print_next_steps=False,
        )
        print(f"deployed {loaded.name}/{entry['name']} ({deployment_id})")
    print(f"deployments registered on work pool {WORK_POOL}; start a worker with:")
    print(f"  AXPO_PROJECT_DIR={PROJECT_DIR} {prefect} worker start --pool {WORK_POOL}")


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
    build.add_argument(
        "--pretrain-steps",
        type=int,
        default=None,
        help="in-context recall pretraining steps (default: scale's)",
    )
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

    sft = sub.add_parser("sft", help="SFT on oracle trajectories with TRL; writes a from_pretrained folder")
    _add_config(sft)
    sft.add_argument(
        "--model", default=None, help="base model folder (default: build/load the config's scale)"
    )
    sft.add_argument("--out", required=True, help="output checkpoint folder")
    sft.set_defaults(func=cmd_sft)

    train = sub.add_parser(
        "train", help="R rounds of GRPO, AXPO, ARPO or RLTF in-process, printing per-round diagnostics"
    )
    _add_config(train)
    train.add_argument("--algo", choices=["grpo", "axpo", "arpo", "rltf"], required=True)
    train.add_argument("--rounds", type=int, default=None, help="default: training.rounds of the config")
    train.add_argument("--out", default=None, help="output folder (default: runs/<experiment>)")
    train.set_defaults(func=cmd_train)

    run = sub.add_parser("run", help="the main job: the pipeline flow on the config (tiny default)")
    _add_config(run)
    run.add_argument(
        "--run-name", default=None, help="default: <experiment>-<config hash>; the same name resumes"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the effective recipe next to the paper's values; load and run nothing",
    )
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser("sweep", help="the pipeline across scales (and seeds) under one MLflow parent run")
    _add_config(sweep)
    sweep.add_argument("--scales", default=None, help="comma-separated, e.g. tiny-s,tiny-m,tiny-l")
    sweep.add_argument("--seeds", default=None, help="comma-separated, e.g. 0,1")
    sweep.add_argument("--run-name", default=None)
    sweep.set_defaults(func=cmd_sweep)

    evaluate = sub.add_parser("eval", help="evaluate a checkpoint on the configured benchmarks (pass@k)")
    _add_config(evaluate)
    evaluate.add_argument("--checkpoint", default=None, help="folder or store URI (default: the base model)")
    evaluate.add_argument("--stage", default="Base", help="the row label in the results table")
    evaluate.add_argument("--run-name", default=None)
    evaluate.add_argument(
        "--validate-only",
        action="store_true",
        help="check the real benchmarks' files under evaluation.data_root and print how many questions "
        "load (no model)",
    )
    evaluate.set_defaults(func=cmd_eval)

    report = sub.add_parser(
        "report", help="rebuild a run's report: tables, diagnostics plots, rollout viewer"
    )
    report.add_argument(
        "run_dir", help="<root>/<experiment>/<run> (a path or file:// URI, or its report/ URI)"
    )
    report.add_argument("--out", default=None, help="output folder (default: <run_dir>/report)")
    report.set_defaults(func=cmd_report)

    power = sub.add_parser(
        "power",
        help="power analysis of a sweep folder: variance split, MDE, the seeds x questions for a target",
    )
    power.add_argument(
        "sweep_dirs",
        nargs="+",
        metavar="sweep_dir",
        help="a sweep folder, or a committed results folder (docs/results/...); with several, their "
        "variance components are also pooled for planning",
    )
    power.add_argument("--target-mde", type=float, default=2.0, help="target MDE in pp (default 2)")
    power.add_argument(
        "--target-half-width", type=float, default=1.0, help="target 95%% t half-width in pp (default 1)"
    )
    power.add_argument("--arms", default="SFT+AXPO,SFT+GRPO", help="arm,baseline (default SFT+AXPO,SFT+GRPO)")
    power.add_argument(
        "--questions",
        type=int,
        default=None,
        help="questions per benchmark the sweep evaluated, where the folder has no per-question records",
    )
    power.add_argument(
        "--seed-cost",
        type=float,
        default=0.0,
        help="a seed's training cost in evaluated-question units, added to seed x question costs (default 0)",
    )
    power.set_defaults(func=cmd_power)

    ui = sub.add_parser("ui", help="print (or --start) the MLflow UI command for the config's store")
    _add_config(ui)
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--start", action="store_true", help="start it (127.0.0.1) instead of only printing")
    ui.set_defaults(func=cmd_ui)

    deploy = sub.add_parser("deploy", help="register the Prefect deployments (pipeline, nightly sweep)")
    deploy.set_defaults(func=cmd_deploy)
    return parser


FLOW_COMMANDS = (cmd_run, cmd_sweep, cmd_eval)
MAX_ERROR_LINE = 2000  # one line on stderr, however long the underlying message


def _error_line(exc: BaseException) -> str:
    """`axpo: <kind>: <message>` on one line (messages may hold newlines, tracebacks of subprocesses...)."""
    from axpo_core.storage import StorageError

    if isinstance(exc, ConfigError):
        kind = "config error"
    elif isinstance(exc, StorageError):
        kind = "storage error"
    else:
        kind = f"error: {type(exc).__name__}"
    message = " ".join(str(exc).split()) or repr(exc)
    if len(message) > MAX_ERROR_LINE:
        message = message[: MAX_ERROR_LINE - 3] + "..."
    return f"axpo: {kind}: {message}"


def _debug() -> bool:
    return os.environ.get("AXPO_DEBUG", "") not in ("", "0")


def _hide_prefect_tracebacks() -> None:
    """Prefect's console log prints a traceback per failed task and flow run (three for one error);
    keep their one-line messages on the console, the tracebacks only in Prefect's own run logs."""
    from prefect.logging.handlers import PrefectConsoleHandler

    if getattr(PrefectConsoleHandler.format, "_axpo_quiet", False):
        return
    original = PrefectConsoleHandler.format

    def format_without_traceback(self: logging.Handler, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return original(self, record)
        finally:  # other handlers (Prefect's API log) still get the traceback
            record.exc_info, record.exc_text, record.stack_info = saved

    format_without_traceback._axpo_quiet = True  # type: ignore[attr-defined]
    PrefectConsoleHandler.format = format_without_traceback  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    """Run one command. Any failure ends with one line on stderr and exit code 2, without a traceback
    (`AXPO_DEBUG=1` prints it first); Ctrl-C exits 130."""
    args = build_parser().parse_args(argv)
    # Before any command imports torch: it starts with the cores this process has, not every CPU it sees.
    configure_process()
    try:
        if (
            args.func in FLOW_COMMANDS
            and not getattr(args, "validate_only", False)
            and not getattr(args, "dry_run", False)
        ):
            from flows.runtime import configure_prefect, in_process_run

            configure_prefect()  # before Prefect is imported: ephemeral server timeouts, analytics off
            if not _debug():
                _hide_prefect_tracebacks()
            with in_process_run():
                args.func(args)
        else:
            args.func(args)
    except KeyboardInterrupt:
        print("axpo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line (the traceback on request)
        if _debug():
            traceback.print_exc()
        print(_error_line(exc), file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
