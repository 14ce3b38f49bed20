"""GRPO vs AXPO in MLflow's own UI: a real `mlflow ui` on a real sqlite store, read in headless Chromium.

The store is what a two-seed sweep logs, written through the project's tracking tasks (`tasks.tracking`, the
Tracker underneath) with synthetic round metrics instead of a training run: a parent run holding the report
and results, one child run per (seed, arm). The test opens the experiment as README's "Compare GRPO and
AXPO in MLflow" says and checks what is visible: the child runs of both arms with their `algo`, a chart of
`diag/tool_use_rate` over rounds with one line per arm, and the report in the parent's artifacts.

Screenshots go to the test's temporary folder (printed); set AXPO_DOCS_SCREENSHOTS=docs to refresh the
README's. Slow (`mlflow ui` takes ~30 s to start on 2 cores); `make test` and CI run it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import headless_chromium

pytestmark = pytest.mark.slow

SEEDS = (0, 1)
ROUNDS = 4
ARMS = (("SFT+GRPO", "grpo"), ("SFT+AXPO", "axpo"))


def tool_use_rate(algo: str, seed: int, round_index: int) -> float:
    """GRPO's tool use decays, AXPO's grows (the paper's Fig. 1 in miniature); seeds differ a little."""
    slope = 0.08 if algo == "axpo" else -0.05
    return round(0.3 + slope * round_index + 0.02 * seed, 4)


def round_metrics(algo: str, seed: int, round_index: int) -> dict[str, float]:
    rate = tool_use_rate(algo, seed, round_index)
    return {
        "tool_use_rate": rate,
        "all_wrong_rate_tool": round(0.6 - 0.1 * round_index * (algo == "axpo"), 4),
        "flip_rate": 0.12 if algo == "axpo" else 0.0,
        "reward_mean": round(0.2 + 0.05 * round_index, 4),
        "tokens_original": 800.0 + round_index,
        "update/loss": -0.01 * round_index,
        "update/kl": 0.001 * round_index,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A sweep logged through tasks.tracking: parent + (seed × arm) children, report and tables."""
    from axpo_core.config import load_config
    from axpo_core.evaluation.report import build_report
    from axpo_core.runs import Arm
    from axpo_core.storage import local_path
    from axpo_core.tracking import default_tracking_uri
    from tasks.context import CheckpointRef, RoundRecord, RunContext
    from tasks.evaluation import EvalRef
    from tasks.tracking import (
        close_tracking_run,
        log_arm_artifacts,
        log_eval_summary,
        log_report,
        log_round_metrics,
        log_sweep_summary,
        open_tracking_run,
        parent_run_fields,
        stage_run_fields,
        tracker,
    )

    root = tmp_path_factory.mktemp("mlflow-ui")

    def context(run_name: str, seed: int = 0) -> RunContext:
        config = load_config(
            None,
            [
                f"storage.root=file://{root}/store",
                "tracking.experiment=axpo-ui-test",
                f"training.rounds={ROUNDS}",
                f"seed={seed}",
                "pipeline.seeds=[0,1]",
                "evaluation.benchmarks=[zoom_detail,python_count]",
                "evaluation.k=[1,2]",
            ],
        )
        return RunContext(
            config=config, run_name=run_name, output_dir=str(root), tracking_uri=default_tracking_uri(root)
        )

    sweep = context("repro-sweep")
    tags, note = parent_run_fields(sweep, "sweep")
    parent = open_tracking_run.fn(sweep, "repro-sweep", tags=tags, log_config=True, description=note)
    variants = []
    children: dict[str, str] = {}
    for seed in SEEDS:
        ctx = context(f"repro-sweep/tiny-s-seed{seed}", seed)
        stage_runs: dict[str, str] = {}
        evaluations = []
        for stage, algo in ARMS:
            arm = Arm(stage=stage, algo=algo)
            run_tags, params, run_note = stage_run_fields(ctx, stage, algo, arm.config(ctx.config), arm)
            name = f"tiny-s/seed{seed}/{stage}"
            run_id = open_tracking_run.fn(
                ctx, name, parent, tags=run_tags, params=params, description=run_note
            )
            stage_runs[stage] = children[name] = run_id
            layout = ctx.layout("tiny-s", arm.slug)
            records = []
            for n in range(1, ROUNDS + 1):
                metrics = round_metrics(algo, seed, n)
                log_round_metrics(ctx, run_id, metrics, n)
                ctx.store.put_json(layout.base + f"/metrics/round-{n}.json", metrics)
                ctx.store.put_jsonl(
                    layout.rollouts(n),
                    [
                        {"question_id": f"zoom_detail-1000-{q}", "sample_id": q, "reward": q % 2}
                        for q in range(4)
                    ],
                )
                ckpt = CheckpointRef(uri=layout.checkpoint(n), stage=stage, scale="tiny-s", round=n)
                records.append(RoundRecord(stage=stage, round=n, checkpoint=ckpt, metrics=metrics))
            log_arm_artifacts.fn(ctx, run_id, arm, "tiny-s", records)
            for bench in ctx.config.evaluation.benchmarks:
                p1 = 0.5 + 0.125 * (algo == "axpo") - 0.125 * seed
                evaluations.append(
                    EvalRef(
                        scale="tiny-s",
                        stage=stage,
                        benchmark=bench,
                        uri=layout.eval(bench),
                        metrics={"pass@1": p1, "pass@2": min(1.0, p1 + 0.25)},
                    )
                )
                tracker(ctx).log_metrics(run_id, {f"eval/{bench}/pass@1": p1, f"eval/{bench}/pass@2": p1})
        report_dir = build_report(local_path(ctx.layout().base))
        log_eval_summary.fn(ctx, parent, stage_runs, evaluations, False, f"results/tiny-s-seed{seed}")
        log_report.fn(ctx, parent, report_dir.as_uri(), f"report/tiny-s-seed{seed}")
        for run_id in stage_runs.values():
            close_tracking_run.fn(ctx, run_id)
        variants.append((seed, evaluations))
    log_sweep_summary.fn(sweep, parent, variants)
    close_tracking_run.fn(sweep, parent)
    t = tracker(sweep)
    return {"tracker": t, "parent": parent, "children": children, "root": root}


@pytest.fixture(scope="module")
def mlflow_ui(sweep_store: dict):
    """`mlflow ui` (one worker) on the sweep's sqlite store, 127.0.0.1 and a free port; stopped after."""
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", sweep_store["tracker"].tracking_uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = open(sweep_store["root"] / "mlflow-ui.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # up to 120 s; ~30 s here
            if server.poll() is not None:
                raise RuntimeError(f"mlflow ui exited with {server.returncode}: {log.name}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"mlflow ui did not answer on {base} within 120 s: {log.name}")
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # uvicorn's worker runs in the same (new) session
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    for driver in headless_chromium("1500,950"):
        driver.implicitly_wait(0)
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlflow-ui-screenshots")
    print(f"MLflow UI screenshots: {folder}")
    return folder


def save_shot(driver, shots: Path, name: str, for_docs: bool = False) -> Path:
    """A screenshot into the test's folder; the README's one (`for_docs`) also to $AXPO_DOCS_SCREENSHOTS."""
    path = shots / f"{name}.png"
    driver.save_screenshot(str(path))
    docs = os.environ.get("AXPO_DOCS_SCREENSHOTS")
    if docs and for_docs:
        Path(docs).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(docs) / f"{name}.png")
    return path


def wait_for(driver, xpath: str, timeout: float = 60):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(ec.visibility_of_element_located((By.XPATH, xpath)))


def close_assistant(driver) -> None:
    """MLflow 3.17 opens its 'MLflow Assistant' side panel on first visit; closed for the screenshots."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(
        By.XPATH,
        "//*[contains(., 'MLflow Assistant')]/ancestor::*[.//button[@aria-label='Close']][1]"
        "//button[@aria-label='Close']",
    ):
        if button.is_displayed():
            button.click()
            return


def grid_rows(driver) -> list[str]:
    """The runs table's visible rows: their run-name cell text, top to bottom."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(
        By.CSS_SELECTOR, ".ag-center-cols-container [role=row], .ag-pinned-left-cols-container [role=row]"
    )
    named = []
    for row in sorted(rows, key=lambda r: int(r.get_attribute("row-index") or 0)):
        cells = row.find_elements(By.CSS_SELECTOR, "[col-id='attributes.`Run Name`']")
        if cells and cells[0].text.strip():
            named.append(cells[0].text.strip())
    return named


def runs_by_group(rows: list[str]) -> dict[str, list[str]]:
    """`{"Group: axpo 2": [its run names], ...}` from the grouped runs table (colour swatches dropped)."""
    groups: dict[str, list[str]] = {}
    current = None
    for text in rows:
        words = " ".join(line for line in text.splitlines() if not line.startswith("#"))
        if words.startswith(("Group: ", "Additional runs")):
            current = words
            groups[current] = []
        elif current is not None:
            groups[current].append(words)
    return groups


def test_compare_grpo_and_axpo_in_the_mlflow_ui(sweep_store: dict, mlflow_ui: str, browser, shots: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    t = sweep_store["tracker"]
    driver = browser
    driver.get(t.ui_url(mlflow_ui))

    # The training view (not GenAI): the runs table with the sweep's parent run and its description.
    parent_row = wait_for(driver, "//*[@role='row'][.//*[text()='repro-sweep']]")
    assert "Model training" in driver.find_element(By.TAG_NAME, "body").text
    assert wait_for(driver, "//*[contains(text(), 'GRPO vs AXPO on the')]")
    close_assistant(driver)

    # 1. Expand the parent, group by `algo`: both arms' child runs listed under their algo.
    parent_row.find_element(By.CSS_SELECTOR, "button").click()
    wait_for(driver, "//*[text()='tiny-s/seed1/SFT+AXPO']")
    next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Group by").click()
    wait_for(driver, "//*[@role='menu']//*[text()='algo']").click()
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait_for(driver, "//*[contains(text(), 'Group: axpo')]")
    groups = runs_by_group(grid_rows(driver))
    assert groups == {
        "Group: axpo 2": ["tiny-s/seed1/SFT+AXPO", "tiny-s/seed0/SFT+AXPO"],
        "Group: grpo 2": ["tiny-s/seed1/SFT+GRPO", "tiny-s/seed0/SFT+GRPO"],
        "Additional runs 1": [],  # the parent (no `algo` tag), collapsed
    }, groups
    save_shot(driver, shots, "mlflow-runs-grouped-by-algo")

    # 2. The chart view: diag/tool_use_rate over rounds, one line per arm (the seeds' mean, a band around it).
    driver.execute_script("arguments[0].click()", driver.find_element(By.CSS_SELECTOR, "input[value=CHART]"))
    search = wait_for(driver, "//input[@placeholder='Search metric charts']")
    search.send_keys("tool_use_rate")
    card = wait_for(
        driver, "//*[text()='diag/tool_use_rate']/ancestor::*[.//*[contains(@class, 'js-plotly-plot')]][1]"
    )
    for algo in ("axpo", "grpo"):  # the legend: one entry per arm
        assert card.find_elements(By.XPATH, f".//*[text()='{algo} (diag/tool_use_rate)']"), algo
    # (The legend also lists "Unassigned", the parent run's group: it has no such metric, so no line.)
    traces = driver.execute_script(
        "return Array.from(arguments[0].querySelectorAll('.js-plotly-plot')).flatMap("
        "p => (p.data || []).map(d => ({mode: d.mode || null, fill: d.fill || null, x: d.x, y: d.y})))",
        card,
    )
    lines = [t for t in traces if t["mode"] == "lines+markers"]
    assert [t["x"] for t in lines] == [list(range(1, ROUNDS + 1))] * 2, (
        traces
    )  # one line per arm, over rounds
    means = {  # each arm's line is its seeds' mean; a band (min to max over seeds) around it
        algo: [sum(tool_use_rate(algo, s, n) for s in SEEDS) / len(SEEDS) for n in range(1, ROUNDS + 1)]
        for algo in ("axpo", "grpo")
    }
    assert sorted([round(v, 6) for v in t["y"]] for t in lines) == sorted(
        [round(v, 6) for v in ys] for ys in means.values()
    )
    bands = [t for t in traces if t["fill"] and any(x is not None for x in t["x"])]
    assert len(bands) == 2, traces
    save_shot(driver, shots, "mlflow-compare-tool-use", for_docs=True)

    # 3. The parent run's artifacts: the report folder of each variant, with report.html in it.
    driver.get(t.ui_url(mlflow_ui, sweep_store["parent"]).replace("?", "/artifacts?"))
    wait_for(driver, "//*[text()='report']").click()
    wait_for(driver, "//*[text()='tiny-s-seed0']").click()
    wait_for(driver, "//*[text()='report.html']")
    for name in ("report.md", "rollouts.html", "plots"):
        assert driver.find_elements(By.XPATH, f"//*[text()='{name}']"), name
    assert driver.find_elements(By.XPATH, "//*[text()='results']")
    driver.find_element(By.XPATH, "//*[text()='report.html']").click()  # MLflow previews it in a frame
    driver.switch_to.frame(wait_for(driver, "//iframe"))
    try:
        assert wait_for(driver, "//h1[starts-with(., 'Report: ')]")
    finally:
        driver.switch_to.default_content()
    save_shot(driver, shots, "mlflow-parent-artifacts")
